"""Text conversations (web chat, WhatsApp, WeChat): each customer message answered like a call's
utterance, stored and fanned out by the hub like a call's events.

A conversation is a row in `calls` with protocol = its channel and meta {customer_id, channel};
each customer message is a `message` event followed by the suggestion, alert, handoff (and
referral) events of the customer's answer session, which shares its context with their calls
(customers.py). While open it is in `hub.calls` (so the console follows it live) without taking
one of the audio slots (`max_calls`). It ends, as `completed` with an `end` event, after
`conversation_idle_s` without a message; the customer's next message on that channel starts a new
one. Messages of one conversation are answered one at a time, in arrival order.

Channel message ids (WhatsApp's wamid) are remembered in `channel_messages`, so a message the
channel delivers twice is answered once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voice.server import customers
from voice.types import EndEvent, MessageEvent, TranscriptEvent

if TYPE_CHECKING:
    from voice.server.calls import CallHub

log = logging.getLogger(__name__)

CHANNELS = ("web", "whatsapp", "wechat")
CONVERSATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")  # a client's own id
MAX_CUSTOMER_ID = 64  # characters, as for a call's customer_id (serializers.MAX_CALLER)

SCHEMA = """
CREATE TABLE IF NOT EXISTS channel_messages (
    channel TEXT NOT NULL, message_id TEXT NOT NULL, call_id TEXT NOT NULL,
    received_at REAL NOT NULL, PRIMARY KEY (channel, message_id)
);
CREATE INDEX IF NOT EXISTS channel_messages_by_call ON channel_messages (call_id);
"""


def create(db) -> None:
    """Create the channel message table (the store calls this at open)."""
    for statement in SCHEMA.split(";"):
        if statement.strip():
            db.execute(statement)


def forget(db, calls_sql: str, args: tuple) -> None:
    """Delete the message ids of the conversations `calls_sql` selects (retention)."""
    db.execute(f"DELETE FROM channel_messages WHERE call_id IN ({calls_sql})", args)


def _claim(db, channel: str, message_id: str, call_id: str, now: float) -> bool:
    """Remember a channel's message id; False if it was already (a redelivery)."""
    inserted = db.execute(
        "INSERT INTO channel_messages (channel, message_id, call_id, received_at) "
        "VALUES (?, ?, ?, ?) ON CONFLICT (channel, message_id) DO NOTHING",
        (channel, message_id, call_id, now),
    )
    return inserted.rowcount == 1


def _seen(db, channel: str, message_id: str) -> str | None:
    """The conversation a channel's message id went to, if it came before."""
    row = db.execute(
        "SELECT call_id FROM channel_messages WHERE channel = ? AND message_id = ?",
        (channel, message_id),
    ).fetchone()
    return None if row is None else row[0]


class Conflict(Exception):
    """A conversation id that cannot take this message (another customer's, a call's, ended)."""


@dataclass(frozen=True)
class Reply:
    """What one message produced: its conversation and the answer events (wire form)."""

    conversation_id: str
    events: list[dict[str, Any]]
    duplicate: bool = False


class TextConversation:
    """One open text conversation; the hub treats it as a call (publish, route, close)."""

    def __init__(self, hub: CallHub, call_id: str, channel: str, customer_id: str,
                 owner: str | None):  # fmt: skip
        self.hub = hub
        self.call_id = call_id
        self.protocol = channel
        self.customer_id = customer_id
        self.agent: str | None = None
        self.owner = owner
        self.next_seq = 1
        self.store_error: Exception | None = None
        self.opened = time.monotonic()
        self.last_message = self.opened
        self.messages = 0
        self.lock = asyncio.Lock()
        self.session = customers.call_session(hub, call_id, customer_id, channel)
        self.saved_at = 0.0  # updated_at of the context this conversation last wrote or read
        self._finished = False
        self._idle = asyncio.get_running_loop().create_task(self._end_when_idle())

    async def message(self, text: str, message_id: str = "") -> list[dict[str, Any]] | None:
        """Answer one customer message: publish it and its answer events; return the latter.
        None if the conversation ended meanwhile (idle) or could not be stored."""
        async with self.lock:
            if self._finished or self.store_error is not None:
                return None
            self.last_message = time.monotonic()
            self.messages += 1
            at = round(self.last_message - self.opened, 3)
            self._refresh()
            events = []
            if self.session is not None:
                turn = TranscriptEvent(self.call_id, at, at, text, 0.0)
                events = await asyncio.to_thread(self.session.events, turn)
            language = self.session.language if self.session is not None else "yue-Hant-HK"
            self.hub.publish(self, MessageEvent(self.call_id, self.protocol, text,
                                                self.customer_id, language, message_id, at, at))  # fmt: skip
            for event in events:
                self.hub.publish(self, event)
            referrals = self.hub.route(self, events)
            for referral in referrals:
                self.hub.publish(self, referral)
            # the store thread runs writes in order: once this one is done, so are the events
            await self.hub.run_write(lambda: None)
            # never the words (PDPO): their length and what the answer engine made of them
            log.info("message answered: %d chars, %s", len(text),
                     ", ".join(e.type for e in events) or "no answer engine",
                     extra={"call_id": self.call_id})  # fmt: skip
            return [e.to_dict() for e in [*events, *referrals]]

    def _refresh(self) -> None:
        """Take up what the customer's other conversations (a call meanwhile) left since."""
        session = getattr(self.session, "session", None)  # the SharedSession's AnswerSession
        if session is None:
            return
        context = customers.context_for(self.hub, self.customer_id)
        if context is not None and context.updated_at > self.saved_at:
            if self.messages > 1:  # the first message started from it already
                session.resume(context)
            self.saved_at = context.updated_at

    async def finish(self, status: str = "completed") -> None:
        if self._finished:
            return
        self._finished = True
        if self._idle is not asyncio.current_task():
            self._idle.cancel()
        async with self.lock:
            duration = round(time.monotonic() - self.opened, 3)
            await self.hub.close(self, status, EndEvent(self.call_id, duration, self.messages))

    async def _end_when_idle(self) -> None:
        idle = self.hub.config.conversation_idle_s
        while True:
            due = self.last_message + idle - time.monotonic()
            if due <= 0 and not self.lock.locked():
                break
            await asyncio.sleep(max(due, 0.05))
        with contextlib.suppress(Exception):
            await self.finish("completed")


def _new_id(channel: str) -> str:
    return f"{channel}-{secrets.token_urlsafe(18)}"  # unguessable: the id names the record


def open_conversation(hub: CallHub, channel: str, customer_id: str, owner: str | None,
                      conversation_id: str | None = None,
                      meta: dict[str, Any] | None = None) -> TextConversation:  # fmt: skip
    """Start a conversation (a new id unless the client named one) and store it."""
    call_id = conversation_id or _new_id(channel)
    conv = TextConversation(hub, call_id, channel, customer_id, owner)
    hub.calls[call_id] = conv
    record = {**(meta or {}), "customer_id": customer_id, "channel": channel}
    if customers.in_crm(customer_id) and (person := hub._customer(customer_id)):
        record["customer"] = person  # the CRM's name, as a call's record has it
    now = time.time()
    # the hub's own write path: a store failure ends the conversation as it ends a call
    hub._write(conv, hub.store.open_call, call_id, channel, None, owner, record, now)
    hub._write(conv, hub.store.transact, customers.link, customer_id, call_id, channel, now)
    hub.metrics.calls.inc(protocol=channel)
    log.info("conversation started", extra={"call_id": call_id, "protocol": channel})
    return conv


def find_conversation(hub: CallHub, channel: str, customer_id: str,
                      conversation_id: str | None) -> TextConversation | None:  # fmt: skip
    """The open conversation a message continues, or None for a new one. Raises Conflict for an
    id that is a call's, another customer's or another channel's, or a conversation that ended."""
    if conversation_id is None:
        mine = [c for c in hub.calls.values() if isinstance(c, TextConversation)
                and c.customer_id == customer_id and c.protocol == channel and not c._finished]  # fmt: skip
        return max(mine, key=lambda c: c.last_message) if mine else None
    live = hub.calls.get(conversation_id)
    if isinstance(live, TextConversation) and not live._finished:
        if live.customer_id != customer_id:
            raise Conflict("conversation_id belongs to another customer")
        if live.protocol != channel:
            raise Conflict(f"conversation_id is a {live.protocol} conversation, not {channel}")
        return live
    if live is not None or hub.store.summary(conversation_id) is not None:
        owner = customers.customer_of(hub.store.db, conversation_id)
        if owner is not None and owner != customer_id:
            raise Conflict("conversation_id belongs to another customer")
        raise Conflict("conversation_id names a call or a conversation that has ended; omit it "
                       "to start a new conversation")  # fmt: skip
    return None


async def handle_message(hub: CallHub, channel: str, customer_id: str, text: str, *,
                         owner: str | None = None, conversation_id: str | None = None,
                         message_id: str = "", meta: dict[str, Any] | None = None) -> Reply:  # fmt: skip
    """The one path of every text channel: find or open the conversation, answer the message.
    Raises Conflict (see find_conversation)."""
    if message_id and _seen(hub.store.db, channel, message_id):
        return Reply(_seen(hub.store.db, channel, message_id) or "", [], duplicate=True)
    conv = find_conversation(hub, channel, customer_id, conversation_id)
    if conv is None:
        conv = open_conversation(hub, channel, customer_id, owner, conversation_id, meta)
    if message_id:
        claimed = await hub.run_write(hub.store.transact, _claim, channel, message_id,
                                      conv.call_id, time.time())  # fmt: skip
        if not claimed:
            return Reply(conv.call_id, [], duplicate=True)
    events = await conv.message(text, message_id)
    if events is None:  # it ended between finding it and answering: a new one takes the message
        if conversation_id is not None:
            raise Conflict("the conversation has ended; omit conversation_id to start a new one")
        conv = open_conversation(hub, channel, customer_id, owner, None, meta)
        events = await conv.message(text, message_id) or []
    return Reply(conv.call_id, events)


__all__ = [
    "CHANNELS",
    "SCHEMA",
    "Conflict",
    "Reply",
    "TextConversation",
    "create",
    "forget",
    "handle_message",
    "find_conversation",
    "open_conversation",
]
