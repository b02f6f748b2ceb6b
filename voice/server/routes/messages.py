"""Text channels: POST /v1/messages (web chat, WhatsApp, WeChat bridges) and a customer's
timeline across channels, GET /v1/customers/{customer_id}.

POST /v1/messages needs the `ingest` permission (agent, supervisor, admin tokens: the same as
starting a call on /stream); the conversation is owned by the token's name, so an agent token
reads back its own conversations. Body (JSON, at most MAX_BODY bytes):
    {"channel": "web"|"whatsapp"|"wechat", "customer_id": "...", "conversation_id": "..."?,
     "text": "..."}
200 {"conversation_id", "events": [...]}: the suggestion, alert, handoff (and referral) events,
in the wire form of a call's. 400 names the bad field; 409 for a conversation_id that is another
customer's, another channel's, a call's or a conversation that has ended; 413 over MAX_BODY;
429 (Retry-After) over `max_messages_per_minute` for one customer.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import deque
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voice.server import customers
from voice.server.audit import audit
from voice.server.conversations import (
    CHANNELS,
    CONVERSATION_ID,
    MAX_CUSTOMER_ID,
    Conflict,
    handle_message,
)
from voice.server.routes.context import context

log = logging.getLogger(__name__)

MAX_BODY = 32 * 1024  # bytes of a message request; the text itself is held to max_message_chars


RATE_WINDOW_S = 60.0  # max_messages_per_minute counts messages in this sliding window


class RateLimit:
    """Messages per customer in the last RATE_WINDOW_S, in memory (per server process)."""

    def __init__(self, per_window: int, clock=time.monotonic):
        self.per_window = per_window
        self.clock = clock
        self._seen: dict[str, deque[float]] = {}

    def wait(self, key: str) -> float:
        """0 and the message counted if `key` is under the limit, else seconds until it is not."""
        now = self.clock()
        times = self._seen.setdefault(key, deque())
        while times and times[0] <= now - RATE_WINDOW_S:
            times.popleft()
        if len(times) >= self.per_window:
            return times[0] + RATE_WINDOW_S - now
        times.append(now)
        if len(self._seen) > 10_000:  # forget customers who went quiet
            cutoff = now - RATE_WINDOW_S
            for quiet in [k for k, v in self._seen.items() if not v or v[-1] <= cutoff]:
                del self._seen[quiet]
        return 0.0


class BadField(ValueError):
    """A request field that is missing or malformed; `field` names it."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field

    def response(self) -> JSONResponse:
        return JSONResponse({"error": str(self), "field": self.field}, 400)


async def read_body(request: Request, limit: int) -> bytes | None:
    """The raw body, or None when it is over `limit` bytes (by its header or as it arrives)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def customer_id_field(value: Any, field: str = "customer_id") -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadField(field, f"{field} is required: a non-empty string")
    value = value.strip()
    if len(value) > MAX_CUSTOMER_ID or not value.isprintable():
        raise BadField(field, f"{field} must be printable and at most {MAX_CUSTOMER_ID} characters")
    return value


def text_field(value: Any, max_chars: int, field: str = "text") -> str:
    if not isinstance(value, str):
        raise BadField(field, f"{field} is required: a string")
    if not value.strip():
        raise BadField(field, f"{field} is empty")
    if len(value) > max_chars:
        raise BadField(field, f"{field} is longer than {max_chars} characters")
    return value.strip()


def parse_message(body: bytes, max_chars: int) -> tuple[str, str, str | None, str]:
    """(channel, customer_id, conversation_id, text) from a request body; raises BadField."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadField("body", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise BadField("body", "the body must be a JSON object")
    channel = data.get("channel")
    if channel not in CHANNELS:
        raise BadField("channel", f"channel must be one of {', '.join(CHANNELS)}")
    customer_id = customer_id_field(data.get("customer_id"))
    conversation_id = data.get("conversation_id")
    if conversation_id is not None and (
        not isinstance(conversation_id, str) or not CONVERSATION_ID.fullmatch(conversation_id)
    ):
        raise BadField("conversation_id", "conversation_id must be 1-64 letters, digits or ._:- "
                       "(or left out to start or continue the customer's conversation)")  # fmt: skip
    return channel, customer_id, conversation_id, text_field(data.get("text"), max_chars)


async def post_message(request: Request) -> Response:
    ctx = context(request)
    who = ctx.require(request, "ingest")
    if isinstance(who, Response):
        return who
    body = await read_body(request, MAX_BODY)
    if body is None:
        return JSONResponse({"error": f"body over {MAX_BODY // 1024} KB", "field": "body"}, 413)
    try:
        channel, customer_id, conversation_id, text = parse_message(
            body, ctx.config.max_message_chars
        )
    except BadField as exc:
        return exc.response()
    limit = ctx.hubs.setdefault("message_rate", RateLimit(ctx.config.max_messages_per_minute))
    if (wait := limit.wait(customer_id)) > 0:
        ctx.metrics.errors.inc(protocol=channel, kind="rate_limited")
        return JSONResponse({"error": "too many messages for this customer; retry later",
                             "field": "customer_id"}, 429,
                            headers={"Retry-After": str(math.ceil(wait))})  # fmt: skip
    try:
        reply = await handle_message(ctx.hub, channel, customer_id, text, owner=who.name,
                                     conversation_id=conversation_id)  # fmt: skip
    except Conflict as exc:
        audit("message.post", "failure", who, call_id=conversation_id, reason="conflict")
        return JSONResponse({"error": str(exc), "field": "conversation_id"}, 409)
    audit("message.post", "success", who, call_id=reply.conversation_id)
    return JSONResponse({"conversation_id": reply.conversation_id, "events": reply.events})


async def get_customer(request: Request) -> Response:
    """The customer's calls and text conversations, oldest first, each with its events, and the
    context their next conversation starts from. Supervisors see every one; an agent sees the
    ones it may read (assigned or started by it), 404 if none."""
    ctx = context(request)
    who = ctx.require(request, "own_calls")
    if isinstance(who, Response):
        return who
    customer_id = request.path_params["customer_id"]
    store = ctx.hub.store
    records = []
    for call_id in customers.conversations(store.db, customer_id):
        record = store.call(call_id)
        if record is not None and who.may_read(record["agent"], record["owner"]):
            records.append(record)
    if not records and not who.can("all_calls"):
        audit("customer.read", "failure", who, reason="not_found")
        return JSONResponse({"error": f"no customer {customer_id}"}, 404)  # same for not yours
    records.sort(key=lambda r: r["started_at"])
    found = customers.context_for(ctx.hub, customer_id)
    context_data = None
    if found is not None:
        context_data = {"language": found.language, "unresolved": found.unresolved,
                        "order_id": found.order_id, "updated_at": found.updated_at,
                        "topics": [t.to_dict() for t in found.topics]}  # fmt: skip
    crm = getattr(ctx.hub.answer_engine, "crm", None)
    person = crm.customer(customer_id) if crm is not None else None
    audit("customer.read", "success", who)
    return JSONResponse({
        "customer_id": customer_id,
        "customer": None if person is None else {"id": person.id, "name": person.name},
        "context": context_data,
        "window_hours": ctx.config.context_hours,
        "conversations": records,
    })  # fmt: skip
