"""POST /integrations/zendesk/webhook: agents' replies in a call's Zendesk ticket, verified, put back on the call.

Zendesk cannot send our bearer token, so the signature is the authentication: base64
HMAC-SHA256 of `X-Zendesk-Webhook-Signature-Timestamp` + the raw body, keyed with the webhook's
signing secret, and a timestamp within 5 minutes of our clock. Without a configured secret the
route does not exist (404). Each invocation is handled once (`X-Zendesk-Webhook-Invocation-Id`,
and the comment id, which is stored in the same transaction as the call's `ticket_comment` event).

Which comments reach the call: `ticket.comment_added` of a ticket we created for a call (or whose
external_id is a stored call's id), written by a person with agent rights (`is_staff` not false),
and not by our own API user (the ticket's submitter: the comments we post come back as events too).
Everything else is answered 200 and ignored, so Zendesk does not retry it.
Logs name ids only: never the comment's words, the signature or a token (PDPO).
"""

from __future__ import annotations

import json
import logging
import time

from starlette.requests import Request
from starlette.responses import JSONResponse

from voice.integrations import zendesk
from voice.server.audit import audit
from voice.server.routes.context import context
from voice.types import TicketCommentEvent

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024  # Zendesk's event payloads are a few KB; a comment body is capped far lower


async def zendesk_webhook(request: Request) -> JSONResponse:
    server = context(request)
    service = server.integrations
    config = service.config.zendesk if service is not None else None
    sync = service.zendesk if service is not None else None
    if config is None or sync is None or not config.webhook_secret:
        return JSONResponse({"error": "not found"}, 404)  # no detail: nothing to probe for

    body = await _body(request)
    if body is None:
        return JSONResponse({"error": f"body over {MAX_BODY // 1024} KB"}, 413)
    refused = zendesk.verify_signature(
        config.webhook_secret,
        request.headers.get("x-zendesk-webhook-signature"),
        request.headers.get("x-zendesk-webhook-signature-timestamp"),
        body,
    )
    if refused is not None:
        server.metrics.auth_failures.inc(reason="zendesk_signature")
        audit("authenticate", "failure", reason=f"zendesk webhook: {refused}")
        return JSONResponse({"error": "missing, invalid or expired signature"}, 401)

    try:
        event = json.loads(body)
        kind = zendesk.event_type(event)
    except ValueError as exc:  # BadEvent is one
        message = str(exc) if isinstance(exc, zendesk.BadEvent) else "the body is not JSON"
        return JSONResponse({"error": message}, 400)
    invocation = request.headers.get("x-zendesk-webhook-invocation-id") or event.get("id")
    invocation = str(invocation)[:200] if invocation else None

    hub = server.hub
    db = hub.store.db
    if invocation is not None and (invocation in sync.in_flight
                                   or zendesk.invocation_seen(db, invocation)):  # fmt: skip
        return JSONResponse({"ok": True, "duplicate": True})
    if kind != zendesk.COMMENT_ADDED:
        await _remember(hub, invocation, "ignored: " + kind[:60])
        return JSONResponse({"ok": True, "ignored": "not a ticket.comment_added event"})
    try:
        comment = zendesk.parse_comment(event)
    except zendesk.BadEvent as exc:
        return JSONResponse({"error": str(exc)}, 400)

    guard = f"comment:{comment.comment_id}"
    if guard in sync.in_flight or zendesk.comment_seen(db, comment.comment_id):
        await _remember(hub, invocation, "duplicate comment")
        return JSONResponse({"ok": True, "duplicate": True})
    keys = {k for k in (invocation, guard) if k}
    sync.in_flight.update(keys)
    try:
        ignored = _ignored(db, comment)
        call_id = None
        if ignored is None:
            call_id = zendesk.call_for_ticket(db, comment.ticket_id, comment.external_id)
            if call_id is None:
                ignored = "the ticket is not a call's"
        if ignored is None and call_id is not None:
            added = await hub.inject(call_id, TicketCommentEvent(
                call_id, comment.ticket_id, comment.comment_id, comment.author, comment.body))  # fmt: skip
            if not added:
                ignored = "the ticket's call is not stored"
        # The hub's writes run in order: this one also waits for the comment's event to be stored.
        await _remember(hub, invocation, ignored or "added")
    finally:
        sync.in_flight.difference_update(keys)
    if ignored is not None:
        log.info("zendesk comment %s on ticket %s ignored: %s", comment.comment_id,
                 comment.ticket_id, ignored)  # fmt: skip
        return JSONResponse({"ok": True, "ignored": ignored})
    log.info("zendesk comment %s on ticket %s added to call %s", comment.comment_id,
             comment.ticket_id, call_id, extra={"call_id": call_id})  # fmt: skip
    return JSONResponse({"ok": True, "call_id": call_id})


def _ignored(db, comment: zendesk.IncomingComment) -> str | None:
    """Why a comment does not go to the call, or None."""
    if comment.author_id is not None and comment.author_id in zendesk.our_users(db):
        return "written by this server's API user"
    if comment.is_staff is False:
        return "not written by an agent"
    if not comment.body.strip():
        return "empty"
    return None


async def _remember(hub, invocation: str | None, outcome: str) -> None:
    if invocation is not None:
        await hub.run_write(hub.store.transact, zendesk.remember_invocation, invocation, outcome,
                            time.time())  # fmt: skip


async def _body(request: Request) -> bytes | None:
    """The raw body (the signature covers its exact bytes), or None when over MAX_BODY."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
