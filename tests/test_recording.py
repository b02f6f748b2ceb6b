"""Opt-in call recording (issue 16 item 1): the caller's bytes as they arrived, owner-only, in the
call record, removed with the call, repaired after a crash."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from test_server import _serve
from websockets.asyncio.client import connect

from voice.audio import mulaw_encode
from voice.files import private_dir
from voice.server import recording
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.store import DAY_S, Store
from voice.vad import VadOptions

pytestmark = [pytest.mark.timeout(300)]


async def _call(ws_base: str, call_id: str, data: bytes, headers: dict | None = None,
                **start) -> list[dict]:  # fmt: skip
    """Stream a mu-law call over /stream (`start`: more keys of the start message) and return the
    events that come back."""
    events = []
    async with connect(ws_base + "/stream", additional_headers=headers) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "mulaw",
                                  "sample_rate": 8000, **start}))  # fmt: skip
        for i in range(0, len(data), 1600):
            await ws.send(data[i : i + 1600])
        await ws.send(json.dumps({"type": "stop"}))
        async for message in ws:
            events.append(json.loads(message))
    return events


def test_a_recorded_call_keeps_the_bytes_it_arrived_in(tmp_path, tiny_model_dir, demo_call):
    pcm, _ = sf.read(demo_call.path, dtype="int16")
    sent = mulaw_encode(pcm)
    records = tmp_path / "recordings"
    with _serve(tmp_path, "--model", str(tiny_model_dir), "--insecure-no-auth",
                "--record-dir", str(records)) as server:  # fmt: skip
        asyncio.run(_call(server.ws, "REC-1", sent))
        asyncio.run(_call(server.ws, "REC-2/../x", sent[:8000]))  # an id unsafe as a path
        import httpx

        record = httpx.get(server.http + "/calls/REC-1", timeout=10).json()
    meta = record["meta"]["recording"]
    assert meta["encoding"] == "mulaw" and meta["sample_rate"] == 8000
    assert meta["seconds"] == pytest.approx(len(sent) / 8000, abs=0.01)
    path = records / meta["file"]
    assert path.stat().st_mode & 0o777 == 0o600 and records.stat().st_mode & 0o777 == 0o700
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "ULAW")
    assert path.read_bytes()[recording.HEADER_BYTES :] == sent  # not re-encoded: the same bytes
    names = sorted(p.name for p in records.iterdir())
    assert len(names) == 2 and all("/" not in n and ".." not in n for n in names)


def test_recording_is_off_by_default(tmp_path, tiny_model_dir, demo_call):
    pcm, _ = sf.read(demo_call.path, dtype="int16")
    with _serve(tmp_path, "--model", str(tiny_model_dir), "--insecure-no-auth") as server:
        asyncio.run(_call(server.ws, "NOREC", mulaw_encode(pcm[:16000])))
        import httpx

        record = httpx.get(server.http + "/calls/NOREC", timeout=10).json()
    assert "recording" not in record["meta"]
    assert not list(tmp_path.rglob("*.wav"))


def _hub(db: Path, records: Path, **overrides) -> CallHub:
    config = ServerConfig(insecure_no_auth=True, db_path=str(db), record_dir=str(records),
                          **overrides)  # fmt: skip
    return CallHub(config, Store(db), ServerMetrics(), VadOptions(), None, None)


def _seed_recorded(db: Path, records: Path, call_id: str, days_ago: float, live: bool) -> Path:
    """A stored call with a recording file; `live` leaves it as a crash would."""
    store = Store(db)
    name = recording.file_name(call_id)
    store.open_call(call_id, "stream", None, None,
                    {"recording": {"file": name, "encoding": "mulaw", "sample_rate": 8000}},
                    now=time.time() - days_ago * DAY_S)  # fmt: skip
    if not live:
        store.close_call(call_id, "completed")
        store.db.execute("UPDATE calls SET started_at=? WHERE id=?",
                         (time.time() - days_ago * DAY_S, call_id))  # fmt: skip
    store.close()
    private_dir(records)
    recorder = recording.CallRecorder(records / name, "mulaw", 8000)
    recorder.write(bytes(range(256)) * 40)
    if not live:
        recorder.close()
    else:
        recorder._file.flush()  # the process died here: sizes never written
    return records / name


def test_retention_deletes_recordings_with_their_calls(tmp_path):
    db, records = tmp_path / "calls.sqlite3", tmp_path / "rec"
    old = _seed_recorded(db, records, "OLD", days_ago=40, live=False)
    new = _seed_recorded(db, records, "NEW", days_ago=1, live=False)

    async def run() -> None:
        hub = _hub(db, records, retention_days=30)
        await hub.shutdown()
        hub.store.close()

    asyncio.run(run())
    assert not old.exists() and new.exists()
    store = Store(db)
    assert store.summary("OLD") is None and store.summary("NEW") is not None


def test_a_recording_cut_off_by_a_crash_is_repaired_at_start(tmp_path):
    db, records = tmp_path / "calls.sqlite3", tmp_path / "rec"
    path = _seed_recorded(db, records, "CRASH", days_ago=0, live=True)
    assert sf.info(path).frames == 0  # unreadable as audio until repaired

    async def run() -> None:
        hub = _hub(db, records)
        await hub.shutdown()
        hub.store.close()

    asyncio.run(run())
    assert sf.info(path).frames == 256 * 40
    assert Store(db).summary("CRASH")["status"] == "interrupted"
    data, _ = sf.read(path, dtype="int16")
    assert np.abs(data).max() > 0
