"""GET|POST /integrations/whatsapp: the WhatsApp Business Cloud API webhook, customer messages
answered on the path of POST /v1/messages (channel "whatsapp").

Meta cannot send our bearer token, so:
- GET is the subscription handshake: `hub.mode=subscribe` and `hub.verify_token` equal to the
  WHATSAPP_VERIFY_TOKEN environment variable -> 200 with `hub.challenge` as text/plain; else 403.
- POST must carry `X-Hub-Signature-256` of the raw body keyed with WHATSAPP_APP_SECRET: missing
  -> 401, wrong -> 403. A signed body that is not the documented shape -> 400 naming the field.
  Otherwise 200 within ANSWER_WAIT_S (Meta retries anything else): each new text message is
  answered (in the background if that takes longer), a message id seen before is skipped,
  statuses and other types are ignored.
Without the environment variable a route needs, it answers 503 and logs which one is missing.
The customer is the CRM's customer with the sender's number, else `whatsapp:<wa_id>`.
Logs name message ids and counts only: never the text, the number or a secret (PDPO).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from voice.answer.crm import customer_by_phone
from voice.integrations import whatsapp
from voice.server import customers
from voice.server.audit import audit
from voice.server.conversations import Conflict, handle_message
from voice.server.routes.context import ServerContext, context
from voice.server.routes.messages import read_body

log = logging.getLogger(__name__)

VERIFY_TOKEN_ENV = "WHATSAPP_VERIFY_TOKEN"
APP_SECRET_ENV = "WHATSAPP_APP_SECRET"
MAX_BODY = 512 * 1024  # Meta batches up to a few messages per call; far below this
CHANNEL = "whatsapp"
ANSWER_WAIT_S = 3.0  # the 200 waits this long at most for the answers (Meta wants it fast)


def _unset(name: str) -> JSONResponse:
    log.error("WhatsApp webhook called but %s is not set: refusing it", name)
    return JSONResponse({"error": f"WhatsApp is not configured on this server ({name})"}, 503)


async def whatsapp_webhook(request: Request) -> Response:
    if request.method == "GET":
        return verify(request)
    return await receive(request)


def verify(request: Request) -> Response:
    expected = os.environ.get(VERIFY_TOKEN_ENV, "")
    if not expected:
        return _unset(VERIFY_TOKEN_ENV)
    query = request.query_params
    token = query.get("hub.verify_token", "")
    if query.get("hub.mode") == "subscribe" and hmac.compare_digest(
        token.encode(), expected.encode()
    ):
        log.info("WhatsApp webhook subscription verified")
        return PlainTextResponse(query.get("hub.challenge", ""))
    context(request).metrics.auth_failures.inc(reason="whatsapp_verify")
    audit("authenticate", "failure", reason="whatsapp verify token")
    return PlainTextResponse("forbidden", 403)


async def receive(request: Request) -> Response:
    server = context(request)
    secret = os.environ.get(APP_SECRET_ENV, "")
    if not secret:
        return _unset(APP_SECRET_ENV)
    body = await read_body(request, MAX_BODY)
    if body is None:
        return JSONResponse({"error": f"body over {MAX_BODY // 1024} KB"}, 413)
    refused = whatsapp.verify_signature(secret, request.headers.get("x-hub-signature-256"), body)
    if refused is not None:
        server.metrics.auth_failures.inc(reason="whatsapp_signature")
        audit("authenticate", "failure", reason=f"whatsapp signature: {refused}")
        status = 401 if refused == "missing" else 403
        return JSONResponse({"error": f"X-Hub-Signature-256 {refused}"}, status)
    try:
        parsed = whatsapp.parse(body)
    except whatsapp.BadPayload as exc:
        return JSONResponse({"error": str(exc), "field": exc.field}, 400)
    if parsed.ignored:
        log.info("WhatsApp webhook: ignored %s", ", ".join(sorted(set(parsed.ignored))))
    tasks = server.hubs.setdefault("whatsapp_tasks", set())
    started = []
    for message in parsed.messages:
        task = asyncio.get_running_loop().create_task(_answer(server, message))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        started.append(task)
    if started:  # usually answered and stored by now; a slow engine finishes after the 200
        await asyncio.wait(started, timeout=ANSWER_WAIT_S)
    return JSONResponse({"ok": True, "messages": len(parsed.messages),
                         "ignored": len(parsed.ignored)})  # fmt: skip


async def _answer(server: ServerContext, message: whatsapp.Inbound) -> None:
    """Answer one text message as POST /v1/messages would; errors are logged, never raised."""
    hub = server.hub
    text = message.text.strip()[: server.config.max_message_chars]
    if not text:
        log.info("WhatsApp message %s is empty: ignored", message.message_id)
        return
    crm = getattr(hub.answer_engine, "crm", None)
    found = customer_by_phone(crm, message.wa_id)
    customer_id = found.id if found is not None else customers.channel_id(CHANNEL, message.wa_id)
    try:
        reply = await handle_message(hub, CHANNEL, customer_id, text,
                                     message_id=message.message_id,
                                     meta={"wa_id": message.wa_id})  # fmt: skip
    except Conflict as exc:  # cannot happen without a conversation id; logged in case
        log.warning("WhatsApp message %s not answered: %s", message.message_id, exc)
        return
    except Exception:
        log.exception("WhatsApp message %s could not be answered", message.message_id)
        return
    outcome = "a duplicate: skipped" if reply.duplicate else f"{len(reply.events)} events"
    log.info("WhatsApp message %s: %s", message.message_id, outcome,
             extra={"call_id": reply.conversation_id})  # fmt: skip
