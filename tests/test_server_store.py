"""The call store under `voice serve`: ids never reused, store failures end calls cleanly, crash
recovery, retention, owner-only files in a data folder (issue 13 items 1, 5, 8, 9)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import websockets
from test_server import AGENT1, AGENT2, SUPERVISOR, TOKENS, _bearer, _serve, _stored
from websockets.asyncio.client import connect

from voice.server.calls import CallEnded, CallHub, CallRefused
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.serializers import Start
from voice.server.store import CallIdTaken, Store
from voice.types import WarningEvent
from voice.vad import VadOptions

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # live servers and the tiny model

DAY = 86_400.0
REPO = Path(__file__).parents[1]


@pytest.fixture
def voice_logs(caplog, monkeypatch):
    """Records of the `voice` loggers, even if `logs.configure` stopped them propagating."""
    monkeypatch.setattr(logging.getLogger("voice"), "propagate", True)
    caplog.set_level(logging.DEBUG, "voice")
    return caplog


def _file_hub(path: Path, **overrides) -> CallHub:
    """A hub over a database file (inside a running loop, as the app builds it)."""
    config = ServerConfig(insecure_no_auth=True, db_path=str(path), **overrides)
    return CallHub(config, Store(path), ServerMetrics(), VadOptions(), None, None)


def _seed(path: Path, call_id: str, started_days_ago: float, status: str | None,
          owner: str = "agent-1") -> None:  # fmt: skip
    """A stored call with one event, started that many days ago; status None leaves it live."""
    store = Store(path)
    store.open_call(call_id, "stream", None, owner, {})
    store.add_event(call_id, 1, {"type": "end", "call_id": call_id})
    if status is not None:
        store.close_call(call_id, status)
    then = time.time() - started_days_ago * DAY
    store.db.execute("UPDATE calls SET started_at=? WHERE id=?", (then, call_id))
    store.close()


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def _messages(ws, quiet: float) -> list[dict]:
    """What a WebSocket receives until it is closed or stays quiet for `quiet` seconds."""
    got = []
    with contextlib.suppress(websockets.ConnectionClosed, TimeoutError):
        while True:
            got.append(json.loads(await asyncio.wait_for(ws.recv(), quiet)))
    return got


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


# --- item 1: call ids are never reused ------------------------------------------------------------


def test_store_refuses_an_id_it_holds_and_keeps_the_first_call():
    store = Store(":memory:")
    store.open_call("C-42", "stream", None, "bob", {})
    store.add_event("C-42", 1, {"type": "end"})
    store.close_call("C-42", "completed")
    with pytest.raises(CallIdTaken):
        store.open_call("C-42", "stream", None, "alice", {})
    record = store.call("C-42")
    assert (record["owner"], record["status"], len(record["events"])) == ("bob", "completed", 1)


def test_hub_refuses_a_finished_id_to_anyone_even_after_a_restart(tmp_path):
    async def run() -> list[CallRefused]:
        hub = _file_hub(tmp_path / "calls.sqlite3")
        bob = hub.open(Start("C-42"), "stream", "bob")
        hub.publish(bob, WarningEvent("C-42", "Bob's call"))
        await bob.finish()
        refusals = []
        for owner in ("alice", "bob"):  # nobody, not even its owner, reopens it
            with pytest.raises(CallRefused) as refused:
                hub.open(Start("C-42"), "stream", owner)
            refusals.append(refused.value)
        await hub.shutdown()
        hub.store.close()
        restarted = _file_hub(tmp_path / "calls.sqlite3")
        with pytest.raises(CallRefused) as refused:
            restarted.open(Start("C-42"), "twilio", "alice")
        refusals.append(refused.value)
        restarted.store.close()
        return refusals

    refusals = asyncio.run(run())
    assert {(r.reason, r.close_code) for r in refusals} == {("duplicate", 1008)}
    assert "never reused" in str(refusals[0])
    store = Store(tmp_path / "calls.sqlite3")
    record = store.call("C-42")
    assert record["owner"] == "bob" and record["status"] == "completed"
    assert [e["message"] for e in record["events"] if e["type"] == "warning"] == ["Bob's call"]


@pytest.fixture(scope="module")
def store_server(tmp_path_factory, tiny_model_dir):
    """`voice serve` (tiny model, auth) over a database an earlier run left behind: one call still
    `live` (a crash), one finished 40 days ago and one 2 days ago; `--retention-days 30`."""
    tmp = tmp_path_factory.mktemp("store_server")
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    db = tmp / "calls.sqlite3"  # the path `_serve` passes as --db
    _seed(db, "crashed-1", 0.01, None)
    _seed(db, "old-1", 40, "completed")
    _seed(db, "recent-1", 2, "completed")
    args = ["--model", str(tiny_model_dir), "--auth", str(tmp / "auth.json"),
            "--retention-days", "30"]  # fmt: skip
    with _serve(tmp, *args) as running:
        running.db = db
        yield running


@pytest.mark.slow  # a real server with the tiny model (built from base)
def test_a_finished_call_id_is_refused_and_nothing_of_it_reaches_the_new_caller(store_server):
    """Bob finishes C-42; Alice starts C-42 and subscribes: refused, no event of Bob's reaches
    her (before the fix her start reopened the row and her subscription replayed Bob's call)."""
    server = store_server
    rng = np.random.default_rng(0)
    speech = (rng.standard_normal(16_000) * 3000).astype("<i2").tobytes()  # 2 s at 8 kHz
    start = {"type": "start", "call_id": "C-42", "encoding": "pcm16", "sample_rate": 8000}

    async def bob() -> list[dict]:
        async with connect(f"{server.ws}/stream", additional_headers=_bearer(AGENT1)) as ws:
            await ws.send(json.dumps(start))
            for i in range(0, len(speech), 3200):
                await ws.send(speech[i : i + 3200])
            await ws.send(json.dumps({"type": "stop"}))
            return [json.loads(m) async for m in ws]

    async def alice(token: str) -> tuple[list[dict], int | None, list[dict]]:
        subscribed = []
        async with connect(f"{server.ws}/stream", additional_headers=_bearer(token)) as ws:
            await ws.send(json.dumps(start))
            got = await _messages(ws, 10)
            try:  # while her stream is (or would be) live, she follows "her" call
                async with connect(f"{server.ws}/calls/C-42/events",
                                   additional_headers=_bearer(token)) as sub:  # fmt: skip
                    subscribed = await _messages(sub, 3)
            except websockets.InvalidStatus:  # refused before the handshake completed
                pass
        return got, ws.close_code, subscribed

    bob_events = asyncio.run(bob())
    assert bob_events[0]["type"] == "started" and bob_events[-1]["type"] == "end"
    stored = _stored(server, "C-42", AGENT1)
    assert stored["status"] == "completed" and stored["events"]

    got, code, subscribed = asyncio.run(alice(AGENT2))
    assert [(m["type"], m.get("code")) for m in got] == [("error", "duplicate")], got
    assert code == 1008 and "never reused" in got[0]["message"]
    assert subscribed == []
    sse = httpx.get(f"{server.http}/calls/C-42/events", headers=_bearer(AGENT2), timeout=10)
    assert sse.status_code == 404
    assert httpx.get(f"{server.http}/calls/C-42", headers=_bearer(AGENT2)).status_code == 404

    got, code, _ = asyncio.run(alice(AGENT1))  # Bob himself cannot reopen it either
    assert [m["type"] for m in got] == ["error"] and code == 1008
    assert _stored(server, "C-42", AGENT1) == stored  # Bob's record untouched


# --- item 5: a store failure ends its call cleanly --------------------------------------------------


class FailingDisk(Store):
    """A real store whose writes for the calls in `failing` raise SQLite's own error."""

    failing: set[str] = set()

    def _check(self, call_id: str) -> None:
        if call_id in self.failing:
            raise sqlite3.OperationalError("disk I/O error")

    def open_call(self, call_id, *args):
        self._check(call_id)
        return super().open_call(call_id, *args)

    def add_event(self, call_id, seq, data):
        self._check(call_id)
        super().add_event(call_id, seq, data)

    def close_call(self, call_id, status):
        self._check(call_id)
        super().close_call(call_id, status)


def test_a_store_failure_ends_the_call_frees_its_slot_and_logs_once(tmp_path, voice_logs):
    db = tmp_path / "calls.sqlite3"

    async def run():
        store = FailingDisk(db)
        config = ServerConfig(insecure_no_auth=True, db_path=str(db), max_calls=1)
        hub = CallHub(config, store, ServerMetrics(), VadOptions())
        call = hub.open(Start("A-1"), "stream", "agent-1")
        sub = hub.subscribe("A-1")
        await _until(lambda: store.call("A-1") is not None)
        store.failing = {"A-1"}  # the disk fails mid-call
        hub.warn("A-1", "first")  # never raises into the caller
        hub.warn("A-1", "second")
        await _until(lambda: "A-1" not in hub.calls)
        received = await asyncio.wait_for(sub.get(), 1)
        with pytest.raises(CallEnded) as ended:
            call.feed(b"\0" * 320)  # the carrier's next audio is answered with a close
        await asyncio.wait_for(call.finish(), 5)  # returns at once, nothing left hanging
        again = hub.open(Start("A-2"), "stream", "agent-1")  # the only slot is free
        hub.publish(again, WarningEvent("A-2", "fine"))
        await again.finish()
        errors = hub.metrics.errors.get(protocol="stream", kind="store_failed")
        await hub.shutdown()
        return received, ended.value, errors, store

    received, ended, errors, store = asyncio.run(run())
    assert received["type"] == "_end"  # the subscriber's stream ended
    assert (ended.reason, ended.close_code) == ("store_failed", 1011)
    failures = [r for r in voice_logs.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and "A-1" in failures[0].getMessage() and errors == 1
    assert isinstance(failures[0].exc_info[1], sqlite3.OperationalError)
    assert store.call("A-2")["status"] == "completed" and len(store.call("A-2")["events"]) == 2
    assert store.call("A-1")["status"] == "live"  # its end could not be written either...
    store.close()

    async def restart() -> None:
        _file_hub(db).store.close()

    asyncio.run(restart())  # ...so the next start closes it
    assert Store(db).call("A-1")["status"] == "interrupted"


def test_a_store_failure_reaches_the_client_as_a_close_and_the_slot_is_reused(
    tmp_path, monkeypatch, voice_logs
):
    """Through the real app and its WebSocket handler."""
    from starlette.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

    from voice.server.app import create_app

    class Disk(FailingDisk):
        failing = {"S-1"}

    monkeypatch.setattr("voice.server.app.Store", Disk)
    config = ServerConfig(insecure_no_auth=True, db_path=str(tmp_path / "c.sqlite3"), max_calls=1)
    app = create_app(config, transcriber=None)
    start = {"type": "start", "encoding": "pcm16", "sample_rate": 8000}
    with TestClient(app) as client:
        hub = app.state.hubs["hub"]
        with client.websocket_connect("/stream") as ws:
            ws.send_text(json.dumps({**start, "call_id": "S-2"}))
            assert ws.receive_json()["type"] == "started"
            client.portal.call(hub.warn, "S-2", "written")  # a healthy call's event arrives
            assert ws.receive_json()["message"] == "written"
            ws.send_text(json.dumps({"type": "stop"}))
            assert ws.receive_json()["type"] == "end"
        with client.websocket_connect("/stream") as ws:
            ws.send_text(json.dumps({**start, "call_id": "S-1"}))
            assert ws.receive_json()["type"] == "started"
            client.portal.call(hub.warn, "S-1", "cannot be written")  # the first event fails
            deadline = time.monotonic() + 5
            while "S-1" in hub.calls:
                assert time.monotonic() < deadline, "the failed call kept its slot"
                time.sleep(0.01)
            ws.send_bytes(b"\0" * 320)
            error = ws.receive_json()
            assert (error["type"], error["code"]) == ("error", "store_failed")
            with pytest.raises(WebSocketDisconnect) as closed:
                ws.receive_text()
            assert closed.value.code == 1011
        with client.websocket_connect("/stream") as ws:
            ws.send_text(json.dumps({**start, "call_id": "S-3"}))
            assert ws.receive_json()["type"] == "started"  # max_calls=1: S-1's slot was freed
    failures = [r for r in voice_logs.records if r.levelno >= logging.ERROR]
    assert [r.call_id for r in failures] == ["S-1"]


def test_store_writes_never_block_the_event_loop_and_keep_their_order():
    class SlowDisk(Store):
        def add_event(self, call_id, seq, data):
            time.sleep(0.1)
            super().add_event(call_id, seq, data)

    async def run():
        hub = CallHub(ServerConfig(insecure_no_auth=True, db_path=":memory:"), SlowDisk(":memory:"),
                      ServerMetrics(), VadOptions())  # fmt: skip
        call = hub.open(Start("slow-1"), "stream", None)
        sub = hub.subscribe("slow-1")
        began = time.perf_counter()
        for i in range(10):
            hub.publish(call, WarningEvent("slow-1", f"m{i}"))
        publishing = time.perf_counter() - began
        got = [await asyncio.wait_for(sub.get(), 5) for _ in range(10)]
        await call.finish()
        return publishing, got, hub.store.events("slow-1")

    publishing, got, stored = asyncio.run(run())
    assert publishing < 0.1  # ten writes of 0.1 s each happened off the loop
    assert [g["message"] for g in got] == [f"m{i}" for i in range(10)]
    assert [e["seq"] for e in stored] == list(range(1, 12)) and stored[-1]["type"] == "end"


def test_calls_left_live_by_a_crash_are_interrupted_at_start(tmp_path, voice_logs):
    db = tmp_path / "calls.sqlite3"
    _seed(db, "crashed", 0, None)
    _seed(db, "done", 0, "completed")

    async def start() -> None:
        _file_hub(db).store.close()

    asyncio.run(start())
    store = Store(db)
    assert store.call("crashed")["status"] == "interrupted" and store.call("crashed")["ended_at"]
    assert store.call("done")["status"] == "completed"
    assert any("interrupted" in r.getMessage() for r in voice_logs.records)


@pytest.mark.slow  # a real server with the tiny model (built from base)
def test_server_started_over_a_crashed_run_closes_its_calls_and_expires_old_ones(store_server):
    h, auth = store_server.http, _bearer(SUPERVISOR)
    crashed = httpx.get(f"{h}/calls/crashed-1", headers=auth).json()
    assert crashed["status"] == "interrupted" and crashed["ended_at"]
    assert httpx.get(f"{h}/calls/old-1", headers=auth).status_code == 404  # 40 days > 30
    assert httpx.get(f"{h}/calls/recent-1", headers=auth).status_code == 200
    db = store_server.db  # owner-only: the database and the WAL files SQLite made beside it
    assert {_mode(p) for p in db.parent.glob("calls.sqlite3*")} == {0o600}
    assert {p.name for p in db.parent.glob("calls.sqlite3*")} >= {
        "calls.sqlite3", "calls.sqlite3-wal", "calls.sqlite3-shm"}  # fmt: skip


# --- item 8: owner-only files, retention ------------------------------------------------------------


def test_database_and_wal_files_are_owner_only_in_a_new_private_folder(tmp_path):
    path = tmp_path / "data" / "voice" / "calls.sqlite3"
    store = Store(path)
    store.open_call("x", "stream", None, None, {})
    store.add_event("x", 1, {"type": "end"})
    files = sorted(path.parent.glob("calls.sqlite3*"))
    assert [f.name for f in files] == ["calls.sqlite3", "calls.sqlite3-shm", "calls.sqlite3-wal"]
    assert {_mode(f) for f in files} == {0o600} and _mode(path.parent) == 0o700
    store.close()
    old = tmp_path / "old.sqlite3"  # made world-readable by an earlier version
    Store(old).close()
    old.chmod(0o644)
    Store(old).close()
    assert _mode(old) == 0o600


def test_expire_deletes_only_finished_calls_older_than_the_limit_with_their_events(tmp_path):
    db = tmp_path / "calls.sqlite3"
    for call_id, days, status in [("old", 31, "completed"), ("old-broken", 45, "interrupted"),
                                  ("young", 29, "completed"), ("live", 31, None)]:  # fmt: skip
        _seed(db, call_id, days, status)
    store = Store(db)
    assert store.expire(30) == 2
    assert [c["id"] for c in store.calls()] == ["young", "live"]
    orphans = store.db.execute("SELECT COUNT(*) FROM events WHERE call_id LIKE 'old%'").fetchone()
    assert orphans == (0,)
    assert store.expire(30) == 0


def test_retention_runs_at_start_and_then_on_its_schedule(tmp_path):
    db = tmp_path / "calls.sqlite3"
    _seed(db, "expired-before-start", 10, "completed")

    async def run() -> tuple[bool, bool, bool]:
        hub = _file_hub(db, retention_days=7, retention_check_s=0.05)
        at_start = hub.store.summary("expired-before-start") is None
        _seed(db, "expired-while-running", 8, "completed")
        _seed(db, "kept", 6, "completed")
        await _until(lambda: hub.store.summary("expired-while-running") is None)
        kept = hub.store.summary("kept") is not None
        await hub.shutdown()
        return at_start, kept, hub._expiry.cancelled()

    at_start, kept, stopped = asyncio.run(run())
    assert at_start and kept and stopped


def test_retention_off_by_default_and_checked():
    assert ServerConfig().retention_days == 0  # keep forever unless asked
    from voice.errors import ConfigError

    with pytest.raises(ConfigError):
        ServerConfig(insecure_no_auth=True, retention_days=-1).validate()


# --- item 9: the database lives in a data folder, never in the checkout ----------------------------


def test_default_database_is_in_the_users_data_folder(tmp_path, monkeypatch):
    import argparse

    from voice.server.cli import config_from_args, register

    parser = argparse.ArgumentParser()
    commands = parser.add_subparsers()
    register(commands)
    serve = commands.choices["serve"]
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    config = config_from_args(parser.parse_args(["serve", "--insecure-no-auth"]))
    assert config.db_path == str(tmp_path / "xdg" / "voice" / "voice_calls.sqlite3")
    Store(config.db_path).close()
    assert _mode(tmp_path / "xdg" / "voice") == 0o700 and not list(tmp_path.glob("*.sqlite3"))
    monkeypatch.setenv("XDG_DATA_HOME", "relative/dir")  # invalid per the XDG spec: ignored
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    expected = tmp_path / "home" / ".local" / "share" / "voice" / "voice_calls.sqlite3"
    assert ServerConfig().db_path == str(expected)
    assert "~/.local/share/voice/voice_calls.sqlite3" in serve.format_help()  # documented


def test_git_ignores_sqlite_files():
    names = ["voice_calls.sqlite3", "voice_calls.sqlite3-wal", "voice_calls.sqlite3-shm"]
    r = subprocess.run(["git", "check-ignore", *names], cwd=REPO, capture_output=True, text=True)
    assert r.stdout.split() == names, r.stderr
