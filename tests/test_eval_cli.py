"""`voice eval` over several manifests, and the decoder prompt (`--initial-prompt`, `+prompt`,
the model card's `initial_prompt`) on a tiny real model with espeak-ng phone speech."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from finetune_fixtures import make_manifest

from eval.metrics import score_utterance
from eval.report import compare, manifest_slugs
from eval.results import SUMMARY_KEYS, ModelResult, summary_json
from voice.asr import CANTONESE_PROMPT, AsrOptions, Transcriber, Transcript, split_prompt_suffix
from voice.audio import write_wav
from voice.cli import build_parser, main
from voice.commands import asr_from_args
from voice.vad import VadOptions

DELTA_KEYS = {"cer_delta_vs_first", "cer_delta_ci95"}


def voice(*args):
    return subprocess.run(
        [sys.executable, "-m", "voice", *map(str, args)], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def manifests(tmp_path_factory) -> tuple[Path, Path]:
    """Two small espeak-ng manifests (8 kHz mu-law phone line), both named manifest.jsonl."""
    root = tmp_path_factory.mktemp("manifests")
    a = make_manifest(
        root / "a", sentences=("我想查下我張單", "唔該"), voices={"test": ("yue+m2",)}
    )
    b = make_manifest(root / "b", sentences=("幾時可以送貨",), voices={"test": ("yue+f2",)})
    return a, b


# --- several manifests, end to end with a real model ------------------------------------------


@pytest.mark.slow
def test_eval_runs_every_model_over_every_manifest(manifests, tiny_model_dir, tmp_path):
    a, b = manifests
    prompted = f"{tiny_model_dir}+prompt"
    result = voice(
        "eval", a, b, "--model", tiny_model_dir, "--model", prompted, "--compute-type", "float32",
        "--json", "--no-progress", "--report", tmp_path / "rep",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    entries = json.loads(result.stdout.strip().splitlines()[-1])["models"]
    assert [(e["manifest"], e["model"]) for e in entries] == [
        (str(a), str(tiny_model_dir)), (str(a), prompted),
        (str(b), str(tiny_model_dir)), (str(b), prompted),
    ]  # fmt: skip
    for entry, utterances in zip(entries, [2, 2, 1, 1], strict=True):
        assert list(entry)[: len(SUMMARY_KEYS)] == list(SUMMARY_KEYS)
        assert entry["utterances"] == utterances
    first_a, second_a, first_b, second_b = entries
    assert not DELTA_KEYS & set(first_a) and not DELTA_KEYS & set(first_b)
    for first, second in [(first_a, second_a), (first_b, second_b)]:
        lo, hi = second["cer_delta_ci95"]
        assert second["cer_delta_vs_first"] == pytest.approx(second["cer"] - first["cer"], abs=1e-5)
        assert lo <= second["cer_delta_vs_first"] <= hi
    assert "initial_prompt" not in first_a and second_a["initial_prompt"] == CANTONESE_PROMPT
    # one report per manifest (the two stems clash), and an index over them
    rep = tmp_path / "rep"
    for slug in ["manifest", "manifest-2"]:
        assert (rep / slug / "report.md").is_file() and (rep / slug / "summary.json").is_file()
    index = (rep / "index.md").read_text("utf-8")
    assert str(a) in index and str(b) in index and "manifest-2/report.md" in index
    assert not (rep / "report.md").exists()


def test_a_broken_second_manifest_exits_2_before_any_model_loads(manifests, tmp_path):
    broken = tmp_path / "broken.jsonl"
    good_line = manifests[0].read_text("utf-8").splitlines()[0]
    broken.write_text(good_line + '\n{"audio_filepath": "x.wav"}\n', encoding="utf-8")
    result = voice("eval", manifests[0], broken, "--model", "nosuchmodel", "--no-progress")
    assert result.returncode == 2
    assert "broken.jsonl:2" in result.stderr and "text" in result.stderr
    assert "nosuchmodel" not in result.stderr  # no model was looked up


# --- several manifests in process, with a stand-in model --------------------------------------


class Echo:
    """Answers `text` for every segment."""

    def __init__(self, text: str):
        self.text = text

    def transcribe(self, segment):
        return Transcript(self.text, asr_ms=1.0)


@pytest.fixture
def two_manifests(tmp_path):
    write_wav(tmp_path / "a.wav", np.random.default_rng(0).standard_normal(16000) * 0.05, 16000)
    paths = []
    for name, text in [("one", "唔該"), ("two", "你好")]:
        line = {"audio_filepath": "a.wav", "text": text, "call_id": name}
        (tmp_path / f"{name}.jsonl").write_text(
            json.dumps(line, ensure_ascii=False) + "\n", "utf-8"
        )
        paths.append(str(tmp_path / f"{name}.jsonl"))
    return paths


@pytest.fixture
def loads(monkeypatch):
    loaded = []

    def fake(args):
        loaded.append(args.model)
        return Echo("唔該" if args.model == "good" else "你"), VadOptions()

    monkeypatch.setattr("voice.commands.asr_from_args", fake)
    return loaded


def test_console_lines_name_the_manifest_and_models_load_once(two_manifests, loads, capsys):
    argv = ["eval", *two_manifests, "--model", "good", "--model", "bad", "--no-progress"]
    assert main(argv) == 0
    assert loads == ["good", "bad"]
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4
    starts = sorted(tuple(line.split(": ", 2)[:2]) for line in lines)
    assert starts == sorted((m, model) for m in two_manifests for model in ["good", "bad"])


def test_one_manifest_prints_as_before_plus_the_manifest_key(two_manifests, loads, capsys):
    assert main(["eval", two_manifests[0], "--model", "good", "--no-progress"]) == 0
    assert capsys.readouterr().out.startswith("good: CER 0.00%")
    assert main(["eval", two_manifests[0], "--model", "good", "--json", "--no-progress"]) == 0
    (entry,) = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    assert entry["manifest"] == two_manifests[0] and not DELTA_KEYS & set(entry)


def test_fail_above_applies_to_every_manifest(two_manifests, loads, capsys):
    # "good" says 唔該: right on the first manifest, wrong on the second
    assert main(["eval", two_manifests[0], "--model", "good", "--fail-above", "0.1"]) == 0
    assert main(["eval", *two_manifests, "--model", "good", "--fail-above", "0.1"]) == 1
    assert f"good on {two_manifests[1]}" in capsys.readouterr().err


def test_the_same_manifest_twice_is_refused(two_manifests, loads, capsys):
    assert main(["eval", two_manifests[0], two_manifests[0], "--no-progress"]) == 2
    assert "more than once" in capsys.readouterr().err and loads == []


def test_eval_help_mentions_several_manifests_and_prompt_suffix():
    out = voice("eval", "--help").stdout
    assert "MANIFEST [MANIFEST ...]" in out and "+prompt" in out and "--initial-prompt" in out


@pytest.mark.parametrize(
    "manifests, slugs",
    [
        (["a/test.jsonl", "b/test.jsonl", "c/Test.jsonl"], ["test", "test-2", "Test-3"]),
        (["dev.jsonl", "real/test.jsonl"], ["dev", "test"]),
        (["index.md.jsonl", "weird name!.jsonl"], ["index.md-2", "weird_name"]),
    ],
)
def test_manifest_slugs_are_stems_made_unique(manifests, slugs):
    assert manifest_slugs(manifests) == slugs


def _result(model: str, manifest: str, hypotheses: list[str]) -> ModelResult:
    refs = ["唔該我想查下我張單", "點解今個月貴咗咁多", "打去八五三二", "好啦唔該晒"]
    scores = tuple(
        score_utterance(ref, hyp, id=f"u{i}")
        for i, (ref, hyp) in enumerate(zip(refs, hypotheses, strict=True))
    )
    return ModelResult(model, "utterance", scores, len(scores), 8.0, 1.0, manifest=manifest)


def test_json_deltas_are_the_reports_paired_bootstrap_per_manifest():
    right = ["唔該我想查下我張單", "點解今個月貴咗咁多", "打去8532", "好啦唔該晒"]
    wrong = ["唔該我想查張單", "點解今個月貴咗", "打去8532", "好啦"]
    results = [
        _result("a", "m1.jsonl", right), _result("b", "m1.jsonl", wrong),
        _result("a", "m2.jsonl", wrong), _result("b", "m2.jsonl", right),
    ]  # fmt: skip
    entries = summary_json(results)["models"]
    assert [bool(DELTA_KEYS & set(e)) for e in entries] == [False, True, False, True]
    for first, second, entry in [(0, 1, entries[1]), (2, 3, entries[3])]:
        (c,) = compare([results[first], results[second]])
        assert entry["cer_delta_vs_first"] == pytest.approx(c.diff, abs=1e-6)
        assert entry["cer_delta_ci95"] == pytest.approx([c.lo, c.hi], abs=1e-6)
    assert entries[1]["cer_delta_vs_first"] > 0 > entries[3]["cer_delta_vs_first"]
    assert entries[1]["cer_delta_ci95"][0] > 0  # every utterance got worse: significant


# --- the decoder prompt ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given, expected",
    [
        ("base+prompt", ("base", True)),
        ("models/yue-base-synth+prompt", ("models/yue-base-synth", True)),
        ("base", ("base", False)),
        ("+prompt", ("+prompt", False)),  # no model name before the suffix
        ("base+prompt+prompt", ("base+prompt", True)),
    ],
)
def test_split_prompt_suffix(given, expected):
    assert split_prompt_suffix(given) == expected


def _starts_with_prompt(t: Transcriber, text: str) -> bool:
    encoded = t.tokenizer.encode(" " + text)
    return t._prompt[: 1 + len(encoded)] == [t.tokenizer.sot_prev, *encoded]


@pytest.fixture
def carded_model(tmp_path, tiny_model_dir) -> Path:
    """The tiny model with a model card that carries a decoder prompt."""
    model = tmp_path / "carded"
    shutil.copytree(tiny_model_dir, model)
    card = {"name": "carded", "initial_prompt": "喂，唔該。"}
    (model / "model_card.json").write_text(json.dumps(card, ensure_ascii=False), "utf-8")
    return model


def test_model_card_prompt_reaches_the_decoder(carded_model):
    t = Transcriber.load(carded_model, AsrOptions(compute_type="float32"))
    assert t.prompt_text == "喂，唔該。" and _starts_with_prompt(t, "喂，唔該。")
    own = Transcriber.load(carded_model, AsrOptions(compute_type="float32", initial_prompt="你好"))
    assert own.prompt_text == "你好" and _starts_with_prompt(own, "你好")
    none = Transcriber.load(carded_model, AsrOptions(compute_type="float32", initial_prompt=""))
    assert none.prompt_text is None and none.tokenizer.sot_prev not in none._prompt
    assert none._prompt[0] == none.tokenizer.sot_sequence[0]


def _from_cli(*argv: str) -> Transcriber:
    args = build_parser().parse_args(["transcribe", "x.wav", "--compute-type", "float32", *argv])
    return asr_from_args(args)[0]


def test_initial_prompt_flag_and_prompt_suffix(carded_model):
    assert _from_cli("--model", str(carded_model)).prompt_text == "喂，唔該。"
    assert _from_cli("--model", str(carded_model), "--initial-prompt", "").prompt_text is None
    named = _from_cli("--model", str(carded_model), "--initial-prompt", "cantonese")
    assert named.prompt_text == CANTONESE_PROMPT and named.name == "carded"
    suffixed = _from_cli("--model", f"{carded_model}+prompt", "--initial-prompt", "")
    assert suffixed.name == "carded+prompt" and suffixed.prompt_text == CANTONESE_PROMPT
    assert _starts_with_prompt(suffixed, CANTONESE_PROMPT)
