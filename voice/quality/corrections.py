"""Transcript corrections by people: stored per utterance beside the call, newest one wins.

A correction names a call's `transcript` event by its `seq` and gives the text the caller really
said. The original is copied in, so a correction stays meaningful after its call's events expire
and an export can show what changed. Corrections are deleted with their call (retention).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS corrections (
    id INTEGER PRIMARY KEY AUTOINCREMENT, call_id TEXT NOT NULL, seq INTEGER NOT NULL,
    start REAL NOT NULL, "end" REAL NOT NULL, original TEXT NOT NULL, text TEXT NOT NULL,
    reviewer TEXT NOT NULL, created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS corrections_by_call ON corrections (call_id, seq, id);
CREATE INDEX IF NOT EXISTS corrections_by_time ON corrections (created_at);
"""
MAX_TEXT = 1000  # characters: one utterance, not a document


class CorrectionError(ValueError):
    """A correction that cannot be stored; the message names the field."""


@dataclass(frozen=True)
class Correction:
    id: int
    call_id: str
    seq: int
    start: float
    end: float
    original: str
    text: str
    reviewer: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


COLUMNS = 'id, call_id, seq, start, "end", original, text, reviewer, created_at'  # end: reserved


def create(db: sqlite3.Connection) -> None:
    db.executescript(SCHEMA)


def add(db: sqlite3.Connection, call_id: str, seq: Any, text: Any, reviewer: str,
        now: float) -> Correction:  # fmt: skip
    """Store a correction of the transcript event `seq` of `call_id` (in a write transaction).
    Raises CorrectionError naming the field if the event is not a transcript of that call or the
    text is empty or too long."""
    if isinstance(seq, bool) or not isinstance(seq, int):
        raise CorrectionError("seq: the transcript event's seq, a whole number")
    if not isinstance(text, str) or not text.strip():
        raise CorrectionError("text: the corrected transcript, not empty")
    text = " ".join(text.split())
    if len(text) > MAX_TEXT:
        raise CorrectionError(f"text: at most {MAX_TEXT} characters")
    row = db.execute(
        "SELECT type, data FROM events WHERE call_id=? AND seq=?", (call_id, seq)
    ).fetchone()
    if row is None or row[0] != "transcript":
        raise CorrectionError(f"seq: call {call_id} has no transcript with seq {seq}")
    event = json.loads(row[1])
    correction_id = db.execute(
        f"INSERT INTO corrections ({COLUMNS.removeprefix('id, ')}) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (call_id, seq, float(event["start"]), float(event["end"]), event.get("text") or "",
         text, reviewer, now),
    ).fetchone()[0]  # fmt: skip
    return Correction(correction_id, call_id, seq, float(event["start"]), float(event["end"]),
                      event.get("text") or "", text, reviewer, now)  # fmt: skip


def of_call(db: sqlite3.Connection, call_id: str) -> list[Correction]:
    """Every correction of a call, oldest first (the history of each line)."""
    rows = db.execute(
        f"SELECT {COLUMNS} FROM corrections WHERE call_id=? ORDER BY seq, id", (call_id,)
    )
    return [Correction(*row) for row in rows]


def latest(db: sqlite3.Connection, since: float | None = None,
           until: float | None = None) -> list[Correction]:  # fmt: skip
    """The newest correction of each corrected utterance, of calls that started in
    [since, until) when given, by call and time in the call."""
    where, args = [], []
    if since is not None:
        where.append("k.started_at >= ?")
        args.append(since)
    if until is not None:
        where.append("k.started_at < ?")
        args.append(until)
    sql = (
        f"SELECT {', '.join('c.' + c for c in COLUMNS.split(', '))} FROM corrections c "
        "JOIN calls k ON k.id = c.call_id WHERE c.id = (SELECT max(id) FROM corrections n "
        "WHERE n.call_id = c.call_id AND n.seq = c.seq)"
    )
    if where:
        sql += " AND " + " AND ".join(where)
    return [Correction(*row) for row in db.execute(sql + " ORDER BY c.call_id, c.start", args)]


def forget(db: sqlite3.Connection, calls_sql: str, args: tuple) -> None:
    """Delete the corrections of the calls `calls_sql` selects (retention, with their calls)."""
    db.execute(f"DELETE FROM corrections WHERE call_id IN ({calls_sql})", args)


__all__ = ["Correction", "CorrectionError", "add", "create", "forget", "latest", "of_call"]
