"""`voice batch transcribe`: folders and manifests to resumable JSONL, locally and on a local Ray."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from voice.asr import AsrOptions
from voice.batch import BatchOptions, ModelSpec, ResultsWriter, run_batch
from voice.errors import ConfigError

# the tiny random model decodes fast; float32 as test_cli runs it
FLAGS = ("--compute-type", "float32", "--workers", "2", "--no-progress")
TIMING = ("latency_ms", "asr_ms")  # wall-clock measurements: differ between any two runs


def voice(*args):
    return subprocess.run(
        [sys.executable, "-m", "voice", *map(str, args)], capture_output=True, text=True
    )


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def by_file(lines: list[dict]) -> dict[str, list[dict]]:
    """Each file's lines in order, timings left out: what two runs must agree on."""
    out: dict[str, list[dict]] = {}
    for line in lines:
        out.setdefault(line["file"], []).append({k: v for k, v in line.items() if k not in TIMING})
    return out


@pytest.fixture(scope="module")
def calls(tmp_path_factory, demo_call) -> Path:
    """A folder of three real calls (the demo call under three names) and one corrupt WAV."""
    folder = tmp_path_factory.mktemp("archive")
    for name in ("alpha", "bravo", "charlie"):
        shutil.copy(demo_call.path, folder / f"{name}.wav")
    (folder / "corrupt.wav").write_bytes(b"RIFF....WAVEfmt garbage" * 20)
    return folder


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, calls, tiny_model_dir):
    """The folder through the CLI once, locally: (process result, output path)."""
    out = tmp_path_factory.mktemp("out") / "results.jsonl"
    result = voice("batch", "transcribe", calls, "--out", out, "--model", tiny_model_dir, *FLAGS)
    return result, out


def spec(tiny_model_dir) -> ModelSpec:
    return ModelSpec(str(tiny_model_dir), AsrOptions(compute_type="float32"))


def test_a_folder_becomes_whole_files_of_transcripts_and_a_failure(
    first_run, calls, tiny_model_dir
):
    result, out = first_run
    assert result.returncode == 1, result.stderr
    assert "corrupt.wav" in result.stderr  # reported as it happened
    assert "3 transcribed, 1 failed, 0 already done" in result.stderr
    files = by_file(read_lines(out))
    assert set(files) == {
        str((calls / f"{n}.wav").resolve()) for n in ("alpha", "bravo", "charlie", "corrupt")
    }
    failed = files.pop(str((calls / "corrupt.wav").resolve()))
    assert [f["type"] for f in failed] == ["file_failed"] and "corrupt.wav" in failed[0]["error"]
    # the same transcripts `voice transcribe --json` prints for the file with the same model
    single = voice("transcribe", "--json", "--model", tiny_model_dir, "--compute-type", "float32",
                   calls / "alpha.wav")  # fmt: skip
    expected = [json.loads(line) for line in single.stdout.splitlines()]
    expected = [{k: v for k, v in e.items() if k not in TIMING} for e in expected]
    expected = [e for e in expected if e["type"] == "transcript"]
    assert expected, "the tiny model should transcribe something for the comparison to mean much"
    for name in ("alpha", "bravo", "charlie"):
        lines = files[str((calls / f"{name}.wav").resolve())]
        *transcripts, done = lines
        assert [t["text"] for t in transcripts] == [e["text"] for e in expected]
        assert all(t["type"] == "transcript" and t["call_id"] == name for t in transcripts)
        if name == "alpha":
            assert [{**t, "file": None} for t in transcripts] == [
                {**e, "file": None} for e in expected
            ]
        assert done["type"] == "file_done" and done["utterances"] == len(transcripts)
        assert done["seconds"] == pytest.approx(17.33, abs=0.05)


def test_a_rerun_decodes_nothing_and_leaves_the_output_alone(first_run, calls, tiny_model_dir):
    _, out = first_run
    before = out.read_bytes()
    again = voice("batch", "transcribe", calls, "--out", out, "--model", tiny_model_dir, *FLAGS)
    assert again.returncode == 1  # the output still records a failed file
    assert "0 transcribed, 0 failed, 4 already done" in again.stderr
    assert out.read_bytes() == before


def test_a_restart_drops_and_redoes_only_the_interrupted_file(
    first_run, calls, tiny_model_dir, tmp_path
):
    _, done_out = first_run
    lines = done_out.read_text().splitlines()
    bravo = str((calls / "bravo.wav").resolve())
    others = [line for line in lines if json.loads(line)["file"] != bravo]
    bravo_lines = [line for line in lines if json.loads(line)["file"] == bravo]
    # bravo was being written when the run died: its transcripts but no marker, a torn last line
    out = tmp_path / "results.jsonl"
    torn = bravo_lines[0][: len(bravo_lines[0]) // 2]
    out.write_text("\n".join(others + bravo_lines[:-1]) + "\n" + torn)

    summary = run_batch([calls], out, spec(tiny_model_dir), BatchOptions(progress=False))
    assert (summary.done, summary.failed, summary.skipped_done, summary.skipped_failed) == (
        1,
        0,
        2,
        1,
    )
    assert summary.dropped_lines == len(bravo_lines)  # its transcripts and the torn line
    after = out.read_text().splitlines()
    assert after[: len(others)] == others  # finished files untouched, in place
    assert by_file(read_lines(out)) == by_file(read_lines(done_out))


def test_manifest_inputs_take_call_ids_and_need_no_reference_text(calls, tiny_model_dir, tmp_path):
    shutil.copy(calls / "charlie.wav", tmp_path / "charlie.wav")
    alpha = str(calls / "alpha.wav")
    records = [
        {
            "audio_filepath": alpha,
            "call_id": "c-001",
            "offset": 1.0,
            "duration": 2.0,
            "text": "唔該",
        },
        {"audio_filepath": alpha, "call_id": "c-001", "offset": 5.0},  # no text: fine here
        {"audio_filepath": "charlie.wav"},  # relative to the manifest's folder
    ]
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    out = tmp_path / "out.jsonl"
    summary = run_batch([manifest], out, spec(tiny_model_dir), BatchOptions(progress=False))
    assert (summary.files, summary.done) == (2, 2)  # alpha once (whole), however many lines name it
    markers = [r for r in read_lines(out) if r["type"] == "file_done"]
    assert {(m["file"], m["call_id"]) for m in markers} == {
        (str((calls / "alpha.wav").resolve()), "c-001"),
        (str((tmp_path / "charlie.wav").resolve()), "charlie"),
    }


def test_an_output_that_is_not_batch_results_is_refused_untouched(tmp_path):
    out = tmp_path / "manifest.jsonl"
    out.write_text('{"audio_filepath": "a.wav", "text": "x"}\n{"audio_filepath": "b.wav"}\n')
    before = out.read_bytes()
    with pytest.raises(ConfigError, match="not a `voice batch` result"):
        ResultsWriter(out)
    assert out.read_bytes() == before


def test_a_missing_input_stops_before_anything_runs(tmp_path):
    out = tmp_path / "out.jsonl"
    with pytest.raises(ConfigError, match="no such file"):
        run_batch([tmp_path / "nope"], out, ModelSpec("base"))
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own context fields
def test_ray_gives_the_same_lines_as_the_local_run(first_run, calls, tiny_model_dir, tmp_path):
    ray = pytest.importorskip("ray")
    _, local_out = first_run
    out = tmp_path / "ray.jsonl"
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a `ray start`ed one
    try:
        options = BatchOptions(ray="auto", progress=False, batch_size=2)
        summary = run_batch([calls], out, spec(tiny_model_dir), options)
    finally:
        ray.shutdown()
    assert (summary.done, summary.failed) == (3, 1)
    assert by_file(read_lines(out)) == by_file(read_lines(local_out))
