"""Zendesk two-way sync: a ticket for each call that needs people, later events as comments, agents' replies back.

Outbound (an outbox extension, in the store's transaction): a call gets one ticket, created the
first time one of its integration events is a trigger:

- `handoff` (the answer engine asked for a human),
- `alert.high_priority` (the caller raised a matter the KB marks high priority),
- `call.ended` when the call ends unresolved: its last `suggestion` event says `resolved: false`
  (the caller's last question got no confident answer). Calls without suggestions (no answer
  engine) never count as unresolved.

The create is queued with its request body and `Idempotency-Key` frozen in the delivery, so every
retry is byte-identical (Zendesk answers 400 IdempotentRequestError to a reused key with another
body) and a create whose response was lost comes back as the same ticket. The ticket's
`external_id` is the call id; its first comment (private) holds the transcript with the
suggestions so far. Every later integration event of the call except `ticket.comment` (which came
from Zendesk: no echo) becomes a private comment carrying the turns since the previous one. The
delivery worker sends a call's Zendesk deliveries in order, so a comment waits for the create.

Requester: the CRM is not consulted (the answer engine is not reachable from the store's
transaction and calls are opened without a customer id); what the call's stored `meta` carries is
used: `customer` ({id, name, email, phone}) or flat `customer_id`, `customer_name`,
`customer_email`, `caller` (or `caller_id`). With an email it becomes the ticket's requester, else the ticket's
requester is the API user and the details are written in the first comment.

Inbound (the webhook route, voice/server/routes/zendesk.py): `verify_signature`, `parse_comment`,
`call_for_ticket` and the invocation/comment ledgers kept here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from voice.integrations.config import ZENDESK, IntegrationsConfig, Zendesk
from voice.integrations.delivery import Result, check_host, result_of
from voice.integrations.formats import TITLES
from voice.integrations.outbox import Delivery, Outbox

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS zendesk_tickets (
    call_id TEXT PRIMARY KEY,
    ticket_id INTEGER,                 -- NULL until the create delivery succeeded
    submitter_id INTEGER,              -- the API user that created it: its comments are ours
    create_delivery INTEGER NOT NULL,  -- the outbox delivery that creates it
    trigger TEXT NOT NULL,             -- handoff | high_priority | unresolved
    idempotency_key TEXT NOT NULL,
    through_seq INTEGER NOT NULL,      -- the last call event the ticket's comments quote
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS zendesk_by_ticket ON zendesk_tickets (ticket_id);
CREATE TABLE IF NOT EXISTS zendesk_comments (
    comment_id INTEGER PRIMARY KEY,    -- a Zendesk comment stored on a call (never twice)
    call_id TEXT NOT NULL, ticket_id INTEGER, seq INTEGER, received_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS zendesk_invocations (
    id TEXT PRIMARY KEY,               -- X-Zendesk-Webhook-Invocation-Id already handled
    received_at REAL NOT NULL, outcome TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS zendesk_invocations_at ON zendesk_invocations (received_at);
"""

# Integration event -> the trigger it is when the call has no ticket yet (call.ended only when
# the call ended unresolved, checked against its events).
TRIGGERS = {"handoff": "handoff", "alert.high_priority": "high_priority",
            "call.ended": "unresolved"}  # fmt: skip
PRIORITY = {"handoff": "high", "high_priority": "urgent", "unresolved": "normal"}
NO_ECHO = frozenset({"ticket.comment"})  # integration events that came from Zendesk
COMMENT_ADDED = "zen:event-type:ticket.comment_added"
SIGNATURE_TOLERANCE_S = 300.0  # a webhook signed more than 5 minutes away from our clock is refused
INVOCATIONS_KEPT_S = 7 * 86_400.0  # Zendesk retries for far less; older ids are forgotten
MAX_BODY_CHARS = 30_000  # of one comment: the oldest lines go first (the console has them all)
JSON = {"Content-Type": "application/json", "Accept": "application/json"}
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def create(db: sqlite3.Connection) -> None:
    """Create the sync's tables (the store calls this at open, with or without integrations)."""
    db.executescript(SCHEMA)


def forget(db: sqlite3.Connection, calls_sql: str, args: tuple) -> None:
    """Delete the ticket and comment rows of the calls `calls_sql` selects (retention)."""
    db.execute(f"DELETE FROM zendesk_tickets WHERE call_id IN ({calls_sql})", args)
    db.execute(f"DELETE FROM zendesk_comments WHERE call_id IN ({calls_sql})", args)


class ZendeskSync:
    """The outbox extension that queues ticket creates and comments, and the sender for them."""

    def __init__(self, config: IntegrationsConfig):
        self.config = config
        # webhook invocations and comments being handled now (the route's guard against a
        # concurrent duplicate, before the ledger tables have them)
        self.in_flight: set[str] = set()

    # --- in the store's transaction -----------------------------------------------------------

    def record(self, db: sqlite3.Connection, outbox: Outbox, call_id: str, data: dict[str, Any],
               ts: float, published: list[tuple[str, str]]) -> None:  # fmt: skip
        """Outbox extension: queue the call's ticket create or comments for what was published."""
        if self.config.zendesk is None:
            return
        if data.get("type") == "ticket_comment":
            # Stored with the event in one transaction: the webhook route's durable deduplication.
            db.execute(
                "INSERT INTO zendesk_comments (comment_id, call_id, ticket_id, seq, "
                "received_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (data.get("comment_id"), call_id, data.get("ticket_id"), data.get("seq"), ts),
            )
        for event_type, event_id in published:
            if event_type in NO_ECHO:
                continue
            ticket = _ticket_row(db, call_id)
            if ticket is not None:
                self._queue_comment(db, call_id, ticket, event_type, event_id, ts)
                continue
            trigger = TRIGGERS.get(event_type)
            if trigger == "unresolved" and not ended_unresolved(db, call_id):
                trigger = None
            if trigger is not None:
                self._queue_create(db, call_id, trigger, event_type, event_id, ts)

    def _queue_create(self, db: sqlite3.Connection, call_id: str, trigger: str, event_type: str,
                      event_id: str, ts: float) -> None:  # fmt: skip
        event = _event_data(db, event_id)
        requester, who = _requester(db, call_id)
        lines, through = _timeline(db, call_id, 0)
        head = [f"{TITLES.get(event_type, event_type)} · call {call_id}", _why(event_type, event)]
        if link := self.config.console_link(call_id):
            head.append(f"Console: {link}")
        if who:
            head.append(f"客人 Caller: {who}")
        body = _comment_text(head, ["", "對話紀錄 Transcript:"], lines)
        ticket: dict[str, Any] = {
            "subject": f"{TITLES.get(event_type, event_type)} · call {call_id}",
            "comment": {"body": body, "public": False},  # callers' words: an internal note
            "external_id": call_id,
            "priority": PRIORITY[trigger],
            "tags": ["voice_call", f"voice_{trigger}"],
        }
        if requester is not None:
            ticket["requester"] = requester
        key = f"voice-ticket-{event_id}"
        # The body is frozen as text: every retry sends these exact bytes with this key.
        payload = {"op": "create", "idempotency_key": key,
                   "body": json.dumps({"ticket": ticket}, ensure_ascii=False)}  # fmt: skip
        delivery_id = Outbox.queue(db, event_id, ZENDESK, call_id, ts, payload)
        db.execute(
            "INSERT INTO zendesk_tickets (call_id, create_delivery, trigger, idempotency_key, "
            "through_seq, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (call_id, delivery_id, trigger, key, through, ts),
        )

    def _queue_comment(self, db: sqlite3.Connection, call_id: str, ticket: sqlite3.Row | tuple,
                       event_type: str, event_id: str, ts: float) -> None:  # fmt: skip
        ticket_id, create_delivery, through_seq = ticket
        lines, through = _timeline(db, call_id, through_seq)
        head = [f"{TITLES.get(event_type, event_type)} · call {call_id}",
                _why(event_type, _event_data(db, event_id))]  # fmt: skip
        body = _comment_text(
            head, ["", "之後的對話 Since the last update:"] if lines else [], lines
        )
        payload = {"op": "comment", "ticket_id": ticket_id, "create_delivery": create_delivery,
                   "body": json.dumps({"ticket": {"comment": {"body": body, "public": False}}},
                                      ensure_ascii=False)}  # fmt: skip
        Outbox.queue(db, event_id, ZENDESK, call_id, ts, payload)
        db.execute("UPDATE zendesk_tickets SET through_seq=? WHERE call_id=?", (through, call_id))

    # --- the worker's side --------------------------------------------------------------------

    def sender(self) -> ZendeskSender:
        if self.config.zendesk is None:
            raise ValueError("the integrations file has no zendesk section")
        return ZendeskSender(self.config.zendesk, self.config.allow_private_networks)


class ZendeskSender:
    """Sends the sync's deliveries: POST a ticket (idempotent), PUT a comment on it."""

    def __init__(self, zendesk: Zendesk, allow_private: bool):
        self.zendesk = zendesk
        self.allow_private = allow_private
        self.auth = httpx.BasicAuth(f"{zendesk.email}/token", zendesk.token)

    async def send(self, delivery: Delivery, client: httpx.AsyncClient) -> Result:
        payload = delivery.payload or {}
        if payload.get("op") == "create":
            return await self._create(delivery, payload, client)
        if payload.get("op") == "comment":
            return await self._comment(delivery, payload, client)
        return Result(False, error="not a Zendesk delivery (no op in its payload)", permanent=True)

    async def _create(self, delivery: Delivery, payload: dict[str, Any],
                      client: httpx.AsyncClient) -> Result:  # fmt: skip
        url = f"{self.zendesk.url}/api/v2/tickets.json"
        if refused := await check_host(url, self.allow_private):
            return refused
        response = await client.post(url, content=payload["body"].encode(), auth=self.auth,
                                     headers={**JSON, "Idempotency-Key": payload["idempotency_key"]})  # fmt: skip
        if not 200 <= response.status_code < 300:
            return _failure(response, "create")
        ticket = _json_of(response).get("ticket") or {}
        ticket_id, submitter_id = _int(ticket.get("id")), _int(ticket.get("submitter_id"))
        if ticket_id is None:
            # A replay of this key would answer the same: retrying cannot help.
            return Result(False, response.status_code, "Zendesk answered without a ticket id",
                          permanent=True)  # fmt: skip
        call_id = delivery.call_id
        log.info("zendesk ticket %s created for call %s (idempotency %s)", ticket_id, call_id,
                 response.headers.get("x-idempotency-lookup", "-"),
                 extra={"call_id": call_id})  # fmt: skip
        return Result(True, response.status_code, after=_created(call_id, ticket_id, submitter_id))

    async def _comment(self, delivery: Delivery, payload: dict[str, Any],
                       client: httpx.AsyncClient) -> Result:  # fmt: skip
        ticket_id = _int(payload.get("ticket_id"))
        if ticket_id is None:
            create = payload.get("create_delivery")
            return Result(False, error=(
                f"call {delivery.call_id} has no Zendesk ticket: its create (delivery {create}) "
                f"failed; `voice integrations retry {create}`, then retry this one"),
                permanent=True)  # fmt: skip
        url = f"{self.zendesk.url}/api/v2/tickets/{ticket_id}.json"
        if refused := await check_host(url, self.allow_private):
            return refused
        response = await client.put(url, content=payload["body"].encode(), auth=self.auth,
                                    headers=JSON)  # fmt: skip
        if 200 <= response.status_code < 300:
            return Result(True, response.status_code)
        return _failure(response, f"comment on ticket {ticket_id}")


def _created(call_id: str | None, ticket_id: int,
             submitter_id: int | None) -> Callable[[sqlite3.Connection], None]:  # fmt: skip
    """What a successful create stores, in the transaction that marks it delivered: the ticket,
    and its id in the call's comments queued before it existed."""

    def store(db: sqlite3.Connection) -> None:
        db.execute("UPDATE zendesk_tickets SET ticket_id=?, submitter_id=? WHERE call_id=?",
                   (ticket_id, submitter_id, call_id))  # fmt: skip
        queued = db.execute(  # in Python, not json_set: the same on SQLite and PostgreSQL
            "SELECT id, payload FROM outbox_deliveries WHERE target=? AND call_id=? "
            "AND payload IS NOT NULL", (ZENDESK, call_id),
        ).fetchall()  # fmt: skip
        for delivery_id, payload in queued:
            comment = json.loads(payload)
            if comment.get("op") == "comment" and comment.get("ticket_id") is None:
                comment["ticket_id"] = ticket_id
                db.execute("UPDATE outbox_deliveries SET payload=? WHERE id=?",
                           (json.dumps(comment, ensure_ascii=False), delivery_id))  # fmt: skip

    return store


def _failure(response: httpx.Response, what: str) -> Result:
    """A refused request: 400/422 (the same body cannot succeed: a reused Idempotency-Key, an
    invalid ticket) and 404 are for good; 429/503 wait Retry-After; others back off. Only
    Zendesk's error name is kept, never its description (it may quote the request)."""
    code = response.status_code
    name = str(_json_of(response).get("error") or "")[:60]
    if code in (400, 404, 422):
        hint = {"IdempotentRequestError": "the Idempotency-Key was sent with another body",
                "RecordNotFound": "the ticket no longer exists"}.get(name, "Zendesk refused it")  # fmt: skip
        return Result(False, code, f"{what}: HTTP {code}{' ' + name if name else ''}: {hint}",
                      permanent=True)  # fmt: skip
    result = result_of(response)
    result.error = f"{what}: HTTP {code}{' ' + name if name else ''}"
    return result


# --- reading the call's events ----------------------------------------------------------------


def ended_unresolved(db: sqlite3.Connection, call_id: str) -> bool:
    """Did the call's last suggestion leave the caller's question unresolved?"""
    row = db.execute(
        "SELECT data FROM events WHERE call_id=? AND type='suggestion' ORDER BY seq DESC LIMIT 1",
        (call_id,),
    ).fetchone()
    return row is not None and json.loads(row[0]).get("resolved") is False


def _ticket_row(db: sqlite3.Connection, call_id: str) -> tuple | None:
    return db.execute(
        "SELECT ticket_id, create_delivery, through_seq FROM zendesk_tickets WHERE call_id=?",
        (call_id,),
    ).fetchone()


def _event_data(db: sqlite3.Connection, event_id: str) -> dict[str, Any]:
    row = db.execute("SELECT data FROM outbox_events WHERE id=?", (event_id,)).fetchone()
    return json.loads(row[0]) if row else {}


def _why(event_type: str, data: dict[str, Any]) -> str:
    """One line on what happened, from the integration event's data."""
    if event_type.startswith("alert."):
        kb = " ".join(str(x) for x in (data.get("category"), data.get("kb_id")) if x)
        return f"{data.get('message') or ''}{f' (KB {kb})' if kb else ''}".strip()
    if event_type == "handoff":
        return f"原因 Reason: {data.get('reason') or '-'}"
    if event_type == "call.ended":
        duration = data.get("duration")
        spoken = f"{duration:.0f} s, " if isinstance(duration, int | float) else ""
        return f"{spoken}{data.get('utterances')} utterances"
    if event_type.startswith("referral."):
        return f"部門 Department: {data.get('department')}, deadline {data.get('deadline')}"
    return ""


def _timeline(db: sqlite3.Connection, call_id: str, after_seq: int) -> tuple[list[str], int]:
    """The call's turns after `after_seq` as lines (caller's words, best suggestion, whether it
    was resolved, alerts), and the last seq stored."""
    lines: list[str] = []
    rows = db.execute(
        "SELECT seq, type, data FROM events WHERE call_id=? AND seq>? AND type IN "
        "('transcript', 'suggestion', 'alert', 'handoff') ORDER BY seq",
        (call_id, after_seq),
    ).fetchall()
    for _, kind, raw in rows:
        data = json.loads(raw)
        at = _clock(data.get("start"))
        if kind == "transcript":
            lines.append(f"[{at}] 客人 Caller: {data.get('text', '')}")
        elif kind == "suggestion":
            best = (data.get("suggestions") or [None])[0]
            if best:
                lines.append(f"        建議 Suggestion {best.get('category')}/{best.get('id')} "
                             f"({best.get('score')}): {best.get('reply')}")  # fmt: skip
            if data.get("resolved") is False:
                lines.append("        未解決 Unresolved")
        elif kind == "alert":
            lines.append(f"[{at}] ⚠ {data.get('message', '')}")
        else:
            lines.append(f"[{at}] ⚠ {TITLES['handoff']}: {data.get('reason', '')}")
    last = db.execute(
        "SELECT coalesce(max(seq), 0) FROM events WHERE call_id=?", (call_id,)
    ).fetchone()[0]
    return lines, max(last, after_seq)


def _comment_text(head: list[str], intro: list[str], lines: list[str]) -> str:
    """Head, then the timeline; the timeline's oldest lines are cut to keep it under
    MAX_BODY_CHARS."""
    text = "\n".join([*(h for h in head if h), *intro, *lines])
    cut = 0
    while len(text) > MAX_BODY_CHARS and cut < len(lines):
        cut += max(1, len(lines) // 10)
        rest = [f"… ({min(cut, len(lines))} earlier lines: see the console)", *lines[cut:]]
        text = "\n".join([*(h for h in head if h), *intro, *rest])
    return text[:MAX_BODY_CHARS]


def _clock(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "--:--"
    return f"{int(seconds) // 60:02d}:{int(seconds) % 60:02d}"


def _requester(db: sqlite3.Connection, call_id: str) -> tuple[dict[str, str] | None, str]:
    """(the ticket's requester, or None; a line describing the caller) from the call's meta."""
    row = db.execute("SELECT meta FROM calls WHERE id=?", (call_id,)).fetchone()
    meta = json.loads(row[0]) if row else {}
    customer = meta.get("customer") if isinstance(meta.get("customer"), dict) else {}

    def field(name: str, *flat: str) -> str:
        value = customer.get(name) or next((meta.get(k) for k in flat if meta.get(k)), None)
        return str(value)[:200] if value else ""

    email = field("email", "customer_email")
    name = field("name", "customer_name")
    phone = field("phone", "caller", "caller_id", "customer_phone")
    customer_id = field("id", "customer_id")
    requester = {"name": name or email, "email": email} if EMAIL.match(email) else None
    who = ", ".join(p for p in (name, email, phone, customer_id and f"customer {customer_id}") if p)
    return requester, who


# --- the webhook's side -----------------------------------------------------------------------


@dataclass(frozen=True)
class IncomingComment:
    """A `ticket.comment_added` event, the fields the call needs."""

    event_id: str | None
    ticket_id: int
    external_id: str | None
    comment_id: int
    author_id: int | None
    author: str
    is_staff: bool | None
    body: str


class BadEvent(ValueError):
    """A webhook body that is not the event it claims to be; the message names the field."""


def verify_signature(secret: str, signature: str | None, timestamp: str | None, body: bytes,
                     now: float | None = None) -> str | None:  # fmt: skip
    """None if `signature` is base64(HMAC-SHA256(secret, timestamp + body)) and `timestamp` is
    within SIGNATURE_TOLERANCE_S of now; else why not (for the audit log, not the caller)."""
    if not signature or not timestamp:
        return "unsigned"
    signed_at = _timestamp(timestamp)
    if signed_at is None:
        return "bad timestamp"
    now = time.time() if now is None else now
    if abs(now - signed_at) > SIGNATURE_TOLERANCE_S:
        return "stale timestamp"
    expected = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    try:
        given = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return "bad signature"
    return None if hmac.compare_digest(expected, given) else "bad signature"


def _timestamp(value: str) -> float | None:
    """Zendesk signs with an ISO-8601 UTC time (2024-05-01T10:00:00Z); Unix seconds also pass."""
    try:
        return float(value) if value.isdigit() else datetime.fromisoformat(value).timestamp()
    except (ValueError, OverflowError):
        return None


def event_type(event: Any) -> str:
    if not isinstance(event, dict):
        raise BadEvent("the body must be a JSON object")
    kind = event.get("type")
    if not isinstance(kind, str):
        raise BadEvent("type: missing")
    return kind


def parse_comment(event: dict[str, Any]) -> IncomingComment:
    """The comment of a `zen:event-type:ticket.comment_added` event; BadEvent names what is wrong."""
    detail = event.get("detail")
    if not isinstance(detail, dict):
        raise BadEvent("detail: missing")
    ticket_id = _int(detail.get("id"))
    if ticket_id is None:
        raise BadEvent("detail.id: the ticket id is missing or not a number")
    inner = event.get("event")
    comment = inner.get("comment") if isinstance(inner, dict) else None
    if not isinstance(comment, dict):
        raise BadEvent("event.comment: missing")
    comment_id = _int(comment.get("id"))
    if comment_id is None:
        raise BadEvent("event.comment.id: missing or not a number")
    body = comment.get("body")
    if not isinstance(body, str):
        raise BadEvent("event.comment.body: missing or not text")
    author = comment.get("author") if isinstance(comment.get("author"), dict) else {}
    author_id = _int(author.get("id"))
    name = author.get("name") if isinstance(author.get("name"), str) else ""
    staff = author.get("is_staff")
    external = detail.get("external_id")
    return IncomingComment(
        event_id=str(event["id"]) if event.get("id") else None,
        ticket_id=ticket_id,
        external_id=str(external) if external not in (None, "") else None,
        comment_id=comment_id,
        author_id=author_id,
        author=name or (f"Zendesk user {author_id}" if author_id else "Zendesk"),
        is_staff=staff if isinstance(staff, bool) else None,
        body=body,
    )


def call_for_ticket(db: sqlite3.Connection, ticket_id: int, external_id: str | None) -> str | None:
    """The call a ticket belongs to: the one we created it for, else its external_id (a ticket
    made by hand for a call); None when neither is known."""
    row = db.execute(
        "SELECT call_id FROM zendesk_tickets WHERE ticket_id=?", (ticket_id,)
    ).fetchone()
    return row[0] if row else external_id


def our_users(db: sqlite3.Connection) -> set[int]:
    """The Zendesk users our API token acts as (the submitters of the tickets we created)."""
    rows = db.execute(
        "SELECT DISTINCT submitter_id FROM zendesk_tickets WHERE submitter_id IS NOT NULL"
    )
    return {r[0] for r in rows}


def invocation_seen(db: sqlite3.Connection, invocation_id: str) -> bool:
    return (
        db.execute("SELECT 1 FROM zendesk_invocations WHERE id=?", (invocation_id,)).fetchone()
        is not None
    )


def comment_seen(db: sqlite3.Connection, comment_id: int) -> bool:
    return (
        db.execute("SELECT 1 FROM zendesk_comments WHERE comment_id=?", (comment_id,)).fetchone()
        is not None
    )


def remember_invocation(db: sqlite3.Connection, invocation_id: str, outcome: str,
                        now: float | None = None) -> None:  # fmt: skip
    """Record a handled invocation (and forget those older than INVOCATIONS_KEPT_S)."""
    now = time.time() if now is None else now
    db.execute("INSERT INTO zendesk_invocations (id, received_at, outcome) "
               "VALUES (?, ?, ?) ON CONFLICT DO NOTHING", (invocation_id, now, outcome))  # fmt: skip
    db.execute("DELETE FROM zendesk_invocations WHERE received_at < ?", (now - INVOCATIONS_KEPT_S,))


def _int(value: Any) -> int | None:
    """Zendesk ids: numbers in the API, strings in event payloads."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


def _json_of(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


__all__ = [
    "COMMENT_ADDED",
    "SCHEMA",
    "BadEvent",
    "IncomingComment",
    "ZendeskSender",
    "ZendeskSync",
    "call_for_ticket",
    "comment_seen",
    "create",
    "ended_unresolved",
    "event_type",
    "forget",
    "invocation_seen",
    "our_users",
    "parse_comment",
    "remember_invocation",
    "verify_signature",
]
