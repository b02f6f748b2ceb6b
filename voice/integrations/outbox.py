"""The transactional outbox: integration events and their deliveries, stored with the call event.

`Outbox.record` runs inside the store's transaction for each call event (like the analytics
rollups): it turns the event into integration events (`alert.high_priority`, `handoff`, ...) and
queues one delivery per interested target. Nothing is sent here; `delivery.py`'s worker sends what
is due, so an event is either stored with its deliveries or not at all, and a delivery pending
when the server stops is sent after it starts again.

Delivery states: `pending` (due at `next_at`), `delivered`, `dead` (attempts used up or refused for
good; `voice integrations retry ID` queues it again). A target disabled by a 410 keeps its pending
deliveries until it is enabled again.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from voice.integrations.config import IntegrationsConfig

SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, call_id TEXT, ts REAL NOT NULL, data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL, target TEXT NOT NULL,
    call_id TEXT, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    last_code INTEGER, last_error TEXT, latency_ms REAL, payload TEXT
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox_deliveries (status, next_at);
CREATE INDEX IF NOT EXISTS outbox_by_call ON outbox_deliveries (target, call_id, id);
CREATE TABLE IF NOT EXISTS outbox_targets (
    name TEXT PRIMARY KEY, disabled_at REAL, reason TEXT
);
"""
PENDING, DELIVERED, DEAD = "pending", "delivered", "dead"
STATUSES = (PENDING, DELIVERED, DEAD)


class Extension(Protocol):
    """Something besides the webhooks that reacts to call events in the store's transaction
    (the Zendesk sync, referrals)."""

    def record(self, db: sqlite3.Connection, outbox: Outbox, call_id: str, data: dict[str, Any],
               ts: float, published: list[tuple[str, str]]) -> None: ...  # fmt: skip


@dataclass(frozen=True)
class Delivery:
    """One pending send of one event to one target, as the worker reads it."""

    id: int
    event_id: str
    event_type: str
    target: str
    call_id: str | None
    attempts: int
    ts: float  # when the event happened
    data: dict[str, Any]  # the event's data
    payload: dict[str, Any] | None  # what a target froze at queue time (Zendesk's create body)

    def body(self) -> dict[str, Any]:
        """The JSON body of webhooks: type, ISO-8601 timestamp, data."""
        return {"type": self.event_type, "timestamp": iso(self.ts), "data": self.data}


class Outbox:
    """Queues integration events and deliveries; read and updated by the delivery worker."""

    def __init__(self, config: IntegrationsConfig, extensions: Iterable[Extension] = ()):
        self.config = config
        self.extensions = list(extensions)

    @staticmethod
    def create(db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)

    # --- in the store's transaction -----------------------------------------------------------

    def record(self, db: sqlite3.Connection, call_id: str, seq: int, data: dict[str, Any],
               ts: float) -> None:  # fmt: skip
        """Queue what a stored call event means for the integrations."""
        published = []
        for event_type, event_data in self.translate(db, call_id, data):
            event_id = self.publish(db, event_type, call_id, event_data, ts)
            published.append((event_type, event_id))
        for extension in self.extensions:
            extension.record(db, self, call_id, data, ts, published)

    def publish(self, db: sqlite3.Connection, event_type: str, call_id: str | None,
                data: dict[str, Any], ts: float) -> str:  # fmt: skip
        """Store an integration event and queue it for every webhook that wants its type;
        returns its id (the `webhook-id` receivers deduplicate by)."""
        event_id = "msg_" + uuid.uuid4().hex
        db.execute(
            "INSERT INTO outbox_events (id, type, call_id, ts, data) VALUES (?, ?, ?, ?, ?)",
            (event_id, event_type, call_id, ts, json.dumps(data, ensure_ascii=False)),
        )
        for endpoint in self.config.webhooks:
            if event_type in endpoint.events:
                self.queue(db, event_id, endpoint.name, call_id, ts)
        return event_id

    @staticmethod
    def queue(db: sqlite3.Connection, event_id: str, target: str, call_id: str | None, ts: float,
              payload: dict[str, Any] | None = None) -> int:  # fmt: skip
        """A pending delivery of an event to a target, due now; returns the delivery's id."""
        return db.execute(
            "INSERT INTO outbox_deliveries (event_id, target, call_id, status, next_at, "
            "created_at, updated_at, payload) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?) RETURNING id",
            (event_id, target, call_id, ts, ts, ts,
             None if payload is None else json.dumps(payload, ensure_ascii=False)),
        ).fetchone()[0]  # fmt: skip

    def translate(self, db: sqlite3.Connection, call_id: str,
                  data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:  # fmt: skip
        """The integration events (type, data) a call event stands for; each carries no more of
        the caller's words than the event needs."""
        kind = data.get("type")
        link = {"console_url": self.config.console_link(call_id)}
        if kind == "alert" and data.get("alert") in ("priority", "sentiment"):
            turn = turn_of(db, call_id, data.get("start"))
            details = data.get("details") or {}
            alert = {"call_id": call_id, "start": data.get("start"), "end": data.get("end"),
                     "text": turn["text"], "kb_id": turn["kb_id"],
                     "category": turn["category"], "message": data.get("message")}  # fmt: skip
            if data["alert"] == "priority":
                alert["kb_id"] = details.get("id") or turn["kb_id"]
                alert["category"] = details.get("category") or turn["category"]
                return [("alert.high_priority", {**alert, **link})]
            return [("alert.negative", {**alert, "level": details.get("level"), **link})]
        if kind == "handoff":
            turn = turn_of(db, call_id, data.get("start"))
            return [("handoff", {"call_id": call_id, "reason": data.get("reason"),
                                 "start": data.get("start"), "end": data.get("end"),
                                 **turn, **link})]  # fmt: skip
        if kind == "end":
            return [("call.ended", {"call_id": call_id, "duration": data.get("duration"),
                                    "utterances": data.get("utterances"), **link})]  # fmt: skip
        if kind in EVENT_DATA:
            fields = EVENT_DATA[kind]
            return [(fields[0], {"call_id": call_id, **{k: data.get(k) for k in fields[1]},
                                 **link})]  # fmt: skip
        return []

    # --- the worker's reads and writes --------------------------------------------------------

    @staticmethod
    def due(db: sqlite3.Connection, now: float, disabled: set[str], limit: int = 50,
            exclude: set[int] = frozenset()) -> list[Delivery]:  # fmt: skip
        """Pending deliveries due by `now`, oldest first; of a target's deliveries for one call
        only the oldest pending one (a ticket's comment waits for the ticket, events keep order)."""
        rows = db.execute(
            "SELECT d.id, d.event_id, e.type, d.target, d.call_id, d.attempts, e.ts, e.data, "
            "d.payload FROM outbox_deliveries d JOIN outbox_events e ON e.id = d.event_id "
            "WHERE d.status='pending' AND d.next_at <= ? AND NOT EXISTS ("
            "  SELECT 1 FROM outbox_deliveries p WHERE p.status='pending' AND p.target=d.target "
            "  AND p.call_id = d.call_id AND d.call_id IS NOT NULL AND p.id < d.id) "
            "ORDER BY d.next_at, d.id LIMIT ?",
            (now, limit + len(exclude)),
        ).fetchall()
        out = []
        for row in rows:
            if row[0] in exclude or row[3] in disabled:
                continue
            out.append(Delivery(row[0], row[1], row[2], row[3], row[4], row[5], row[6],
                                json.loads(row[7]), json.loads(row[8]) if row[8] else None))  # fmt: skip
        return out[:limit]

    @staticmethod
    def next_due(db: sqlite3.Connection) -> float | None:
        row = db.execute(
            "SELECT min(next_at) FROM outbox_deliveries WHERE status='pending'"
        ).fetchone()
        return row[0]

    @staticmethod
    def settle(db: sqlite3.Connection, delivery_id: int, status: str, attempts: int,
               next_at: float, code: int | None, error: str | None,
               latency_ms: float | None) -> None:  # fmt: skip
        """Record one attempt's outcome."""
        db.execute(
            "UPDATE outbox_deliveries SET status=?, attempts=?, next_at=?, last_code=?, "
            "last_error=?, latency_ms=?, updated_at=? WHERE id=?",
            (status, attempts, next_at, code, error and error[:500], latency_ms, time.time(),
             delivery_id),
        )  # fmt: skip

    @staticmethod
    def disable(db: sqlite3.Connection, target: str, reason: str) -> None:
        db.execute(
            "INSERT INTO outbox_targets (name, disabled_at, reason) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO UPDATE SET disabled_at=excluded.disabled_at, "
            "reason=excluded.reason",
            (target, time.time(), reason),
        )

    @staticmethod
    def enable(db: sqlite3.Connection, target: str) -> bool:
        return db.execute("DELETE FROM outbox_targets WHERE name=?", (target,)).rowcount > 0

    @staticmethod
    def disabled(db: sqlite3.Connection) -> dict[str, str]:
        return dict(db.execute("SELECT name, reason FROM outbox_targets"))

    @staticmethod
    def retry(db: sqlite3.Connection, delivery_id: int) -> str | None:
        """Queue a delivery again now (whatever its state) and enable its target; returns the
        target, or None if there is no such delivery."""
        row = db.execute(
            "SELECT target FROM outbox_deliveries WHERE id=?", (delivery_id,)
        ).fetchone()
        if row is None:
            return None
        now = time.time()
        db.execute(
            "UPDATE outbox_deliveries SET status='pending', attempts=0, next_at=?, updated_at=? "
            "WHERE id=?",
            (now, now, delivery_id),
        )
        db.execute("DELETE FROM outbox_targets WHERE name=?", (row[0],))
        return row[0]

    @staticmethod
    def deliveries(db: sqlite3.Connection, status: str | None = None, target: str | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:  # fmt: skip
        """Recent deliveries, newest first, without the events' data (it may quote callers)."""
        where, args = [], []
        if status:
            where.append("d.status=?")
            args.append(status)
        if target:
            where.append("d.target=?")
            args.append(target)
        sql = ("SELECT d.id, d.event_id, e.type, d.target, d.call_id, d.status, d.attempts, "
               "d.next_at, d.created_at, d.updated_at, d.last_code, d.last_error, d.latency_ms "
               "FROM outbox_deliveries d JOIN outbox_events e ON e.id = d.event_id")  # fmt: skip
        if where:
            sql += " WHERE " + " AND ".join(where)
        keys = ("id", "event_id", "type", "target", "call_id", "status", "attempts", "next_at",
                "created_at", "updated_at", "last_code", "last_error", "latency_ms")  # fmt: skip
        rows = db.execute(sql + " ORDER BY d.id DESC LIMIT ?", (*args, limit))
        return [dict(zip(keys, row, strict=True)) for row in rows]

    @staticmethod
    def counts(db: sqlite3.Connection) -> dict[str, dict[str, int]]:
        """target -> status -> deliveries."""
        out: dict[str, dict[str, int]] = {}
        for target, status, n in db.execute(
            "SELECT target, status, count(*) FROM outbox_deliveries GROUP BY target, status"
        ):
            out.setdefault(target, {})[status] = n
        return out

    @staticmethod
    def forget(db: sqlite3.Connection, calls_sql: str, args: tuple) -> None:
        """Delete the integration events and deliveries of the calls `calls_sql` selects
        (retention: they quote the callers)."""
        db.execute(f"DELETE FROM outbox_deliveries WHERE call_id IN ({calls_sql})", args)
        db.execute(f"DELETE FROM outbox_events WHERE call_id IN ({calls_sql})", args)


# Call events that become integration events field by field: call event type ->
# (integration event type, the fields of the call event its data keeps).
EVENT_DATA: dict[str, tuple[str, tuple[str, ...]]] = {
    "referral": ("referral.created",
                 ("referral_id", "department", "category", "outcome", "sla_minutes", "deadline")),
    "referral_breached": ("referral.sla_breached",
                          ("referral_id", "department", "category", "deadline")),
    "ticket_comment": ("ticket.comment", ("ticket_id", "comment_id", "author", "body")),
}  # fmt: skip


def turn_of(db: sqlite3.Connection, call_id: str, start: Any) -> dict[str, Any]:
    """The words and best KB entry of the call's turn that starts at `start`: the stored
    transcript and suggestion with that start (the most recent if a start repeats)."""
    turn: dict[str, Any] = {"text": None, "kb_id": None, "category": None}
    rows = db.execute(
        "SELECT type, data FROM events WHERE call_id=? AND type IN ('transcript', 'suggestion') "
        "ORDER BY seq DESC LIMIT 40",
        (call_id,),
    )
    for kind, raw in rows:
        data = json.loads(raw)
        if data.get("start") != start:
            continue
        if kind == "transcript" and turn["text"] is None:
            turn["text"] = data.get("text")
        elif kind == "suggestion" and turn["kb_id"] is None and data.get("suggestions"):
            best = data["suggestions"][0]
            turn["kb_id"], turn["category"] = best.get("id"), best.get("category")
    return turn


def iso(ts: float) -> str:
    """ISO-8601 UTC with milliseconds and Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["DEAD", "DELIVERED", "PENDING", "STATUSES", "Delivery", "Extension", "Outbox", "iso",
           "turn_of"]  # fmt: skip
