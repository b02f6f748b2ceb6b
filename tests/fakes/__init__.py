"""Loopback HTTP test doubles for the outside services (Zendesk, webhook receivers) and their shared server."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, like the real services; no access log on stderr."""

    protocol_version = "HTTP/1.1"
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.untrack(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    @property
    def owner(self) -> Any:
        return self.server.owner

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def answer(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body and self.command != "HEAD":
            self.wfile.write(body)

    def drop(self) -> None:
        """Close the connection without a response: the client sees a network error."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # start() rebinds the same port while old sockets sit in TIME_WAIT

    def __init__(self, address: tuple[str, int], handler: type[QuietHandler], owner: Any):
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler)

    def track(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.add(conn)

    def untrack(self, conn: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(conn)

    def sever_all(self) -> None:
        # Keep-alive connections outlive the listening socket; cut them so a stopped fake
        # really looks down to a client with a connection pool.
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LoopbackServer:
    """A threaded HTTP server on 127.0.0.1 (a free port, kept across stop()/start())."""

    handler: type[QuietHandler] = QuietHandler

    def __init__(self) -> None:
        self._port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._server is not None

    def start(self) -> None:
        """Listen (again) on the same port, so the code under test keeps its URL."""
        if self._server is not None:
            return
        server = _Server(("127.0.0.1", self._port), self.handler, self)
        self._port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{type(self).__name__}:{self._port}", daemon=True)  # fmt: skip
        self._thread.start()

    def stop(self) -> None:
        """Close the listening socket and open connections: clients get connection refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.sever_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Imported after LoopbackServer exists: the submodules subclass it.
from .receiver import Received, WebhookReceiver  # noqa: E402
from .zendesk import FakeZendesk, RecordedRequest, zendesk_signature  # noqa: E402

__all__ = [
    "FakeZendesk",
    "LoopbackServer",
    "Received",
    "RecordedRequest",
    "WebhookReceiver",
    "zendesk_signature",
]
