"""Referral rules: which turns refer a call to a department, the referrals table, acks and the SLA watch."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from voice.integrations.config import IntegrationsConfig, RoutingRule
from voice.server.analytics import UNCATEGORISED
from voice.types import (
    Event,
    HandoffEvent,
    ReferralAckedEvent,
    ReferralBreachedEvent,
    ReferralEvent,
    SuggestionEvent,
)

if TYPE_CHECKING:
    from voice.integrations.outbox import Outbox
    from voice.server.calls import CallHub

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS referrals (
    id TEXT PRIMARY KEY, call_id TEXT NOT NULL, department TEXT NOT NULL,
    category TEXT NOT NULL, outcome TEXT NOT NULL, sla_minutes REAL NOT NULL,
    created_at REAL NOT NULL, deadline REAL NOT NULL,
    acked_at REAL, acked_by TEXT, breached_at REAL
);
CREATE INDEX IF NOT EXISTS referrals_by_call ON referrals (call_id);
CREATE INDEX IF NOT EXISTS referrals_by_deadline ON referrals (deadline);
"""
COLUMNS = ("id", "call_id", "department", "category", "outcome", "sla_minutes", "created_at",
           "deadline", "acked_at", "acked_by", "breached_at")  # fmt: skip
OPEN, BREACHED, ACKED = "open", "breached", "acked"
STATUSES = (OPEN, BREACHED, ACKED)
UNRESOLVED, HANDOFF = "unresolved", "handoff"


def create(db: sqlite3.Connection) -> None:
    """Create the referral table (the store calls this at open, with or without integrations)."""
    db.executescript(SCHEMA)


def forget(db: sqlite3.Connection, calls_sql: str, args: tuple) -> None:
    """Delete the referrals of the calls `calls_sql` selects (retention, with their calls)."""
    db.execute(f"DELETE FROM referrals WHERE call_id IN ({calls_sql})", args)


def status_of(row: dict[str, Any]) -> str:
    """acked if anyone acknowledged it (even after a breach), else breached, else open."""
    if row["acked_at"] is not None:
        return ACKED
    return BREACHED if row["breached_at"] is not None else OPEN


def _row(values: tuple) -> dict[str, Any]:
    row = dict(zip(COLUMNS, values, strict=True))
    row["status"] = status_of(row)
    return row


_STATUS_SQL = {
    OPEN: "acked_at IS NULL AND breached_at IS NULL",
    BREACHED: "acked_at IS NULL AND breached_at IS NOT NULL",
    ACKED: "acked_at IS NOT NULL",
}


def referrals(db: sqlite3.Connection, status: str = "all", call_id: str | None = None,
              limit: int = 500) -> list[dict[str, Any]]:  # fmt: skip
    """Referrals with their `status`, the earliest deadline first; `status` one of STATUSES or
    "all", `call_id` to keep one call's."""
    where, args = [], []
    if status != "all":
        where.append(_STATUS_SQL[status])
    if call_id is not None:
        where.append("call_id=?")
        args.append(call_id)
    sql = f"SELECT {', '.join(COLUMNS)} FROM referrals"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = db.execute(sql + " ORDER BY deadline, id LIMIT ?", (*args, limit))
    return [_row(r) for r in rows]


def referral(db: sqlite3.Connection, referral_id: str) -> dict[str, Any] | None:
    values = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM referrals WHERE id=?", (referral_id,)
    ).fetchone()
    return None if values is None else _row(values)


def acknowledge(db: sqlite3.Connection, referral_id: str, who: str,
                now: float) -> tuple[dict[str, Any] | None, bool]:  # fmt: skip
    """Mark a referral acknowledged by `who` unless it already is (the first ack's time and name
    stay); returns (the referral or None if unknown, whether this was the first ack). Run it in
    a store transaction: it is what the SLA watch checks before firing a breach."""
    updated = db.execute(
        "UPDATE referrals SET acked_at=?, acked_by=? WHERE id=? AND acked_at IS NULL",
        (now, who, referral_id),
    )
    return referral(db, referral_id), updated.rowcount == 1


def claim_breaches(db: sqlite3.Connection, now: float) -> list[dict[str, Any]]:
    """The referrals past their deadline that nobody acknowledged and that have not breached yet,
    marked breached now. Run in a store transaction on the store thread: an ack made before the
    deadline was written before this runs, and a claimed referral is never claimed again (the
    breach events are written after, and may still be in flight at the next check)."""
    rows = db.execute(
        f"SELECT {', '.join(COLUMNS)} FROM referrals WHERE deadline < ? AND acked_at IS NULL "
        "AND breached_at IS NULL ORDER BY deadline",
        (now,),
    ).fetchall()
    # Only those this transaction marks: a server sharing the store may have claimed some first.
    return [_row(r) for r in rows if db.execute(
        "UPDATE referrals SET breached_at=? WHERE id=? AND breached_at IS NULL", (now, r[0]),
    ).rowcount == 1]  # fmt: skip


class Router:
    """What the hub asks after each turn's answer events."""

    def after_turn(self, call_id: str, events: list[Event]) -> list[Event]:
        return []


@dataclass(frozen=True)
class Turn:
    """What a turn ended as, from its answer events."""

    category: str
    unresolved: bool
    handoff: bool

    @classmethod
    def of(cls, events: list[Event]) -> Turn:
        suggestion = next((e for e in events if isinstance(e, SuggestionEvent)), None)
        best = suggestion.suggestions[0].category if suggestion and suggestion.suggestions else ""
        return cls(best or UNCATEGORISED, suggestion is not None and not suggestion.resolved,
                   any(isinstance(e, HandoffEvent) for e in events))  # fmt: skip

    def outcome_for(self, rule: RoutingRule) -> str | None:
        """The outcome by which the turn matches `rule`, or None; for `any`, a handoff (asked
        for a human) says more than unresolved."""
        if rule.category not in ("*", self.category):
            return None
        if self.handoff and rule.outcome in (HANDOFF, "any"):
            return HANDOFF
        if self.unresolved and rule.outcome in (UNRESOLVED, "any"):
            return UNRESOLVED
        return None


class Referrals(Router):
    """The routing rules of one server: decides referrals, stores them, watches deadlines."""

    def __init__(self, config: IntegrationsConfig):
        self.config = config
        # call id -> departments it was referred to: at most one referral per (call, department).
        # after_turn runs on the event loop and record on the store thread, hence the lock; a
        # call's entry goes when its end is stored, after its last turn was routed.
        self._referred: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def after_turn(self, call_id: str, events: list[Event]) -> list[Event]:
        """The referral events a turn's answer events call for: the first rule of each
        department the turn matches, unless the call was referred there already."""
        if not self.config.routing:
            return []
        turn = Turn.of(events)
        out: list[Event] = []
        with self._lock:
            referred = self._referred.setdefault(call_id, set())
            for rule in self.config.routing:
                outcome = turn.outcome_for(rule)
                if outcome is None or rule.department in referred:
                    continue
                referred.add(rule.department)
                out.append(ReferralEvent(
                    call_id, "ref_" + secrets.token_hex(8), rule.department, turn.category,
                    outcome, rule.sla_minutes, time.time() + rule.sla_minutes * 60,
                ))  # fmt: skip
        return out

    def record(self, db: sqlite3.Connection, outbox: Outbox, call_id: str, data: dict[str, Any],
               ts: float, published: list[tuple[str, str]]) -> None:  # fmt: skip
        """Outbox extension: keep the referral table in step with stored referral events (the
        outbox itself turns them into `referral.created` / `referral.sla_breached`)."""
        kind = data.get("type")
        if kind == ReferralEvent.type:
            db.execute(
                "INSERT INTO referrals (id, call_id, department, category, outcome, "
                "sla_minutes, created_at, deadline) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT DO NOTHING",
                (data["referral_id"], call_id, data["department"], data["category"],
                 data["outcome"], data["sla_minutes"], ts, data["deadline"]),
            )  # fmt: skip
        elif kind == ReferralBreachedEvent.type:
            # claim_breaches set it already when the watch fired; keep the first time
            db.execute(
                "UPDATE referrals SET breached_at=coalesce(breached_at, ?) WHERE id=?",
                (ts, data["referral_id"]),
            )
        elif kind == ReferralAckedEvent.type:
            db.execute(
                "UPDATE referrals SET acked_at=coalesce(acked_at, ?), "
                "acked_by=coalesce(acked_by, ?) WHERE id=?",
                (ts, data["acked_by"], data["referral_id"]),
            )
        elif kind == "end":
            with self._lock:
                self._referred.pop(call_id, None)

    async def watch(self, hub: CallHub) -> None:
        """Fire `referral_breached` for referrals past their deadline without an ack, every
        `sla_check_seconds`, on live and finished calls alike."""
        every = self.config.delivery.sla_check_seconds
        while True:
            try:
                await self.check(hub)
            except asyncio.CancelledError:
                raise
            except Exception:  # a locked or full disk now: try again next time
                log.exception("checking referral deadlines failed")
            await asyncio.sleep(every)

    async def check(self, hub: CallHub) -> int:
        """One pass of the watch; returns how many breaches fired."""
        claimed = await hub.run_write(hub.store.transact, claim_breaches, time.time())
        for row in claimed:
            event = ReferralBreachedEvent(row["call_id"], row["id"], row["department"],
                                          row["category"], row["deadline"])  # fmt: skip
            if not await hub.inject(row["call_id"], event):
                log.warning("referral %s breached, but its call is gone", row["id"],
                            extra={"call_id": row["call_id"]})  # fmt: skip
            else:
                log.info("referral %s to %s breached its SLA", row["id"], row["department"],
                         extra={"call_id": row["call_id"]})  # fmt: skip
        return len(claimed)


__all__ = ["ACKED", "BREACHED", "COLUMNS", "OPEN", "SCHEMA", "STATUSES", "Referrals", "Router",
           "Turn", "acknowledge", "claim_breaches", "create", "forget", "referral", "referrals",
           "status_of"]  # fmt: skip
