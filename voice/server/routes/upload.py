"""POST /v1/transcribe: an audio file in the body -> its events as JSON."""

from __future__ import annotations

import asyncio
import tempfile

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from voice.server.routes.context import ServerContext, context

UPLOAD_RETRY_AFTER_S = 10  # Retry-After of an upload refused because others are running


async def transcribe_upload(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "transcribe")
    if isinstance(who, Response):
        return who
    if request.headers.get("content-type", "").startswith("multipart/"):
        return JSONResponse({"error": "send the audio file itself as the request body, "
                             "not a form: curl --data-binary @call.wav ..."}, 415)  # fmt: skip
    if ctx.uploads.locked():  # refused, not queued: a queued upload would hold its body meanwhile
        return JSONResponse({"error": f"{ctx.config.max_uploads} uploads are being transcribed; "
                             "try again later"}, 503,
                            headers={"Retry-After": str(UPLOAD_RETRY_AFTER_S)})  # fmt: skip
    async with ctx.uploads:
        return await run_upload(ctx, request)


async def run_upload(ctx: ServerContext, request: Request) -> Response:
    from voice.server import offline

    config = ctx.config
    with tempfile.NamedTemporaryFile(suffix=".audio") as file:  # 0600, deleted on close
        size = 0
        try:
            async with asyncio.timeout(config.upload_timeout_s):
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > config.max_upload_bytes:
                        return JSONResponse({"error": "file too large"}, 413)
                    file.write(chunk)
        except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
            return Response(status_code=400)
        except TimeoutError:
            error = f"the request body did not arrive within {config.upload_timeout_s:g} s"
            return JSONResponse({"error": error}, 408, headers={"Connection": "close"})
        if not size:
            return JSONResponse({"error": "send the audio file as the request body"}, 400)
        file.flush()
        call_id = request.query_params.get("call_id", "upload")
        try:
            await asyncio.to_thread(offline.check_length, file.name, config.max_upload_seconds)
            events = await offline.transcribe_upload(ctx.hub, file.name, call_id[:128])
        except offline.TooLong as exc:
            return JSONResponse({"error": str(exc)}, 413)
        except ValueError as exc:  # AudioError
            return JSONResponse({"error": str(exc)}, 400)
    return JSONResponse({"call_id": call_id, "events": events})
