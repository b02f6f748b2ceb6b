"""People's corrections become training data (issue 16 item 4), end to end: calls streamed with
recording on, lines corrected through the API, exported, checked, and trained on."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
import soundfile as sf
from finetune_fixtures import make_manifest
from test_recording import _call
from test_server import _bearer, _serve

from voice.audio import mulaw_encode
from voice.quality.export import assign_splits, speaker_of

pytestmark = [pytest.mark.timeout(600), pytest.mark.slow]

SUPERVISOR = "sup-token-0123456789abcdef"
CORRECT = ["喂，你好，我想查下我張單。", "點解我今個月嘅月費貴咗咁多㗎？"]


def _voice(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voice", *args], capture_output=True, text=True)


def test_corrections_flow_from_a_live_call_into_fine_tuning(tmp_path, tiny_model_dir, demo_call):
    pcm, _ = sf.read(demo_call.path, dtype="int16")
    audio = mulaw_encode(pcm)
    (tmp_path / "auth.json").write_text(json.dumps({"tokens": {SUPERVISOR: "supervisor"}}))
    records = tmp_path / "recordings"
    calls = ["FIX-1", "FIX-2", "FIX-3", "FIX-4"]
    corrected: dict[tuple[str, int], str] = {}
    with _serve(tmp_path, "--model", str(tiny_model_dir), "--auth", str(tmp_path / "auth.json"),
                "--record-dir", str(records), "--max-queue-seconds", "120") as server:  # fmt: skip
        for n, call_id in enumerate(calls):
            asyncio.run(_call(server.ws, call_id, audio, _bearer(SUPERVISOR),
                              caller=f"+852 5555 000{n % 2}"))  # fmt: skip
        for call_id in calls:
            record = httpx.get(f"{server.http}/calls/{call_id}", headers=_bearer(SUPERVISOR),
                               timeout=10).json()  # fmt: skip
            lines = [e for e in record["events"] if e["type"] == "transcript"]
            assert lines, f"{call_id}: no transcript to correct"
            for line, text in zip(lines, CORRECT, strict=False):
                answer = httpx.post(f"{server.http}/v1/calls/{call_id}/corrections",
                                    json={"seq": line["seq"], "text": text},
                                    headers=_bearer(SUPERVISOR), timeout=10)  # fmt: skip
                assert answer.status_code == 201, answer.text
                corrected[(call_id, line["seq"])] = text
        # a later correction of the same line wins
        first = next(iter(corrected))
        httpx.post(f"{server.http}/v1/calls/{first[0]}/corrections",
                   json={"seq": first[1], "text": "我想查下張單"}, headers=_bearer(SUPERVISOR),
                   timeout=10).raise_for_status()  # fmt: skip
        corrected[first] = "我想查下張單"
        bad = httpx.post(f"{server.http}/v1/calls/FIX-1/corrections", json={"seq": 1, "text": ""},
                         headers=_bearer(SUPERVISOR), timeout=10)  # fmt: skip
        assert bad.status_code == 400

    out = tmp_path / "corrections"
    exported = _voice("data", "export-corrections", "--db", str(tmp_path / "calls.sqlite3"),
                      "--record-dir", str(records), "--out", str(out))  # fmt: skip
    assert exported.returncode == 0, exported.stderr
    manifest = out / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text(encoding="utf-8").splitlines()]
    assert {(r["call_id"], r["text"]) for r in rows} == {(c, t) for (c, _), t in corrected.items()}
    assert len(rows) == len(corrected)
    for row in rows:  # split by call, speakers hashed, audio cut to the utterance
        assert row["split"] == assign_splits(calls)[row["call_id"]]
        assert row["speaker"].startswith("spk_") and "5555" not in row["speaker"]
        clip, rate = sf.read(out / row["audio_filepath"])
        assert rate == 8000 and len(clip) / rate == pytest.approx(row["duration"], abs=0.01)
        assert np.abs(clip).max() > 0.01  # speech, not silence
    speakers = {r["speaker"] for r in rows}
    assert len(speakers) == 2  # two callers, four calls
    assert {r["split"] for r in rows} == {"train", "dev", "test"}
    assert (out.stat().st_mode & 0o777, manifest.stat().st_mode & 0o777) == (0o700, 0o600)
    assert _voice("data", "check", str(manifest)).returncode == 0

    from finetune.config import FinetuneOptions
    from finetune.train import finetune

    synthetic = make_manifest(tmp_path / "synth", sentences=("我想查下我張單", "唔該"),
                              voices={"train": ("yue+f1",), "dev": ("yue+f2",),
                                      "test": ("yue+m2",)})  # fmt: skip
    options = FinetuneOptions(base_model=str(tiny_model_dir), mode="decoder", window=10,
                              max_steps=4, eval_every=2, batch_size=2, lr=3e-3, warmup_steps=1,
                              quantization="int8", threads=2, real_manifest="",
                              check_manifests="", corrections=str(manifest))  # fmt: skip
    card = finetune(synthetic, tmp_path / "models" / "fixed", options, progress=False,
                    allow_regression=True).card  # fmt: skip
    used = card["corrections"][0]
    assert used["manifest"] == str(manifest)
    assert sorted(i for ids in used["correction_ids"].values() for i in ids) == sorted(
        r["correction_id"] for r in rows
    )
    assert card["real_train_utterances"] == sum(r["split"] == "train" for r in rows)
    assert card["selected_on"] == "real dev CER"
    assert any(e["set"] == "corrections test" for e in card["evaluations"])


def test_speakers_and_splits_are_stable_and_private():
    assert speaker_of("C-1", {"caller": "+85291234567"}) == speaker_of(
        "C-2", {"from": "+85291234567"}
    )
    assert "9123" not in speaker_of("C-1", {"caller": "+85291234567"})
    assert speaker_of("C-1", {}) != speaker_of("C-2", {})
    splits = assign_splits([f"c{i}" for i in range(30)])
    assert sorted(splits.values()).count("test") == 3 and list(splits.values()).count("dev") == 3
    assert assign_splits([f"c{i}" for i in range(30)]) == splits  # the same calls, same splits
    assert set(assign_splits(["a", "b"]).values()) == {"train"}
