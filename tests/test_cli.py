"""The `voice` command as a user runs it: transcribe, models, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf


def voice(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "voice", *map(str, args)], capture_output=True, text=True, cwd=cwd
    )


def test_help_lists_the_subcommands():
    out = voice("--help").stdout
    for command in ("models", "transcribe", "demo"):
        assert command in out


def test_bad_files_are_reported_and_the_rest_transcribed(tmp_path, tiny_model_dir, demo_call):
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 20)
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    sf.write(tmp_path / "slow.wav", np.zeros(500), 500)
    files = [
        tmp_path / "corrupt.wav",
        demo_call.path,
        tmp_path / "empty.wav",
        tmp_path / "slow.wav",
    ]
    result = voice(
        "transcribe", "--json", "--model", tiny_model_dir, "--compute-type", "float32", *files
    )
    assert result.returncode == 1
    for name in ("corrupt.wav", "empty.wav", "slow.wav"):
        assert name in result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "end" and events[-1]["call_id"] == "demo_call"
    assert events[-1]["duration"] == pytest.approx(sf.info(demo_call.path).duration, abs=0.05)


def test_missing_model_exits_2_with_the_fix(tmp_path, demo_call):
    result = voice("transcribe", "--model", "nosuchmodel", "--cache-dir", tmp_path, demo_call.path)
    assert result.returncode == 2
    assert "nosuchmodel" in result.stderr and "not installed" in result.stderr


def test_models_pull_verifies_and_list_shows_it(tmp_path, base_model_dir):
    result = voice("models", "pull", "--cache-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "base" / "model.bin").stat().st_size == 145_217_532
    listing = voice(
        "models", "list", "--cache-dir", tmp_path, "--models-dir", tmp_path / "none"
    ).stdout
    assert "base" in listing
    # a truncated model is caught and the message says how to fix it
    with open(tmp_path / "base" / "model.bin", "r+b") as f:
        f.truncate(1000)
    result = voice(
        "transcribe", "--model", "base", "--cache-dir", tmp_path, base_model_dir / "config.json"
    )
    assert result.returncode == 2 and "voice models pull --force" in result.stderr


@pytest.mark.slow
def test_transcribe_json_is_ordered_and_follows_the_contract(base_model_dir, demo_call):
    result = voice("transcribe", "--json", demo_call.path)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in result.stdout.splitlines()]
    transcripts = [e for e in events if e["type"] == "transcript"]
    assert len(transcripts) == len(demo_call.lines)
    for event, (start, end, _) in zip(transcripts, demo_call.lines, strict=True):
        assert {"type", "call_id", "start", "end", "text", "latency_ms"} <= set(event)
        assert event["call_id"] == "demo_call" and event["text"]
        assert abs(event["start"] - start) < 0.3 and abs(event["end"] - end) < 0.3
        assert event["latency_ms"] > 0
    starts = [e["start"] for e in transcripts]
    assert starts == sorted(starts)
    assert events[-1]["type"] == "end"
