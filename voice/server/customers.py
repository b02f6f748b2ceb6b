"""Context per customer across calls and text channels: the shared session state and the timeline.

Two tables (portable SQL: `?` parameters, TEXT/INTEGER/REAL, JSON kept in TEXT and parsed here):
- `customer_context`: one row per customer id, the answer session's state after the customer's
  last turn on any channel (voice.answer.context.CustomerContext). A row older than the window
  (`ServerConfig.context_hours`, default 24 h) is ignored when read and deleted at the next write.
- `customer_conversations`: which calls and text conversations were the customer's, for the
  console's timeline; deleted with their calls by retention (`forget`).

Who a caller is: the start message's `customer_id`, else the CRM's customer with the caller's
number (`caller`), else the WhatsApp customer with that number (`whatsapp:<wa_id>`, the id a
WhatsApp sender the CRM does not know gets: `channel_id`) if they wrote before, else nobody (no
context is kept for an unknown caller). Ids with a colon are never looked up in the CRM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from voice.answer.context import CustomerContext, Topic
from voice.answer.crm import customer_by_phone, phone_keys
from voice.types import SAMPLE_RATE, Event, TranscriptEvent

if TYPE_CHECKING:
    from voice.server.calls import CallHub
    from voice.server.serializers import Start

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS customer_context (
    customer_id TEXT PRIMARY KEY, updated_at REAL NOT NULL, language TEXT NOT NULL,
    unresolved INTEGER NOT NULL, order_id TEXT, topics TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS customer_context_by_time ON customer_context (updated_at);
CREATE TABLE IF NOT EXISTS customer_conversations (
    customer_id TEXT NOT NULL, call_id TEXT NOT NULL, channel TEXT NOT NULL,
    started_at REAL NOT NULL, PRIMARY KEY (customer_id, call_id)
);
CREATE INDEX IF NOT EXISTS customer_conversations_by_call ON customer_conversations (call_id);
"""
HOUR_S = 3600.0


def channel_id(channel: str, handle: str) -> str:
    """The customer id of someone the CRM does not know, by their handle on a channel."""
    return f"{channel}:{handle}"


def in_crm(customer_id: str | None) -> bool:
    """Whether an id may be the CRM's (channel-scoped ids, with a colon, never are)."""
    return bool(customer_id) and ":" not in customer_id


def create(db) -> None:
    """Create the tables (the store calls this at open)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def forget(db, calls_sql: str, args: tuple) -> None:
    """Delete the timeline links of the calls `calls_sql` selects (retention, with their calls)."""
    db.execute(f"DELETE FROM customer_conversations WHERE call_id IN ({calls_sql})", args)


# --- context --------------------------------------------------------------------------------------


def save(db, context: CustomerContext, window_s: float) -> None:
    """Write a customer's context (one store transaction) and delete contexts past the window."""
    topics = json.dumps([t.to_dict() for t in context.topics], ensure_ascii=False)
    db.execute(
        "INSERT INTO customer_context (customer_id, updated_at, language, unresolved, order_id, "
        "topics) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (customer_id) DO UPDATE SET "
        "updated_at = excluded.updated_at, language = excluded.language, "
        "unresolved = excluded.unresolved, order_id = excluded.order_id, topics = excluded.topics",
        (context.customer_id, context.updated_at, context.language, context.unresolved,
         context.order_id, topics),
    )  # fmt: skip
    purge(db, context.updated_at - window_s)


def purge(db, before: float) -> int:
    """Delete contexts last written before `before` (Unix seconds); returns how many."""
    return db.execute("DELETE FROM customer_context WHERE updated_at < ?", (before,)).rowcount


def load(db, customer_id: str, window_s: float, now: float | None = None) -> CustomerContext | None:
    """The customer's context if written within the window, else None."""
    now = time.time() if now is None else now
    row = db.execute(
        "SELECT updated_at, language, unresolved, order_id, topics FROM customer_context "
        "WHERE customer_id = ? AND updated_at >= ?",
        (customer_id, now - window_s),
    ).fetchone()
    if row is None:
        return None
    try:
        topics = tuple(Topic.from_dict(t) for t in json.loads(row[4]))
    except (ValueError, KeyError, TypeError):
        log.warning("customer context of %s has unreadable topics; dropped", customer_id)
        topics = ()
    return CustomerContext(customer_id, row[1], int(row[2]), row[3], topics, float(row[0]))


# --- timeline -------------------------------------------------------------------------------------


def link(db, customer_id: str, call_id: str, channel: str, started_at: float) -> None:
    """Note that a call or text conversation is the customer's (for the timeline)."""
    db.execute(
        "INSERT INTO customer_conversations (customer_id, call_id, channel, started_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (customer_id, call_id) DO NOTHING",
        (customer_id, call_id, channel, started_at),
    )


def customer_of(db, call_id: str) -> str | None:
    """The customer a call or conversation belongs to, or None."""
    row = db.execute(
        "SELECT customer_id FROM customer_conversations WHERE call_id = ? ORDER BY started_at",
        (call_id,),
    ).fetchone()
    return None if row is None else row[0]


def conversations(db, customer_id: str, limit: int = 200) -> list[str]:
    """The ids of the customer's calls and text conversations, oldest first (the newest `limit`)."""
    rows = db.execute(
        "SELECT call_id FROM customer_conversations WHERE customer_id = ? "
        "ORDER BY started_at DESC, call_id LIMIT ?",
        (customer_id, limit),
    ).fetchall()
    return [r[0] for r in reversed(rows)]


# --- the server's side ----------------------------------------------------------------------------


def window_s(hub: CallHub) -> float:
    return hub.config.context_hours * HOUR_S


def known(db, customer_id: str) -> bool:
    """Whether the customer has any call or conversation on record."""
    row = db.execute(
        "SELECT 1 FROM customer_conversations WHERE customer_id = ? LIMIT 1", (customer_id,)
    ).fetchone()
    return row is not None


def identified(start: Start, crm: Any, db: Any = None) -> Start:
    """`start` with `customer_id` in its meta when the bridge did not send one but the caller's
    number (`caller`) is the CRM's customer's, or (with the store's `db`) a WhatsApp customer's
    who is not in the CRM."""
    caller = start.meta.get("caller")
    if start.meta.get("customer_id") or not caller:
        return start
    found = customer_by_phone(crm, caller)
    customer_id = found.id if found is not None else None
    if customer_id is None and db is not None:
        # WhatsApp ids are the number with its country code: 85291234567
        for key in phone_keys(caller):
            if known(db, channel_id("whatsapp", key)):
                customer_id = channel_id("whatsapp", key)
                break
    if customer_id is None:
        return start
    return replace(start, meta={**start.meta, "customer_id": customer_id})


def context_for(hub: CallHub, customer_id: str | None) -> CustomerContext | None:
    """The customer's stored context within the window (read on the event loop), or None."""
    if not customer_id or hub.config.context_hours <= 0:
        return None
    return load(hub.store.db, customer_id, window_s(hub))


def saver(hub: CallHub) -> Callable[[CustomerContext], asyncio.Future | None]:
    """A function that queues a context write on the store thread; callable from any thread
    (a call's answer engine runs in a worker thread)."""
    loop = asyncio.get_running_loop()

    def write(context: CustomerContext) -> asyncio.Future | None:
        if not context.customer_id or hub.config.context_hours <= 0:
            return None
        future = hub.run_write(hub.store.transact, save, context, window_s(hub))
        future.add_done_callback(_log_failure)
        return future

    def save_soon(context: CustomerContext) -> asyncio.Future | None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return write(context)
        loop.call_soon_threadsafe(write, context)
        return None

    return save_soon


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("saving a customer context failed: %s", future.exception())


class SharedSession:
    """A call's answer session that saves the customer's context after every answered turn
    (an AnswerHook for voice.pipeline.CallSession; everything else is the AnswerSession's)."""

    def __init__(self, session: Any, save: Callable[[CustomerContext], Any]):
        self.session = session
        self._save = save

    def events(self, transcript: TranscriptEvent, audio=None,
               sample_rate: int = SAMPLE_RATE) -> list[Event]:  # fmt: skip
        events = self.session.events(transcript, audio, sample_rate)
        if events:
            self._save(self.session.context())
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self.session, name)


def call_session(hub: CallHub, call_id: str, customer_id: str | None, channel: str) -> Any:
    """The answer session for a call or conversation (None without an answer engine): started
    from the customer's context, saving it back after each turn when the customer is known."""
    engine = hub.answer_engine
    if engine is None:
        return None
    context = context_for(hub, customer_id)
    session = engine.session(call_id, customer_id if in_crm(customer_id) else None, context,
                             channel)  # fmt: skip
    session.customer_id = customer_id
    if not customer_id:
        return session
    return SharedSession(session, saver(hub))


__all__ = [
    "SCHEMA",
    "create",
    "forget",
    "save",
    "load",
    "purge",
    "link",
    "customer_of",
    "conversations",
    "identified",
    "context_for",
    "call_session",
    "SharedSession",
]
