"""WebSocket plumbing shared by the ingest and event routes: bounded sends and closes, and the
ingest transport (messages in, wire messages out; no knowledge of calls or formats)."""

from __future__ import annotations

import asyncio
import contextlib

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from voice.server.serializers import CLOSE_TOO_BIG, ProtocolError

SEND_TIMEOUT_S = 5.0  # a close or final send that takes longer is abandoned
MAX_CLOSE_REASON = 123  # bytes of UTF-8 a WebSocket close reason may hold (RFC 6455 5.5)


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
    """Close unless already closed; the reason is cut to what a close frame holds."""
    if ws.application_state == WebSocketState.DISCONNECTED:
        return
    reason = reason.encode()[:MAX_CLOSE_REASON].decode(errors="ignore")  # longer is not sent
    with contextlib.suppress(Exception):
        await asyncio.wait_for(ws.close(code, reason), SEND_TIMEOUT_S)


class WebSocketTransport:
    """An accepted ingest WebSocket as a session's `Transport`: one message per receive."""

    close_codes = True
    disconnects = (WebSocketDisconnect,)
    failure = "ingest failed"

    def __init__(self, ws: WebSocket, max_frame_bytes: int):
        self.ws = ws
        self.max_frame_bytes = max_frame_bytes

    async def receive(self) -> list[str | bytes | ProtocolError] | None:
        msg = await self.ws.receive()
        if msg["type"] == "websocket.disconnect":
            return None
        data = msg.get("text") if msg.get("text") is not None else msg.get("bytes")
        if data is None:
            return []
        if len(data) > self.max_frame_bytes:
            return [ProtocolError("too_big", f"message of {len(data)} bytes is over the "
                                  f"{self.max_frame_bytes}-byte limit", True, CLOSE_TOO_BIG)]  # fmt: skip
        return [data]

    async def send(self, wire: str | bytes) -> bool:
        return await safe_send(self.ws, wire)

    async def close(self, code: int, reason: str = "") -> None:
        await safe_close(self.ws, code, reason)
