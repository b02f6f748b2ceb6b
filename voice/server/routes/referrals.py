"""Referrals over HTTP: GET /v1/referrals (list by status or call) and POST /v1/referrals/{id}/ack.

Both need the `referrals` permission (supervisor, admin) and are audited (`referrals.list`,
`referral.ack`). They read and write the store's `referrals` table, which exists with or without
an integrations file (no rules: an empty list). The console acknowledges with its session
cookie plus the session's CSRF token in `X-CSRF-Token` (routes/console.py `csrf_ok`); API
clients use their bearer token.
"""

from __future__ import annotations

import asyncio
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voice.integrations import routing
from voice.server.audit import audit
from voice.server.auth import Principal, token_from
from voice.server.routes.console import csrf_ok, session_of
from voice.server.routes.context import SESSION_COOKIE, context
from voice.types import ReferralAckedEvent

PERMISSION = "referrals"
MAX_LIMIT = 1000


async def list_referrals(request: Request) -> Response:
    """`?status=open|breached|acked|all` (default all), `?call_id=`, `?limit=` (500)."""
    ctx = context(request)
    who = ctx.require(request, PERMISSION)
    if isinstance(who, Response):
        return who
    status = request.query_params.get("status") or "all"
    if status not in (*routing.STATUSES, "all"):
        audit("referrals.list", "failure", who, reason="bad_parameter status")
        return JSONResponse({"error": f"status: one of {', '.join(routing.STATUSES)}, all; "
                                      f"not {status!r}"}, 400)  # fmt: skip
    limit = request.query_params.get("limit") or "500"
    if not limit.isdigit() or not 1 <= int(limit) <= MAX_LIMIT:
        audit("referrals.list", "failure", who, reason="bad_parameter limit")
        return JSONResponse({"error": f"limit: a whole number from 1 to {MAX_LIMIT}"}, 400)
    call_id = request.query_params.get("call_id") or None
    # the read connection, off the event loop (SQLite blocks)
    rows = await asyncio.to_thread(routing.referrals, ctx.hub.store.db, status, call_id,
                                   int(limit))  # fmt: skip
    audit("referrals.list", "success", who, call_id=call_id)
    return JSONResponse({"referrals": rows})


async def ack_referral(request: Request) -> Response:
    """Acknowledge a referral: 200 with it (a second ack keeps the first one's time and name),
    404 if unknown. The first ack is also recorded on the call as a `referral_acked` event."""
    ctx = context(request)
    who = _acker(request)
    if isinstance(who, Response):
        return who
    referral_id = request.path_params["referral_id"]
    hub = ctx.hub
    # On the store thread, in order with the SLA watch's check: an ack made before the deadline
    # is always written before the watch looks, so it never breaches.
    row, first = await hub.run_write(hub.store.transact, routing.acknowledge, referral_id,
                                     who.name, time.time())  # fmt: skip
    if row is None:
        audit("referral.ack", "failure", who, reason=f"not_found {referral_id}")
        return JSONResponse({"error": f"no referral {referral_id}"}, 404)
    if first:
        event = ReferralAckedEvent(row["call_id"], row["id"], row["department"], who.name)
        await hub.inject(row["call_id"], event)
    audit("referral.ack", "success", who, call_id=row["call_id"],
          reason=None if first else "already acknowledged")  # fmt: skip
    return JSONResponse(row)


def _acker(request: Request) -> Principal | Response:
    """Who acknowledges: a bearer token's principal, or a console session whose request carries
    its CSRF token (the cookie alone never authorises a POST)."""
    ctx = context(request)
    if (token_from(request.headers, request.query_params) or ctx.auth.insecure
            or SESSION_COOKIE not in request.cookies):  # fmt: skip
        return ctx.require(request, PERMISSION)
    _, session = session_of(request)
    if session is None:
        return ctx.refuse(False)  # expired or signed out: the console sends them to sign in
    if not csrf_ok(request, session):
        audit("referral.ack", "failure", session.principal, reason="csrf")
        return JSONResponse({"error": "CSRF check failed"}, 403)
    if not session.principal.can(PERMISSION):
        audit("authorize", "failure", session.principal, reason=f"needs {PERMISSION}")
        return ctx.refuse(True)
    return session.principal


__all__ = ["ack_referral", "list_referrals"]
