"""SQLite store of calls and their events, in order, so nothing said is lost.

Transcripts are stored in full (readers are access-controlled); logs carry masked text only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id TEXT PRIMARY KEY, protocol TEXT NOT NULL, agent TEXT, owner TEXT,
    started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL, meta TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    call_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL, ts REAL NOT NULL,
    data TEXT NOT NULL, PRIMARY KEY (call_id, seq)
);
"""


class Store:
    """Calls and events tables; every write commits (WAL, so writes do not wait for fsync)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(SCHEMA)

    def open_call(self, call_id: str, protocol: str, agent: str | None, owner: str | None,
                  meta: dict[str, Any]) -> int:  # fmt: skip
        """Record a call starting (or resuming); returns the next event sequence number."""
        self.db.execute(
            "INSERT INTO calls (id, protocol, agent, owner, started_at, status, meta) "
            "VALUES (?, ?, ?, ?, ?, 'live', ?) ON CONFLICT(id) DO UPDATE SET status='live', "
            "ended_at=NULL",
            (call_id, protocol, agent, owner, time.time(), json.dumps(meta, ensure_ascii=False)),
        )
        row = self.db.execute("SELECT MAX(seq) FROM events WHERE call_id=?", (call_id,)).fetchone()
        return (row[0] or 0) + 1

    def add_event(self, call_id: str, seq: int, data: dict[str, Any]) -> None:
        self.db.execute(
            "INSERT INTO events (call_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)",
            (call_id, seq, data.get("type", "event"), time.time(),
             json.dumps(data, ensure_ascii=False)),
        )  # fmt: skip

    def close_call(self, call_id: str, status: str) -> None:
        self.db.execute(
            "UPDATE calls SET ended_at=?, status=? WHERE id=?", (time.time(), status, call_id)
        )

    def call(self, call_id: str) -> dict[str, Any] | None:
        """A call's record with its events in order, or None."""
        row = self.db.execute(
            "SELECT id, protocol, agent, owner, started_at, ended_at, status, meta FROM calls "
            "WHERE id=?",
            (call_id,),
        ).fetchone()
        if row is None:
            return None
        record = self._record(row)
        record["events"] = self.events(call_id)
        return record

    def events(self, call_id: str, after_seq: int = 0) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT seq, data FROM events WHERE call_id=? AND seq>? ORDER BY seq",
            (call_id, after_seq),
        )
        return [{**json.loads(data), "seq": seq} for seq, data in rows]

    def calls(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT id, protocol, agent, owner, started_at, ended_at, status, meta FROM calls "
            "ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        return [self._record(r) for r in rows]

    def close(self) -> None:
        self.db.close()

    @staticmethod
    def _record(row) -> dict[str, Any]:
        keys = ("id", "protocol", "agent", "owner", "started_at", "ended_at", "status", "meta")
        record = dict(zip(keys, row, strict=True))
        record["meta"] = json.loads(record["meta"])
        return record
