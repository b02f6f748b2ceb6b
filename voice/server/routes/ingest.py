"""Ingest WebSockets: /twilio and /stream, each a serializer over the shared StreamSession.

A token presented by header or query and found invalid is refused before the handshake (1008);
without one, the client is read no further than its start message, whose token must pass.
"""

from __future__ import annotations

from starlette.websockets import WebSocket

from voice.server.routes.context import context
from voice.server.serializers import CLOSE_POLICY, Serializer, rawstream, twilio
from voice.server.session import StreamSession
from voice.server.websocket import WebSocketTransport


async def ingest(ws: WebSocket, serializer: Serializer) -> None:
    ctx = context(ws)
    principal, presented = ctx.principal_for(ws)
    if presented and principal is None:
        ctx.metrics.auth_failures.inc(reason="bad_token")
        await ws.close(CLOSE_POLICY)
        return
    await ws.accept()
    transport = WebSocketTransport(ws, ctx.config.max_frame_bytes)
    await StreamSession(ctx.hub, serializer, transport, ctx.auth, principal).run()


async def twilio_ws(ws: WebSocket) -> None:
    await ingest(ws, twilio)


async def stream_ws(ws: WebSocket) -> None:
    await ingest(ws, rawstream)
