"""The Starlette app: ingest WebSockets, event subscriptions, call records, upload, health, metrics.

Endpoints (token on all but /healthz; see auth.py for roles):
- WS  /twilio                 Twilio Media Streams (token: header, `?token=` or customParameters)
- WS  /stream                 raw stream: JSON start, binary audio; events come back as JSON
- WS|GET(SSE) /calls/{id}/events   one call's events: stored ones first, then live
- WS|GET(SSE) /events         every live call's events (supervisor view)
- GET /calls, GET /calls/{id} call records; the latter with its events in order
- POST /v1/transcribe         an audio file in the body -> its events as JSON (413 over
                              `max_upload_seconds` by its header; 503 while `max_uploads` run)
- GET /healthz, GET /metrics, GET /config

Ingest streams end at the limits in limits.py (no start: 1002, no audio: 4408, too long: 4413).
A client that has not authenticated by header or query is read no further than its start
message: anything else, or anything malformed, closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import tempfile
from collections.abc import AsyncIterator
from types import ModuleType

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voice.server.audit import audit
from voice.server.auth import Authenticator, Principal, token_from
from voice.server.calls import DROPPED, END, CallHub, CallRefused, LiveCall, Subscription
from voice.server.config import ServerConfig
from voice.server.limits import StreamLimits
from voice.server.logs import RequestContext
from voice.server.metrics import ServerMetrics
from voice.server.serializers import (
    CLOSE_BAD_DATA,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_SERVER_ERROR,
    CLOSE_TOO_BIG,
    CLOSE_TRY_LATER,
    Audio,
    Dtmf,
    Ignored,
    ProtocolError,
    Start,
    Stop,
    rawstream,
    twilio,
)
from voice.server.store import Store
from voice.vad import VadOptions

log = logging.getLogger("voice")

SEND_TIMEOUT_S = 5.0  # a close or final send that takes longer is abandoned
END_WAIT_S = 30.0  # after hang-up, how long the ingest socket waits for the last events
UPLOAD_RETRY_AFTER_S = 10  # Retry-After of an upload refused because others are running
MAX_CLOSE_REASON = 123  # bytes of UTF-8 a WebSocket close reason may hold (RFC 6455 5.5)


def create_app(
    config: ServerConfig,
    transcriber,
    vad_options: VadOptions = VadOptions(),
    answer_engine=None,
) -> Starlette:
    """Build the app; the scheduler, store and AudioSocket listener start with it."""
    config = config.validate()
    metrics = ServerMetrics()
    auth = Authenticator(config.tokens, config.insecure_no_auth)
    state: dict = {}
    uploads = asyncio.Semaphore(config.max_uploads)  # POST /v1/transcribe in progress

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        store = Store(config.db_path)
        hub = CallHub(config, store, metrics, vad_options, answer_engine, transcriber)
        hub.scheduler.start()
        state["hub"] = hub
        server = None
        if config.audiosocket_port is not None:
            from voice.server.audiosocket_server import start_audiosocket

            server = await start_audiosocket(hub, config)
        watcher = None
        if answer_engine is not None and config.kb_watch_seconds > 0:
            from voice.server.kbwatch import watch_kb

            watcher = asyncio.create_task(watch_kb(answer_engine, config.kb_watch_seconds))
        log.info("server ready", extra={"status": "ready"})
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            if server is not None:
                server.close()
            await hub.shutdown()
            store.close()

    def hub() -> CallHub:
        return state["hub"]

    # --- helpers ------------------------------------------------------------------------------

    def principal_for(conn) -> tuple[Principal | None, bool]:
        """(principal, token_presented) for a request or WebSocket."""
        token = token_from(conn.headers, conn.query_params)
        return auth.check(token), bool(token)

    def refuse(presented: bool, reason: str = "") -> JSONResponse:
        if not presented or reason == "bad_token":
            metrics.auth_failures.inc(reason="bad_token" if presented else "no_token")
            return JSONResponse({"error": "missing or invalid token"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        metrics.auth_failures.inc(reason="forbidden")
        return JSONResponse({"error": "your role may not do this"}, 403)

    def require(request: Request, permission: str) -> Principal | JSONResponse:
        principal, presented = principal_for(request)
        if principal is None:
            if not presented:  # an unknown token is audited by auth.check
                audit("authenticate", "failure", reason="no_token")
            return refuse(presented, "bad_token" if presented else "")
        if not principal.can(permission):
            audit("authorize", "failure", principal, reason=f"needs {permission}")
            return refuse(True)
        return principal

    # --- plain HTTP ---------------------------------------------------------------------------

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metrics_endpoint(request: Request) -> Response:
        who = require(request, "metrics")
        if isinstance(who, Response):
            return who
        return PlainTextResponse(metrics.render(), media_type="text/plain; version=0.0.4")

    async def config_endpoint(request: Request) -> Response:
        who = require(request, "config")
        if isinstance(who, Response):
            return who
        return JSONResponse(config.public())

    async def list_calls(request: Request) -> Response:
        who = require(request, "own_calls")
        if isinstance(who, Response):
            return who
        calls = [c for c in hub().store.calls(500) if who.may_read(c["agent"], c["owner"])]
        audit("calls.list", "success", who)
        return JSONResponse({"calls": calls})

    async def get_call(request: Request) -> Response:
        who = require(request, "own_calls")
        if isinstance(who, Response):
            return who
        call_id = request.path_params["call_id"]
        record = hub().store.call(call_id)
        if record is None or not who.may_read(record["agent"], record["owner"]):
            audit("call.read", "failure", who, call_id=call_id, reason="not_found")
            return JSONResponse({"error": f"no call {call_id}"}, 404)  # same for not yours
        audit("call.read", "success", who, call_id=call_id)
        return JSONResponse(record)

    async def transcribe_upload(request: Request) -> Response:
        who = require(request, "transcribe")
        if isinstance(who, Response):
            return who
        if request.headers.get("content-type", "").startswith("multipart/"):
            return JSONResponse({"error": "send the audio file itself as the request body, "
                                 "not a form: curl --data-binary @call.wav ..."}, 415)  # fmt: skip
        if uploads.locked():  # refused, not queued: a queued upload would hold its body meanwhile
            return JSONResponse({"error": f"{config.max_uploads} uploads are being transcribed; "
                                 "try again later"}, 503,
                                headers={"Retry-After": str(UPLOAD_RETRY_AFTER_S)})  # fmt: skip
        async with uploads:
            return await run_upload(request)

    async def run_upload(request: Request) -> Response:
        from voice.server import offline

        with tempfile.NamedTemporaryFile(suffix=".audio") as file:  # 0600, deleted on close
            size = 0
            try:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_upload_bytes:
                        return JSONResponse({"error": "file too large"}, 413)
                    file.write(chunk)
            except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
                return Response(status_code=400)
            if not size:
                return JSONResponse({"error": "send the audio file as the request body"}, 400)
            file.flush()
            call_id = request.query_params.get("call_id", "upload")
            try:
                await asyncio.to_thread(offline.check_length, file.name, config.max_upload_seconds)
                events = await offline.transcribe_upload(hub(), file.name, call_id[:128])
            except offline.TooLong as exc:
                return JSONResponse({"error": str(exc)}, 413)
            except ValueError as exc:  # AudioError
                return JSONResponse({"error": str(exc)}, 400)
        return JSONResponse({"call_id": call_id, "events": events})

    # --- event subscriptions ------------------------------------------------------------------

    async def stream_events(sub: Subscription, replay: list[dict]) -> AsyncIterator[dict]:
        last = 0
        for data in replay:
            last = data["seq"]
            yield data
        while True:
            data = await sub.get()
            if data is END or data is DROPPED:
                return
            if data.get("seq", 0) > last or sub.call_id is None:
                yield data

    def open_subscription(call_id: str | None) -> tuple[Subscription | None, list[dict]]:
        """Subscribe (if live) and read what is stored, with no await in between."""
        h = hub()
        if call_id is None:
            return h.subscribe(None), []
        sub = h.subscribe(call_id) if call_id in h.calls else None
        return sub, h.store.events(call_id)

    def authorize_subscription(conn, call_id: str | None) -> tuple[Principal | None, int]:
        principal, presented = principal_for(conn)
        if principal is None:
            if not presented:  # an unknown token is audited by auth.check
                audit("authenticate", "failure", reason="no_token")
            return None, 401
        if call_id is None:
            allowed = principal.can("all_calls")
            audit("calls.subscribe", "success" if allowed else "failure", principal)
            return (principal, 200) if allowed else (None, 403)
        record = hub().call_record(call_id)
        if record is None or not principal.may_read(record["agent"], record["owner"]):
            audit("call.subscribe", "failure", principal, call_id=call_id, reason="not_found")
            return None, 404
        audit("call.subscribe", "success", principal, call_id=call_id)
        return principal, 200

    async def events_ws(ws: WebSocket) -> None:
        call_id = ws.path_params.get("call_id")
        principal, status = authorize_subscription(ws, call_id)
        if principal is None:
            metrics.auth_failures.inc(reason=f"ws_{status}")
            await ws.close(CLOSE_POLICY)
            return
        await ws.accept()
        sub, replay = open_subscription(call_id)
        if sub is None:  # a finished call: send what is stored, then close
            for data in replay:
                await ws.send_text(json.dumps(data, ensure_ascii=False))
            await safe_close(ws, CLOSE_NORMAL)
            return

        async def pump() -> None:
            async for data in stream_events(sub, replay):
                await ws.send_text(json.dumps(data, ensure_ascii=False))

        async def until_disconnect() -> None:
            with contextlib.suppress(WebSocketDisconnect):
                while (await ws.receive())["type"] != "websocket.disconnect":
                    pass

        tasks = [asyncio.create_task(c) for c in (pump(), until_disconnect(), sub.dropped.wait())]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            hub().unsubscribe(sub)
        if tasks[2] in done:
            await safe_close(ws, CLOSE_TRY_LATER, "slow subscriber: dropped")
        else:
            await safe_close(ws, CLOSE_NORMAL)

    async def events_sse(request: Request) -> Response:
        call_id = request.path_params.get("call_id")
        principal, status = authorize_subscription(request, call_id)
        if principal is None:
            metrics.auth_failures.inc(reason=f"sse_{status}")
            return JSONResponse({"error": "not allowed or no such call"}, status)
        sub, replay = open_subscription(call_id)

        async def body() -> AsyncIterator[str]:
            try:
                if sub is None:
                    for data in replay:
                        yield sse(data)
                    return
                async for data in stream_events(sub, replay):
                    yield sse(data)
            finally:
                if sub is not None:
                    hub().unsubscribe(sub)

        return StreamingResponse(body(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    # --- ingest -------------------------------------------------------------------------------

    async def ingest(ws: WebSocket, protocol: str, serializer: ModuleType) -> None:
        principal, presented = principal_for(ws)
        if presented and principal is None:
            metrics.auth_failures.inc(reason="bad_token")
            await ws.close(CLOSE_POLICY)
            return
        await ws.accept()
        talks_back = serializer is rawstream
        limits = StreamLimits(config)
        call: LiveCall | None = None
        sender: asyncio.Task | None = None
        status, bad = "disconnected", 0
        closing = (CLOSE_NORMAL, "")  # the close once the call has ended and its events are sent

        async def report(code: int, kind: str, message: str) -> None:
            metrics.errors.inc(protocol=protocol, kind=kind)
            log.warning("%s: %s", kind, message, extra={
                "call_id": call.call_id if call else None, "protocol": protocol, "code": code})  # fmt: skip
            if talks_back:
                await safe_send(ws, rawstream.error(kind, message))

        async def reject(code: int, kind: str, message: str) -> None:
            await report(code, kind, message)
            await safe_close(ws, code, message)

        try:
            while True:
                if (limit := limits.expired()) is not None:
                    if call is None:
                        await reject(limit.close_code, limit.kind, limit.message)
                        return
                    # ended as at a hang-up: the audio received is transcribed and sent first
                    await report(limit.close_code, limit.kind, limit.message)
                    status, closing = limit.kind, (limit.close_code, limit.message)
                    break
                try:
                    msg = await asyncio.wait_for(ws.receive(), limits.wait())
                except TimeoutError:
                    continue  # the check above says which limit it was
                if msg["type"] == "websocket.disconnect":
                    break
                data = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
                if data is None:
                    continue
                if len(data) > config.max_frame_bytes:
                    await reject(CLOSE_TOO_BIG, "too_big", f"message of {len(data)} bytes is over "
                                 f"the {config.max_frame_bytes}-byte limit")  # fmt: skip
                    return
                try:
                    item = serializer.parse(data)
                    if principal is None and not isinstance(item, Start | Ignored):
                        # a client that has not authenticated is read no further than its start
                        raise ProtocolError("unauthenticated", "send the start message, with its "
                                            "token, first", True, CLOSE_POLICY)  # fmt: skip
                    if isinstance(item, Start):
                        if call is not None:
                            raise ProtocolError("start_twice", "start sent twice", fatal=True)
                        if principal is None:
                            principal = auth.check(item.token)
                        if principal is None or not principal.can("ingest"):
                            if principal is None and not item.token:  # bad ones: by auth.check
                                audit("authenticate", "failure", reason="no_token")
                            metrics.auth_failures.inc(reason="ingest")
                            await reject(CLOSE_POLICY, "unauthorized", "missing or invalid token")
                            return
                        call = hub().open(item, protocol, principal.name)
                        limits.start()
                        if talks_back:
                            sub = hub().subscribe(call.call_id)
                            sender = asyncio.create_task(send_events(ws, sub, serializer))
                            await safe_send(ws, json.dumps({"type": "started",
                                                            "call_id": call.call_id}))  # fmt: skip
                    elif isinstance(item, Audio):
                        if call is None:
                            raise ProtocolError("audio_before_start", "audio before start", True)
                        if limits.audio(item.data):
                            call.feed(item.data)
                    elif isinstance(item, Dtmf) and call is not None:
                        call.dtmf(item.digit)
                    elif isinstance(item, Stop):
                        status = "completed"
                        break
                except ProtocolError as exc:
                    if exc.fatal or principal is None:  # no second chances before authentication
                        await reject(exc.close_code or CLOSE_PROTOCOL, exc.kind, str(exc))
                        return
                    bad += 1
                    metrics.errors.inc(protocol=protocol, kind=exc.kind)
                    if talks_back:
                        await safe_send(ws, rawstream.error(exc.kind, str(exc)))
                    if bad > config.max_bad_messages:
                        await reject(CLOSE_BAD_DATA, "too_many_bad_messages",
                                     f"more than {config.max_bad_messages} bad messages")  # fmt: skip
                        return
                except CallRefused as exc:
                    await reject(exc.close_code, exc.reason, str(exc))
                    return
        except WebSocketDisconnect:
            pass
        except Exception:
            status = "error"
            log.exception("ingest failed", extra={"protocol": protocol})
            metrics.errors.inc(protocol=protocol, kind="server_error")
            await safe_close(ws, CLOSE_SERVER_ERROR)
        finally:
            if call is not None:
                await call.finish(status)
            if sender is not None:
                try:
                    await asyncio.wait_for(sender, END_WAIT_S)
                except (TimeoutError, Exception):
                    sender.cancel()
            await safe_close(ws, *closing)

    async def send_events(ws: WebSocket, sub: Subscription, serializer: ModuleType) -> None:
        try:
            while True:
                data = await sub.get()
                if data is END or data is DROPPED:
                    return
                wire = serializer.encode(data)
                if wire is not None and not await safe_send(ws, wire):
                    return
        finally:
            hub().unsubscribe(sub)

    async def twilio_ws(ws: WebSocket) -> None:
        await ingest(ws, "twilio", twilio)

    async def stream_ws(ws: WebSocket) -> None:
        await ingest(ws, "stream", rawstream)

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics_endpoint),
        Route("/config", config_endpoint),
        Route("/calls", list_calls),
        Route("/events", events_sse),
        WebSocketRoute("/events", events_ws),
        Route("/calls/{call_id}/events", events_sse),
        WebSocketRoute("/calls/{call_id}/events", events_ws),
        Route("/calls/{call_id}", get_call),
        Route("/v1/transcribe", transcribe_upload, methods=["POST"]),
        WebSocketRoute("/twilio", twilio_ws),
        WebSocketRoute("/stream", stream_ws),
    ]
    app = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(RequestContext)])
    app.state.metrics = metrics
    app.state.config = config
    app.state.hubs = state
    return app


def sse(data: dict) -> str:
    """One server-sent event: the event type as its name, the JSON as its data."""
    return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def safe_send(ws: WebSocket, text: str) -> bool:
    """Send if the socket is open; False if it is gone or too slow."""
    if ws.application_state != WebSocketState.CONNECTED:
        return False
    try:
        await asyncio.wait_for(ws.send_text(text), SEND_TIMEOUT_S)
        return True
    except Exception:  # disconnects surface as several exception types
        return False


async def safe_close(ws: WebSocket, code: int, reason: str = "") -> None:
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    reason = reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")  # longer is not sent
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason), SEND_TIMEOUT_S)
