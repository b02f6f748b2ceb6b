"""Audit review over HTTP: jobs, a sampled call's lines and audio, corrections, rubric scores."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voice.quality import corrections, reviews
from voice.server.audit import audit
from voice.server.auth import Principal, token_from
from voice.server.routes.console import SECURITY_HEADERS, csrf_ok, session_of
from voice.server.routes.context import SESSION_COOKIE, context

log = logging.getLogger(__name__)

PERMISSION = "audit"  # auditors: sampled calls only; supervisors: any call (reviews.may_review)
MAX_BODY = 16_384  # bytes: a review or one line's correction


def _who(request: Request, action: str) -> Principal | Response:
    """The principal with the `audit` permission: a bearer token's, a console session's on a GET,
    or a console session's on a POST that carries its CSRF token (the cookie alone never
    authorises a write); else the 401/403 to answer."""
    ctx = context(request)
    if (request.method in ("GET", "HEAD") or token_from(request.headers, request.query_params)
            or ctx.auth.insecure or SESSION_COOKIE not in request.cookies):  # fmt: skip
        return ctx.require(request, PERMISSION)
    _, session = session_of(request)
    if session is None:
        return ctx.refuse(False)  # expired or signed out: the console sends them to sign in
    if not csrf_ok(request, session):
        audit(action, "failure", session.principal, reason="csrf")
        return JSONResponse({"error": "CSRF check failed"}, 403)
    if not session.principal.can(PERMISSION):
        audit("authorize", "failure", session.principal, reason=f"needs {PERMISSION}")
        return ctx.refuse(True)
    return session.principal


async def _reviewer(request: Request, action: str) -> tuple[Principal, str] | Response:
    """(principal, call id) if the principal may review the path's call, else 401/403, or 404
    for a call that is not stored or not the principal's to audit (not told apart)."""
    who = _who(request, action)
    if isinstance(who, Response):
        return who
    call_id = request.path_params["call_id"]
    db = context(request).hub.store.db
    if not await asyncio.to_thread(reviews.may_review, db, who, call_id):
        audit(action, "failure", who, call_id=call_id, reason="not_found")
        return JSONResponse({"error": f"no call {call_id} to audit"}, 404)
    return who, call_id


def _rubric(request: Request) -> reviews.Rubric | Response:
    """The app's rubric, read once: `voice serve --rubric FILE` (checked at start), else the
    shipped voice/quality/data/rubric.yaml; a 500 naming the item and key if the file has
    become wrong since (the next request reads it again, so a fix needs no restart)."""
    state = request.app.state
    if getattr(state, "review_rubric", None) is None:
        try:
            state.review_rubric = reviews.load_rubric(context(request).config.rubric)
        except reviews.RubricError as exc:
            log.error("audit rubric unusable: %s", exc)
            return JSONResponse({"error": f"rubric: {exc}"}, 500)
    return state.review_rubric


async def _body(request: Request) -> dict[str, Any] | None:
    """The request's JSON object, or None (too big, not JSON, not an object)."""
    data = b""
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_BODY:
            return None
    try:
        value = json.loads(data or b"null")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _bad(who: Principal, action: str, call_id: str | None, message: str,
         status: int = 400) -> JSONResponse:  # fmt: skip
    # the reason names the field only: the message may quote what was sent
    audit(action, "failure", who, call_id=call_id, reason=message.split(":")[0])
    return JSONResponse({"error": message}, status)


# --- jobs, rubric, calibration ----------------------------------------------------------------


async def list_jobs(request: Request) -> Response:
    """GET /v1/audit/jobs: {"jobs": [{id, created_at, created_by, params, population, sampled,
    reviewed, double_reviewed}]}, newest first."""
    who = _who(request, "audit.jobs.list")
    if isinstance(who, Response):
        return who
    rows = await asyncio.to_thread(reviews.jobs, context(request).hub.store.db)
    audit("audit.jobs.list", "success", who)
    return JSONResponse({"jobs": rows})


async def get_job(request: Request) -> Response:
    """GET /v1/audit/jobs/{job_id}: the job and its calls with their review status."""
    who = _who(request, "audit.job.read")
    if isinstance(who, Response):
        return who
    job_id = request.path_params["job_id"]
    found = await asyncio.to_thread(reviews.job, context(request).hub.store.db, job_id, who.name)
    if found is None:
        return _bad(who, "audit.job.read", None, f"job: no audit job {job_id}", 404)
    audit("audit.job.read", "success", who, reason=job_id)
    return JSONResponse(found)


async def get_rubric(request: Request) -> Response:
    """GET /v1/audit/rubric: the scoring form (version, title, items)."""
    who = _who(request, "audit.rubric")
    if isinstance(who, Response):
        return who
    rubric = _rubric(request)
    return rubric if isinstance(rubric, Response) else JSONResponse(rubric.to_json())


async def get_agreement(request: Request) -> Response:
    """GET /v1/audit/agreement?job=: Cohen's kappa and percent agreement of double reviews."""
    who = _who(request, "audit.agreement")
    if isinstance(who, Response):
        return who
    job_id = request.query_params.get("job") or None
    rubric = _rubric(request)
    if isinstance(rubric, Response):
        return rubric
    figures = await asyncio.to_thread(reviews.calibration, context(request).hub.store.db,
                                      rubric, job_id)  # fmt: skip
    audit("audit.agreement", "success", who, reason=job_id)
    return JSONResponse(figures)


# --- one call ---------------------------------------------------------------------------------


async def get_sheet(request: Request) -> Response:
    """GET /v1/audit/calls/{call_id}: the call's transcript lines with their suggestion and
    corrections, and whether it has a recording."""
    found = await _reviewer(request, "audit.call.read")
    if isinstance(found, Response):
        return found
    who, call_id = found
    sheet = await asyncio.to_thread(reviews.sheet, context(request).hub.store.db, call_id)
    if sheet is None:  # deleted (retention) since the check
        return _bad(who, "audit.call.read", call_id, f"call: no call {call_id}", 404)
    audit("audit.call.read", "success", who, call_id=call_id)
    return JSONResponse(sheet)


async def get_audio(request: Request) -> Response:
    """GET /v1/calls/{call_id}/audio?start=&end=: that span of the recording as 16-bit PCM WAV."""
    found = await _reviewer(request, "call.audio")
    if isinstance(found, Response):
        return found
    who, call_id = found
    ctx = context(request)
    try:
        start, end = reviews.parse_span(request.query_params.get("start"),
                                        request.query_params.get("end"))  # fmt: skip
    except reviews.ClipError as exc:
        return _bad(who, "call.audio", call_id, str(exc))
    path = await asyncio.to_thread(reviews.recording_path, ctx.hub.store.db,
                                   ctx.config.record_dir, call_id)  # fmt: skip
    if path is None:
        return _bad(who, "call.audio", call_id, f"recording: call {call_id} has none", 404)
    try:
        wav = await asyncio.to_thread(reviews.clip, path, start, end)
    except reviews.ClipError as exc:
        return _bad(who, "call.audio", call_id, str(exc))
    audit("call.audio", "success", who, call_id=call_id)
    # personal data: never cached, shown only here
    return Response(wav, media_type="audio/wav", headers=SECURITY_HEADERS)


async def corrections_endpoint(request: Request) -> Response:
    """GET: {"corrections": [...]} oldest first; POST {"seq", "text"}: 201 with the correction."""
    action = "correction.add" if request.method == "POST" else "corrections.read"
    found = await _reviewer(request, action)
    if isinstance(found, Response):
        return found
    who, call_id = found
    hub = context(request).hub
    if request.method != "POST":
        rows = await asyncio.to_thread(corrections.of_call, hub.store.db, call_id)
        audit(action, "success", who, call_id=call_id)
        return JSONResponse({"corrections": [c.to_dict() for c in rows]})
    body = await _body(request)
    if body is None:
        return _bad(who, action, call_id, 'body: a JSON object {"seq": N, "text": "..."}')
    try:
        row = await hub.run_write(hub.store.transact, corrections.add, call_id, body.get("seq"),
                                  body.get("text"), who.name, time.time())  # fmt: skip
    except corrections.CorrectionError as exc:
        return _bad(who, action, call_id, str(exc))
    audit(action, "success", who, call_id=call_id, reason=f"seq {row.seq}")  # never the text
    return JSONResponse(row.to_dict(), 201)


async def reviews_endpoint(request: Request) -> Response:
    """GET: the call's reviews and their agreement; POST {"scores", "comment"}: 201 with it."""
    action = "review.add" if request.method == "POST" else "reviews.read"
    found = await _reviewer(request, action)
    if isinstance(found, Response):
        return found
    who, call_id = found
    hub = context(request).hub
    rubric = _rubric(request)
    if isinstance(rubric, Response):
        return rubric
    if request.method == "POST":
        body = await _body(request)
        if body is None:
            return _bad(who, action, call_id, 'body: a JSON object {"scores": {...}, "comment"}')
        try:
            review = await hub.run_write(hub.store.transact, reviews.add, rubric, call_id,
                                         who.name, who.role, body.get("scores"),
                                         body.get("comment"), time.time())  # fmt: skip
        except reviews.ReviewError as exc:
            return _bad(who, action, call_id, str(exc))
        except reviews.AlreadyReviewed as exc:
            return _bad(who, action, call_id, f"reviewer: {exc}", 409)
        audit(action, "success", who, call_id=call_id)
        return JSONResponse(review.to_dict(), 201)
    rows = await asyncio.to_thread(reviews.of_call, hub.store.db, call_id)
    audit(action, "success", who, call_id=call_id)
    return JSONResponse(visible_reviews(call_id, rows, rubric, who))


def visible_reviews(call_id: str, rows: list[reviews.Review], rubric: reviews.Rubric,
                    who: Principal) -> dict[str, Any]:  # fmt: skip
    """What `who` may see of a call's reviews. Blind double review: an auditor sees the others'
    scores, comments and their agreement only once it has submitted its own, so the first review
    cannot sway the second; a supervisor, who oversees the audit, sees them all."""
    mine = any(r.reviewer == who.name for r in rows)
    open_book = mine or who.can("all_calls")
    shown = [r.to_dict() if open_book or r.reviewer == who.name else
             {"reviewer": r.reviewer, "role": r.role, "created_at": r.created_at, "hidden": True}
             for r in rows]  # fmt: skip
    return {"call_id": call_id, "rubric_version": rubric.version,
            "submitted": mine, "reviews": shown,
            "agreement": reviews.pair_agreement(rows, rubric) if open_book else None}  # fmt: skip


__all__ = ["corrections_endpoint", "get_agreement", "get_audio", "get_job", "get_rubric",
           "get_sheet", "list_jobs", "reviews_endpoint"]  # fmt: skip
