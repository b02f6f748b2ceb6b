"""The call store on a real PostgreSQL (Debian's `postgresql`, started by the `postgres` fixture):
the Store's API and analytics agree with SQLite, Alembic migrates and adopts old stores, servers
hear each other's events (LISTEN/NOTIFY) and two `voice serve` share one store."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import time

import httpx
import psycopg
import pytest
import soundfile as sf
from test_analytics import TWO_DAYS, hk, seed
from test_review import GOOD
from test_server import _serve
from websockets.asyncio.client import connect

from voice.audio import mulaw_encode
from voice.quality import corrections, reviews, sampling
from voice.server import analytics
from voice.server.db import masked
from voice.server.notify import Listener
from voice.server.store import CallIdTaken, Store

# Whole hours, partial hours at both ends, one hour: each read path of the rollups.
PERIODS = [TWO_DAYS, (hk("2026-11-30T14:00:30"), hk("2026-12-01T10:30:00")),
           (hk("2026-11-30T14:00:00"), hk("2026-11-30T15:00:00"))]  # fmt: skip


def _head() -> str:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from voice.server.migrations import HERE

    config = Config()
    config.set_main_option("script_location", str(HERE))
    return ScriptDirectory.from_config(config).get_current_head()


def _alembic_version(url_or_path: str) -> str:
    if "://" in url_or_path:
        with psycopg.connect(url_or_path) as db:
            return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    with sqlite3.connect(url_or_path) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def test_the_store_and_its_analytics_agree_with_sqlite(postgres, tmp_path):
    lite, pg = Store(tmp_path / "calls.sqlite3"), Store(postgres())
    for store in (lite, pg):
        seed(store)
    assert pg.shared and not lite.shared
    for start, end in PERIODS:
        assert analytics.kpis(pg.db, start, end) == analytics.kpis(lite.db, start, end)
        for bucket in ("hour", "day"):
            if end - start <= analytics.MAX_PERIOD[bucket]:
                assert (analytics.heatmap(pg.db, start, end, bucket)
                        == analytics.heatmap(lite.db, start, end, bucket))  # fmt: skip
    assert (analytics.unresolved_turns(pg.db, *TWO_DAYS, analytics.UNCATEGORISED)
            == analytics.unresolved_turns(lite.db, *TWO_DAYS, analytics.UNCATEGORISED))  # fmt: skip
    assert _calls(pg) == _calls(lite)  # epoch seconds exact: double precision, not float4
    assert [pg.call(c)["events"] for c in "ABC"] == [lite.call(c)["events"] for c in "ABC"]
    with pytest.raises(CallIdTaken):
        pg.open_call("A", "stream", None, None, {})
    with pytest.raises(psycopg.IntegrityError):  # seq 1 is taken: nothing of it is stored
        pg.add_event("A", 1, {"type": "suggestion", "start": 8.0, "resolved": True})
    assert pg.events("A") == lite.events("A")
    fix = [s.transact(corrections.add, "A", 1, "我想查帳單呀", "sup-1", 1.0) for s in (lite, pg)]
    assert fix[0] == fix[1] and fix[1].id == 1  # RETURNING id on both
    for store in (lite, pg):
        store.close_call("A", "completed")
        store.close_call("B", "completed")
    now = hk("2026-12-05T00:00:00").timestamp()
    assert pg.expire(4, now) == lite.expire(4, now) == 1  # A only: B started 07:29 HK on 12-01
    for start, end in PERIODS:
        assert analytics.kpis(pg.db, start, end) == analytics.kpis(lite.db, start, end)
    assert _calls(pg) == _calls(lite)
    # Numbers as SQLite has them: a bool is written as 1, a sum of integers read as an int.
    rows = [
        s.db.execute("SELECT ? + 0, sum(seq) FROM events", (True,)).fetchone() for s in (lite, pg)
    ]
    assert rows[0] == rows[1] and rows[1][0] == 1 and type(rows[1][1]) is int
    lite.close()
    pg.close()


def test_audits_reviews_and_the_weekly_report_read_a_postgresql_store(postgres, tmp_path, capsys):
    from voice.cli import main

    url = postgres().replace("voice@", "voice:s3cret@")
    lite, pg = Store(tmp_path / "calls.sqlite3"), Store(url)
    drawn = []
    for store in (lite, pg):
        seed(store)
        for call_id in "ABC":
            store.close_call(call_id, "completed")
        options = sampling.SampleOptions("2026-11-30", "2026-12-01", percent=50,
                                         stratify="category, agent", seed=7, by="qa-1")  # fmt: skip
        job = sampling.sample(store, options, now=1.0)
        review = store.transact(reviews.add, reviews.load_rubric(), "A", "qa-1", "auditor",
                                GOOD, "ok", 2.0)  # fmt: skip
        drawn.append(_unended((job.strata, job.sampled, review.id,
                               reviews.job(store.db, job.id, "qa-1")["calls"],
                               reviews.sheet(store.db, "A"))))  # fmt: skip
    assert drawn[0] == drawn[1]
    lite.close()
    pg.close()
    out = tmp_path / "report"
    assert main(["report", "weekly", "--db", url, "--week", "2026-W49", "--out", str(out)]) == 0
    printed = capsys.readouterr()
    assert "2026-W49: 3 calls" in printed.out and "s3cret" not in printed.out + printed.err


def _unended(value):
    """`value` without its "ended_at" fields (the clock's time at close_call differs)."""
    if isinstance(value, dict):
        return {k: _unended(v) for k, v in value.items() if k != "ended_at"}
    if isinstance(value, list | tuple):
        return [_unended(v) for v in value]
    return value


def _calls(store: Store) -> list[dict]:
    return _unended(store.calls())


def test_migrations_create_an_empty_database_and_adopt_an_old_sqlite_store(postgres, tmp_path):
    url = postgres()
    Store(url).close()
    assert _alembic_version(url) == _head()
    Store(url).close()  # opening again changes nothing
    # A store written before migrations and analytics: its tables, no alembic_version.
    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as db:
        db.executescript("""
            CREATE TABLE calls (id TEXT PRIMARY KEY, protocol TEXT NOT NULL, agent TEXT,
                owner TEXT, started_at REAL NOT NULL, ended_at REAL, status TEXT NOT NULL,
                meta TEXT NOT NULL);
            CREATE TABLE events (call_id TEXT NOT NULL, seq INTEGER NOT NULL, type TEXT NOT NULL,
                ts REAL NOT NULL, data TEXT NOT NULL, PRIMARY KEY (call_id, seq));
        """)
    with Store(tmp_path / "new.sqlite3") as fresh:
        seed(fresh)
        expected = analytics.kpis(fresh.db, *TWO_DAYS), fresh.calls()
        rows = [fresh.db.execute(f"SELECT * FROM {t}").fetchall() for t in ("calls", "events")]
    with sqlite3.connect(old) as db:
        db.executemany("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows[0])
        db.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", rows[1])
    with Store(old) as adopted:  # rollups rebuilt from the events, nothing lost
        assert (analytics.kpis(adopted.db, *TWO_DAYS), adopted.calls()) == expected
    assert _alembic_version(str(old)) == _head()


def test_a_server_hears_the_events_another_stores_and_relistens_after_a_restart(postgres, caplog):
    url = postgres()
    writer, reader = Store(url), Store(url)
    heard: list = []

    async def run() -> None:
        loop = asyncio.get_running_loop()
        listener = Listener(reader.engine, reader.instance, heard.append, loop)
        listener.start()
        try:
            await _until(listener.connected.is_set)
            writer.open_call("X", "stream", None, None, {})
            writer.add_event("X", 1, {"type": "warning", "message": "one"})
            reader.add_event("X", 2, {"type": "warning", "message": "own"})  # not heard: its own
            await _until(lambda: any(n and n.seq == 1 for n in heard))
            restart = [str(postgres.bindir / "pg_ctl"), "-D", str(postgres.root / "data"),
                       "-l", str(postgres.root / "server.log"), "-m", "fast", "-w", "restart"]  # fmt: skip
            user = ["runuser", "-u", "postgres", "--"] if _root() else []
            await asyncio.to_thread(subprocess.run, [*user, *restart], check=True,
                                    capture_output=True, timeout=60)  # fmt: skip
            await _until(lambda: "listening for other servers' events again" in caplog.text, 30)
            await _until(listener.connected.is_set)
            with pytest.raises(psycopg.OperationalError):  # how the store learns of the restart
                writer.add_event("X", 3, {"type": "warning", "message": "three"})
            writer.add_event("X", 3, {"type": "warning", "message": "three"})  # a new connection
            writer.close_call("X", "completed")
            await _until(lambda: any(n and n.ended for n in heard))
        finally:
            await asyncio.to_thread(listener.stop)

    with caplog.at_level(logging.WARNING, logger="voice.server"):
        asyncio.run(run())
    notices = [(n.call_id, n.seq, n.ended) for n in heard if n is not None]
    assert notices == [("X", 1, False), ("X", 3, False), ("X", None, True)]
    assert heard.count(None) == 2  # connected, reconnected: the hub catches up each time
    writer.close()
    reader.close()


def test_one_server_at_a_time_delivers_the_outbox_of_a_shared_store(postgres, tmp_path):
    first, second = Store(postgres()), None
    second = Store(first.path)
    assert first.leads("outbox") and first.leads("outbox")  # taken, then still held
    assert not second.leads("outbox") and second.leads("referrals")  # one lock per job
    first.close()  # a server stops (or loses PostgreSQL): another takes the job over
    assert second.leads("outbox")
    second.close()
    with Store(tmp_path / "calls.sqlite3") as alone:
        assert alone.leads("outbox")


def _root() -> bool:
    import os

    return os.geteuid() == 0


async def _until(check, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_database_urls_are_shown_without_their_password():
    assert masked("postgresql://voice:s3cret@db.internal/calls") == (
        "postgresql://voice:***@db.internal/calls"
    )
    assert masked("/var/lib/voice/calls.sqlite3") == "/var/lib/voice/calls.sqlite3"


@pytest.mark.slow
def test_a_subscriber_on_one_server_follows_a_call_streamed_into_another(
    postgres, tmp_path, tiny_model_dir, demo_call
):
    """The done-when test of issue 17 item 4: two `voice serve` on one PostgreSQL."""
    # PostgreSQL here trusts every local connection: the password only shows it is never logged.
    url = postgres().replace("voice@", "voice:s3cret@")
    pcm, _ = sf.read(demo_call.path, dtype="int16")
    audio = mulaw_encode(pcm)
    args = ["--model", str(tiny_model_dir), "--insecure-no-auth", "--db", url,
            "--max-queue-seconds", "120"]  # fmt: skip
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with _serve(tmp_path / "a", *args) as a, _serve(tmp_path / "b", *args) as b:

        async def run() -> tuple[list[dict], list[dict], list[dict]]:
            async with connect(f"{b.ws}/stream") as call:
                await call.send(json.dumps({"type": "start", "call_id": "LB-1",
                                            "encoding": "mulaw", "sample_rate": 8000}))  # fmt: skip
                assert json.loads(await call.recv())["type"] == "started"
                await _until(
                    lambda: httpx.get(f"{a.http}/calls/LB-1", timeout=5).status_code == 200
                )
                # Followed on A from before the first event: every event reaches A as B stores it.
                follower = await connect(f"{a.ws}/calls/LB-1/events")
                wallboard = await connect(f"{a.ws}/events")
                await asyncio.sleep(0.5)  # the wallboard's subscription is registered
                for i in range(0, len(audio), 1600):
                    await call.send(audio[i : i + 1600])
                await call.send(json.dumps({"type": "stop"}))
                sent = [json.loads(m) async for m in call]
            followed = [json.loads(m) async for m in follower]  # A closes it when B ends the call
            seen = []
            while not seen or seen[-1]["type"] != "end":
                seen.append(json.loads(await asyncio.wait_for(wallboard.recv(), 30)))
            await wallboard.close()
            return sent, followed, seen

        sent, followed, seen = asyncio.run(asyncio.wait_for(run(), 240))
        stored = httpx.get(f"{b.http}/calls/LB-1", timeout=10).json()
        listed = httpx.get(f"{a.http}/calls", timeout=10).json()["calls"]
        log_a = a.log.read_text()
    assert any(e["type"] == "transcript" for e in stored["events"])
    assert followed == stored["events"] == sent  # every event, once, in order, then the end
    assert followed[-1]["type"] == "end"
    assert [e for e in seen if e["call_id"] == "LB-1"] == stored["events"]
    assert [c["id"] for c in listed] == ["LB-1"] and listed[0]["status"] == "completed"
    assert "s3cret" not in log_a + b.log.read_text()
