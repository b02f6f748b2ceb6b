"""The AudioSocket TCP listener: Asterisk's `AudioSocket(uuid, host:port)` connects here.

The protocol carries no credentials, so the listener binds to `audiosocket_host` (loopback by
default) and calls from it are owned by no agent: supervisors see them, or an agent when the
bridge assigns it. Fatal errors are answered with an error frame (0xff, 1-byte code) and a
closed connection; a call silent for `idle_timeout_s` or longer than `max_call_seconds` gets a
hang-up frame (0x00). A hang-up or disconnect, either way, still transcribes the audio received.
The call itself is driven by session.py, as for the WebSocket carriers; this module moves bytes.
"""

from __future__ import annotations

import asyncio
import logging

from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.serializers import ProtocolError, audiosocket
from voice.server.serializers.audiosocket import ERROR_CODES, Reader  # noqa: F401 (re-exported)
from voice.server.session import StreamSession

log = logging.getLogger(__name__)

PROTOCOL = audiosocket.PROTOCOL
READ_BYTES = 65_536
WRITE_TIMEOUT_S = 2.0  # an error or hang-up frame that takes longer is abandoned
LINGER_S = 1.0  # after our last frame, how long the peer's remaining bytes are read and dropped


async def start_audiosocket(hub: CallHub, config: ServerConfig) -> asyncio.Server:
    """Listen on (audiosocket_host, audiosocket_port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(hub, config, reader, writer)

    server = await asyncio.start_server(handle, config.audiosocket_host, config.audiosocket_port)
    log.info("AudioSocket listening on %s:%s", config.audiosocket_host, config.audiosocket_port)
    return server


class TcpTransport:
    """An AudioSocket connection as a session's `Transport`: bytes in, whole frames out."""

    close_codes = False  # TCP: the connection is closed once the call has finished
    disconnects = (ConnectionError, asyncio.IncompleteReadError)
    failure = "AudioSocket connection failed"

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 max_frame_bytes: int):  # fmt: skip
        self.reader = reader
        self.writer = writer
        self.frames = Reader(max_frame_bytes)

    async def receive(self) -> list[bytes | ProtocolError] | None:
        data = await self.reader.read(READ_BYTES)
        return self.frames.frames(data) if data else None

    async def send(self, wire: bytes) -> bool:
        try:
            self.writer.write(wire)
            await asyncio.wait_for(self.writer.drain(), WRITE_TIMEOUT_S)
            return True
        except Exception:  # the peer may be gone already
            return False

    async def close(self, code: int, reason: str = "") -> None:
        """No close code on TCP; `_serve_connection` closes once the call has finished."""


async def _serve_connection(hub: CallHub, config: ServerConfig, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:  # fmt: skip
    try:
        transport = TcpTransport(reader, writer, config.max_frame_bytes)
        await StreamSession(hub, audiosocket, transport).run()
    finally:
        await _close_gracefully(reader, writer)


async def _close_gracefully(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Half-close, then read what the peer still sends for a moment before closing: closing a
    socket with unread bytes makes the kernel send a reset, which can overtake the hang-up or
    error frame just written, so the bridge would never read why the call ended."""
    try:
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(LINGER_S):
            while await reader.read(READ_BYTES):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
