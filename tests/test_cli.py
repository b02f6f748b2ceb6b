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


# --- flag defaults come from the options dataclasses; loggers are named after their module --------


def _changed(cls, **new):
    """A subclass of the frozen options dataclass `cls` whose listed defaults differ."""
    import dataclasses

    fields = [(name, type(value), dataclasses.field(default=value)) for name, value in new.items()]
    return dataclasses.make_dataclass(cls.__name__, fields, bases=(cls,), frozen=True)


def test_serve_flags_take_their_defaults_from_server_config(monkeypatch):
    import dataclasses

    from voice.cli import build_parser
    from voice.server import config
    from voice.server.cli import CONFIG_FLAGS, config_from_args

    real = config.ServerConfig
    assert set(CONFIG_FLAGS.values()) <= {f.name for f in dataclasses.fields(real)}

    def other(value):
        if isinstance(value, bool):
            return not value
        if isinstance(value, (int, float)):
            return value + 1
        return {"127.0.0.1": "::1", "1.3": "1.2"}[value]

    defaults = real()
    new = {
        f: other(getattr(defaults, f))
        for f in CONFIG_FLAGS.values()
        if getattr(defaults, f) is not None
    }
    monkeypatch.setattr(config, "ServerConfig", _changed(real, **new))
    args = build_parser().parse_args(["serve"])
    for dest, field in CONFIG_FLAGS.items():
        assert getattr(args, dest) == getattr(config.ServerConfig(), field), dest
    monkeypatch.setattr(config, "ServerConfig", real)
    args = build_parser().parse_args(["serve", "--insecure-no-auth", "--db", "x.sqlite3"])
    assert config_from_args(args) == real(insecure_no_auth=True, db_path="x.sqlite3")


def test_asr_and_vad_flags_take_their_defaults_from_the_options(monkeypatch):
    from voice import asr, vad
    from voice.cli import build_parser

    monkeypatch.setattr(asr, "AsrOptions", _changed(asr.AsrOptions, beam_size=3,
                        compute_type="float32", window_seconds=10, hotwords=("a", "b")))  # fmt: skip
    monkeypatch.setattr(vad, "VadOptions", _changed(vad.VadOptions, backend="silero",
                                                    aggressiveness=3))  # fmt: skip
    parser = build_parser()
    for argv in (["transcribe", "x.wav"], ["demo"], ["eval", "m.jsonl"], ["serve"]):
        args = parser.parse_args(argv)
        got = (args.beam_size, args.compute_type, args.window, args.hotwords, args.vad,
               args.vad_aggressiveness)  # fmt: skip
        assert got == (3, "float32", 10, "a,b", "silero", 3), argv


def test_flag_help_shows_the_dataclass_defaults():
    from voice.asr import AsrOptions
    from voice.device import CPU_COMPUTE_TYPE, CUDA_COMPUTE_TYPE
    from voice.server.config import ServerConfig

    serve = " ".join(voice("serve", "--help").stdout.split())
    assert f"(default {ServerConfig().max_calls})" in serve
    assert f"(default {ServerConfig().port})" in serve and "default 1.3" in serve
    transcribe = " ".join(voice("transcribe", "--help").stdout.split())
    assert f"(default: {AsrOptions().beam_size})" in transcribe
    assert f"(default: {CPU_COMPUTE_TYPE} on the CPU, {CUDA_COMPUTE_TYPE} on a GPU" in transcribe
    assert f"(default: {AsrOptions().device})" in transcribe
    assert "(default: webrtc)" in transcribe and "(default: 2)" in transcribe


def test_each_module_logs_under_its_own_name():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    named = re.compile(r"""getLogger\(\s*["']voice["']\s*\)""")
    shared = {
        path.relative_to(root).as_posix()
        for package in ("voice", "eval", "finetune")
        for path in (root / package).rglob("*.py")
        if named.search(path.read_text("utf-8"))
    }
    assert not shared, f"getLogger(__name__), not the shared 'voice' logger: {sorted(shared)}"
    from voice import asr
    from voice.server import scheduler

    assert asr.log.name == "voice.asr" and scheduler.log.name == "voice.server.scheduler"


def test_cli_shows_log_records_of_every_package():
    code = (
        "import logging, sys\n"
        "import eval.cli\n"
        "from voice.cli import main\n"
        "def run(args):\n"
        "    logging.getLogger('eval.runner').info('eval-info')\n"
        "    logging.getLogger('finetune.train').info('finetune-info')\n"
        "    logging.getLogger('voice.pipeline').debug('voice-debug')\n"
        "    return 0\n"
        "eval.cli.run = run\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )
    quiet = subprocess.run([sys.executable, "-c", code, "eval", "m.jsonl"], capture_output=True,
                           text=True)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert "INFO eval-info" in quiet.stderr and "INFO finetune-info" in quiet.stderr
    assert "voice-debug" not in quiet.stderr
    verbose = subprocess.run([sys.executable, "-c", code, "-v", "eval", "m.jsonl"],
                             capture_output=True, text=True)  # fmt: skip
    assert "DEBUG voice-debug" in verbose.stderr and "INFO eval-info" in verbose.stderr


def test_models_list_skips_an_interrupted_fine_tunes_folders(tmp_path, base_model_dir):
    """`.NAME.tmp` (a staged export) and `.NAME.work` hold a model.bin but are no models: the
    demo once picked one and failed with "model directory .exp.tmp does not exist"."""
    import shutil

    from voice.models import ModelStore

    project = tmp_path / "models"
    for name in ("tuned", ".tuned.tmp", ".tuned.work"):
        shutil.copytree(base_model_dir, project / name)
    store = ModelStore(cache_dir=tmp_path / "cache", project_dir=project)
    assert [e.name for e in store.list()] == ["tuned"]
    assert all(store.resolve(e.name) == e.path for e in store.list())
