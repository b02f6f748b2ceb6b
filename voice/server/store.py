"""Store of calls and their events, in order, owner-only on disk, kept as long as allowed.

A SQLite file by default; a PostgreSQL URL (`voice serve --db postgresql://...`) for several
servers behind a load balancer, which then tell each other of every stored event (notify.py).
The schema is migrated by Alembic when the store opens (voice/server/migrations).

Transcripts are stored in full (readers are access-controlled); logs carry masked text only.
Each event is folded into the analytics rollups (analytics.py) and, with integrations, into the
outbox (voice/integrations/outbox.py) in the transaction that stores it.
Threads: the write methods are called from one thread at a time (the hub's store thread), the
read methods from the event loop. A file database gets a second connection for the writes, so with
WAL a read never waits for a write or a checkpoint in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from voice.files import private_dir
from voice.integrations import routing, zendesk
from voice.integrations.outbox import Outbox
from voice.quality import corrections, reviews
from voice.server import analytics, conversations, customers
from voice.server.db import POSTGRESQL, Connection, is_url, open_engine, sqlite_file
from voice.server.migrations import migrate
from voice.server.notify import NOTIFY_SQL, Notice

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
PRIVATE_FILE = 0o600  # the database holds callers' words (PDPO personal data): owner only
SIDE_FILES = ("-wal", "-shm", "-journal")  # SQLite's companions of the database file
DAY_S = 86_400.0


class CallIdTaken(Exception):
    """A call with this id is already stored (live or finished): ids are never reused."""

    def __init__(self, call_id: str):
        super().__init__(f"call id {call_id} is already in the store")
        self.call_id = call_id


class Store:
    """Calls and events tables; every write commits (WAL, so writes do not wait for fsync)."""

    def __init__(self, path: str | Path, outbox: Outbox | None = None):
        self.path = str(path)  # a file path, :memory: or a database URL (never log it: masked())
        self.outbox = outbox
        self.instance = uuid.uuid4().hex[:12]  # names this process in cross-instance notices
        self.file = sqlite_file(self.path)  # None: in memory, or PostgreSQL
        if self.file is not None:
            _make_private(self.file)
        self.engine = open_engine(self.path)
        self.shared = self.engine.dialect.name == POSTGRESQL  # several servers may use it
        migrate(self.engine)  # the schema (voice/server/migrations), up to date before any use
        self.db = Connection.open(self.engine)  # reads
        # An in-memory database exists only on its own connection, so there it does both jobs.
        memory = self.file is None and not self.shared
        self._writes = self.db if memory else Connection.open(self.engine)
        self._lead: Connection | None = None  # holds the shared store's job locks (leads())

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """BEGIN (IMMEDIATE on SQLite) ... COMMIT on the write connection (autocommit otherwise);
        ROLLBACK if anything inside fails, so an event and its rollups are stored together or
        not at all."""
        db = self._writes
        db.execute(db.begin_sql)
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself after some errors (disk full)
                db.execute("ROLLBACK")
            raise

    # --- writes (one thread at a time) --------------------------------------------------------

    def open_call(self, call_id: str, protocol: str, agent: str | None, owner: str | None,
                  meta: dict[str, Any], now: float | None = None) -> None:  # fmt: skip
        """Record a new live call (started `now`, default the current time); raises CallIdTaken
        if the id is stored already."""
        started = time.time() if now is None else now
        try:
            with self._transaction() as db:
                db.execute(
                    "INSERT INTO calls (id, protocol, agent, owner, started_at, status, meta) "
                    "VALUES (?, ?, ?, ?, ?, 'live', ?)",
                    (call_id, protocol, agent, owner, started,
                     json.dumps(meta, ensure_ascii=False)),
                )  # fmt: skip
                analytics.open_call(db, call_id, started)
        except self._writes.IntegrityError:
            raise CallIdTaken(call_id) from None

    def add_event(self, call_id: str, seq: int, data: dict[str, Any],
                  now: float | None = None) -> None:  # fmt: skip
        """Store an event (at `now`, default the current time) and fold it into the analytics
        rollups in the same transaction."""
        ts = time.time() if now is None else now
        with self._transaction() as db:
            db.execute(
                "INSERT INTO events (call_id, seq, type, ts, data) VALUES (?, ?, ?, ?, ?)",
                (call_id, seq, data.get("type", "event"), ts,
                 json.dumps(data, ensure_ascii=False)),
            )  # fmt: skip
            analytics.record(db, call_id, seq, data, ts)
            if self.outbox is not None:
                self.outbox.record(db, call_id, seq, data, ts)
            if self.shared:  # the other servers' subscribers: delivered at commit
                db.execute(NOTIFY_SQL, (Notice(self.instance, call_id, seq).to_json(),))

    def append_event(self, call_id: str, data: dict[str, Any], now: float | None = None) -> int:
        """Store an event after a call's last one (a finished call: a referral's breach, an
        agent's reply in the ticket); returns its seq. Live calls number their own events."""
        with self._transaction() as db:
            seq = db.execute(
                "SELECT coalesce(max(seq), 0) + 1 FROM events WHERE call_id=?", (call_id,)
            ).fetchone()[0]
        self.add_event(call_id, seq, {**data, "seq": seq}, now)
        return seq

    def transact(self, work, *args):
        """Run `work(db, *args)` in one write transaction and return its result (the outbox
        worker's and the integrations' own writes, on the store thread)."""
        with self._transaction() as db:
            return work(db, *args)

    def close_call(self, call_id: str, status: str) -> None:
        self._writes.execute(
            "UPDATE calls SET ended_at=?, status=? WHERE id=?", (time.time(), status, call_id)
        )
        if self.shared:  # after the commit: a server told the call ended finds it ended
            notice = Notice(self.instance, call_id, ended=True)
            self._writes.execute(NOTIFY_SQL, (notice.to_json(),))

    def update_meta(self, call_id: str, changes: dict[str, Any]) -> None:
        """Merge `changes` into a call's meta (a recording's length once the call is over)."""
        with self._transaction() as db:
            row = db.execute("SELECT meta FROM calls WHERE id=?", (call_id,)).fetchone()
            if row is not None:
                meta = {**json.loads(row[0]), **changes}
                db.execute("UPDATE calls SET meta=? WHERE id=?",
                           (json.dumps(meta, ensure_ascii=False), call_id))  # fmt: skip

    def recordings(self, where: str = "1", args: tuple = ()) -> list[tuple[str, str]]:
        """(call id, recording file name) of the calls `where` selects that have a recording."""
        rows = self.db.execute(
            f"SELECT id, json_extract(meta, '$.recording.file') FROM calls WHERE ({where}) "
            "AND json_extract(meta, '$.recording.file') IS NOT NULL",
            args,
        )
        return [(call_id, name) for call_id, name in rows]

    def interrupt_live(self) -> int:
        """Close calls still marked live (the server stopped without ending them) as
        `interrupted`; returns how many. Only for start-up, before any call is taken. Not on a
        shared (PostgreSQL) store, where the live calls may be other servers' (0)."""
        if self.shared:
            return 0
        return self._writes.execute(
            "UPDATE calls SET ended_at=?, status='interrupted' WHERE status='live'", (time.time(),)
        ).rowcount

    EXPIRED = "SELECT id FROM calls WHERE started_at < ? AND status != 'live'"

    def expire(self, days: float, now: float | None = None) -> int:
        """Delete finished calls that started more than `days` ago, with their events and
        analytics rollups; returns how many calls went. (Recordings are files: the hub lists
        them with `recordings(f"id IN ({Store.EXPIRED})", ...)` first and deletes them after.)"""
        cutoff = (time.time() if now is None else now) - days * DAY_S
        old = self.EXPIRED
        with self._transaction() as db:
            analytics.forget(db, old, (cutoff,))
            Outbox.forget(db, old, (cutoff,))
            routing.forget(db, old, (cutoff,))
            corrections.forget(db, old, (cutoff,))
            reviews.forget(db, old, (cutoff,))
            zendesk.forget(db, old, (cutoff,))
            customers.forget(db, old, (cutoff,))
            conversations.forget(db, old, (cutoff,))
            db.execute(f"DELETE FROM events WHERE call_id IN ({old})", (cutoff,))
            deleted = db.execute(f"DELETE FROM calls WHERE id IN ({old})", (cutoff,)).rowcount
        if deleted and self.file is not None:
            # The WAL still holds the deleted pages until a checkpoint copies and truncates it.
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return deleted

    # --- reads --------------------------------------------------------------------------------

    def summary(self, call_id: str) -> dict[str, Any] | None:
        """Who a stored call belongs to and its status, without its events; None if unknown."""
        row = self.db.execute(
            "SELECT agent, owner, status FROM calls WHERE id=?", (call_id,)
        ).fetchone()
        if row is None:
            return None
        return {"id": call_id, "agent": row[0], "owner": row[1], "status": row[2]}

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

    def leads(self, job: str) -> bool:
        """Should this server run `job` (a background job that must run once, such as the
        outbox's deliveries)? Always on SQLite; on a shared store only in the server holding the
        job's PostgreSQL advisory lock, taken here when free and held until this server stops
        or loses its connection (then another server takes it over)."""
        if not self.shared:
            return True
        import psycopg
        from sqlalchemy.exc import DBAPIError

        key = int.from_bytes(hashlib.sha256(f"voice:{job}".encode()).digest()[:8], "big",
                             signed=True)  # fmt: skip
        try:
            if self._lead is None:
                self._lead = Connection.open(self.engine)
            # True again while held; on a new connection (the old one was lost) taken anew if free
            lock = self._lead.execute("SELECT pg_try_advisory_lock(?)", (key,))
            return bool(lock.fetchone()[0])
        except (psycopg.Error, DBAPIError):  # PostgreSQL unreachable now: not this time
            return False

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._lead is not None:
            self._lead.close()
        if self._writes is not self.db:
            self._writes.close()
        self.db.close()
        self.engine.dispose()  # really closes them (SQLite: the last one checkpoints the WAL)

    @staticmethod
    def _record(row) -> dict[str, Any]:
        keys = ("id", "protocol", "agent", "owner", "started_at", "ended_at", "status", "meta")
        record = dict(zip(keys, row, strict=True))
        record["meta"] = json.loads(record["meta"])
        return record


def open_existing(target: str | Path) -> Store:
    """The store a command's --db names, which must exist (a file; a database URL is taken as
    existing); ConfigError otherwise."""
    from voice.errors import ConfigError

    if not is_url(target) and not Path(target).is_file():
        raise ConfigError(f"--db {target}: no such call store (voice serve --db writes one)")
    return Store(target)


def _make_private(path: Path) -> None:
    """Create the database file owner-only before SQLite opens it (SQLite gives its -wal and -shm
    files the database file's mode), in an owner-only folder if the folder is new; take group and
    other access away from files an older version created."""
    private_dir(path.parent)
    os.close(os.open(path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE))
    for file in [path, *(path.with_name(path.name + s) for s in SIDE_FILES)]:
        try:
            mode = file.stat().st_mode & 0o777
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except (FileNotFoundError, PermissionError):  # absent, or not ours to change
            pass


__all__ = ["CallIdTaken", "Store", "open_existing"]
