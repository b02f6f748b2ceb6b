"""Event subscriptions: one call's events (stored ones first, then live) or every live call's,
over a WebSocket or server-sent events."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from voice.server.audit import audit
from voice.server.auth import Principal
from voice.server.calls import DROPPED, END, Subscription
from voice.server.routes.context import ServerContext, context
from voice.server.serializers import CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TRY_LATER
from voice.server.websocket import safe_close


def sse(data: dict) -> str:
    """One server-sent event: the event type as its name, the JSON as its data."""
    return f"event: {data['type']}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


async def stream_events(sub: Subscription, replay: list[dict]) -> AsyncIterator[dict]:
    """The replayed events, then live ones not already replayed, until the call ends."""
    last = 0
    for data in replay:
        last = data["seq"]
        yield data
    while True:
        data = await sub.get()
        if data is END or data is DROPPED:
            return
        # a `partial` has no seq (never stored, never replayed): always live
        if "seq" not in data or data["seq"] > last or sub.call_id is None:
            yield data


def open_subscription(
    ctx: ServerContext, call_id: str | None
) -> tuple[Subscription | None, list[dict]]:
    """Subscribe (if live, here or on another server sharing the store) and read what is
    stored, with no await in between."""
    hub = ctx.hub
    if call_id is None:
        return hub.subscribe(None), []
    return hub.follow(call_id), hub.store.events(call_id)


def authorize_subscription(
    ctx: ServerContext, conn: HTTPConnection, call_id: str | None
) -> tuple[Principal | None, int]:
    """(principal, 200) when the caller may follow `call_id` (None: all calls), else (None, 4xx)."""
    principal, presented = ctx.principal_for(conn)
    if principal is None:
        if not presented:  # an unknown token is audited by auth.check
            audit("authenticate", "failure", reason="no_token")
        return None, 401
    if call_id is None:
        allowed = principal.can("all_calls")
        audit("calls.subscribe", "success" if allowed else "failure", principal)
        return (principal, 200) if allowed else (None, 403)
    record = ctx.hub.call_record(call_id)
    if record is None or not principal.may_read(record["agent"], record["owner"]):
        audit("call.subscribe", "failure", principal, call_id=call_id, reason="not_found")
        return None, 404
    audit("call.subscribe", "success", principal, call_id=call_id)
    return principal, 200


async def events_ws(ws: WebSocket) -> None:
    ctx = context(ws)
    call_id = ws.path_params.get("call_id")
    principal, status = authorize_subscription(ctx, ws, call_id)
    if principal is None:
        ctx.metrics.auth_failures.inc(reason=f"ws_{status}")
        await ws.close(CLOSE_POLICY)
        return
    await ws.accept()
    sub, replay = open_subscription(ctx, call_id)
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
        ctx.hub.unsubscribe(sub)
    if tasks[2] in done:
        await safe_close(ws, CLOSE_TRY_LATER, "slow subscriber: dropped")
    else:
        await safe_close(ws, CLOSE_NORMAL)


async def events_sse(request: Request) -> Response:
    ctx = context(request)
    call_id = request.path_params.get("call_id")
    principal, status = authorize_subscription(ctx, request, call_id)
    if principal is None:
        ctx.metrics.auth_failures.inc(reason=f"sse_{status}")
        return JSONResponse({"error": "not allowed or no such call"}, status)
    sub, replay = open_subscription(ctx, call_id)

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
                ctx.hub.unsubscribe(sub)

    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store"})  # fmt: skip
