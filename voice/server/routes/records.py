"""Plain HTTP: health, metrics, public config and call records."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voice.server.audit import audit
from voice.server.routes.context import context


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics_endpoint(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "metrics")
    if isinstance(who, Response):
        return who
    return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)


async def config_endpoint(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "config")
    if isinstance(who, Response):
        return who
    return JSONResponse(ctx.config.public())


async def list_calls(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "own_calls")
    if isinstance(who, Response):
        return who
    calls = [c for c in ctx.hub.store.calls(500) if who.may_read(c["agent"], c["owner"])]
    audit("calls.list", "success", who)
    return JSONResponse({"calls": calls})


async def get_call(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "own_calls")
    if isinstance(who, Response):
        return who
    call_id = request.path_params["call_id"]
    record = ctx.hub.store.call(call_id)
    if record is None or not who.may_read(record["agent"], record["owner"]):
        audit("call.read", "failure", who, call_id=call_id, reason="not_found")
        return JSONResponse({"error": f"no call {call_id}"}, 404)  # same for not yours
    audit("call.read", "success", who, call_id=call_id)
    return JSONResponse(record)
