"""eval: the --json contract, the --report files, and `voice eval` end to end."""

import json

import numpy as np
import pytest

from eval.metrics import score_utterance
from eval.report import write_report
from eval.results import SUMMARY_KEYS, ModelResult, summary_json
from eval.vadscore import VadScore
from voice.asr import Transcript
from voice.audio import write_wav
from voice.cli import main
from voice.vad import VadOptions

CONTRACT = ["model", "cer", "mer", "wer", "utterances", "rtf", "latency_p50_ms", "latency_p95_ms"]
PAIRS = [  # (reference, hypothesis of model A, hypothesis of model B, speaker, call)
    ("唔該，我想查下我張單。", "唔該我想查下我張單", "唔該我想查下張單", "spk1", "c1"),
    ("點解我今個月嘅月費貴咗咁多㗎？", "點解我今個月月費貴咗咁多", "點解今個月費貴", "spk1", "c1"),
    ("我個account login唔到", "我個acount login唔到", "我個account login唔到", "spk2", "c2"),
    ("打去八五三二", "打去8532", "打去8533", "spk2", "c2"),
]


def _result(model: str, column: int, mode: str = "utterance") -> ModelResult:
    scores = tuple(
        score_utterance(
            row[0], row[column], id=f"u{i}", speaker=row[3], call_id=row[4],
            latency_ms=100.0 + 10 * i, audio_seconds=2.0,
        )
        for i, row in enumerate(PAIRS)
    )  # fmt: skip
    return ModelResult(
        model=model, mode=mode, scores=scores, utterances=len(scores), audio_seconds=8.0,
        processing_seconds=2.0, latencies_ms=tuple(s.latency_ms for s in scores),
        vad=VadScore(8.0, 8.5, 0.4, 0.9) if mode == "call" else None,
    )  # fmt: skip


def test_summary_json_has_exactly_the_contract():
    summary = summary_json([_result("models/a", 1), _result("models/b", 2, mode="call")])
    assert list(summary) == ["models"]
    assert list(SUMMARY_KEYS) == CONTRACT
    for entry in summary["models"]:
        assert list(entry)[: len(CONTRACT)] == CONTRACT  # contract keys first, extras after
    a, b = summary["models"]
    assert a["model"] == "models/a" and a["utterances"] == 4
    assert 0 < a["cer"] < 1 and isinstance(a["mer"], float) and isinstance(a["wer"], float)
    assert a["rtf"] == 0.25
    assert a["latency_p50_ms"] == 115.0 and a["latency_p95_ms"] == pytest.approx(128.5)
    assert "vad_miss_rate" not in a and b["vad_miss_rate"] == 0.05
    json.dumps(summary)  # serialisable, no NaN


def test_report_writes_every_file(tmp_path):
    results = [_result("models/a", 1), _result("models/b", 2)]
    written = write_report(tmp_path / "rep", results, manifest="m.jsonl", bootstrap_n=200)
    rep = tmp_path / "rep"
    for name in ["report.md", "report.html", "summary.json"]:
        assert (rep / name).is_file()
    for slug in ["1-a", "2-b"]:
        lines = (rep / slug / "utterances.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(lines) == len(PAIRS)
        row = json.loads(lines[0])
        for key in ["reference", "hypothesis", "ref_norm", "hyp_norm", "cer", "latency_ms"]:
            assert key in row
        assert row["reference"] == PAIRS[0][0] and row["speaker"] == "spk1"
        for plot in ["cer_by_speaker", "cer_by_call", "error_types", "latency"]:
            assert (rep / slug / f"{plot}.png").read_bytes()[:4] == b"\x89PNG"
    assert all(p.exists() for p in written)
    assert not list(rep.rglob(".*.tmp"))  # atomic writes leave no temporary files
    md = (rep / "report.md").read_text(encoding="utf-8")
    assert "Side by side" in md and "95% CI" in md and "Worst units" in md
    html = (rep / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == 8  # self-contained: 4 plots per model
    assert "點解我今個月嘅月費貴咗咁多㗎" in html and "Side by side" in html
    assert json.loads((rep / "summary.json").read_text())["models"][1]["model"] == "models/b"


# --- `voice eval` with a stand-in model over real audio decoding and VAD ----------------------


class FakeTranscriber:
    """Answers by the segment's start time; counts calls."""

    def __init__(self, answers: dict[float, str]):
        self.answers = answers
        self.calls = 0

    def transcribe(self, segment):
        self.calls += 1
        text = self.answers.get(round(segment.start, 1), "")
        return Transcript(text, asr_ms=5.0)


@pytest.fixture
def manifest(tmp_path):
    rng = np.random.default_rng(0)
    write_wav(tmp_path / "c1.wav", rng.standard_normal(16000 * 4) * 0.05, 16000)
    lines = [
        {"audio_filepath": "c1.wav", "offset": 0.0, "duration": 1.5, "text": "唔該，我想查單",
         "call_id": "c1", "speaker": "s1"},
        {"audio_filepath": "c1.wav", "offset": 2.0, "duration": 1.5, "text": "一百蚊",
         "call_id": "c1", "speaker": "s1"},
    ]  # fmt: skip
    path = tmp_path / "manifest.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    return path


@pytest.fixture
def fake_models(monkeypatch):
    loaded = []

    def fake_asr_from_args(args):
        answers = {0.0: "唔該我想查單", 2.0: "100蚊"} if args.model == "good" else {0.0: "我想查"}
        loaded.append(args.model)
        return FakeTranscriber(answers), VadOptions()

    monkeypatch.setattr("voice.commands.asr_from_args", fake_asr_from_args)
    return loaded


def test_voice_eval_json_last_line(manifest, fake_models, capsys, tmp_path):
    argv = ["eval", str(manifest), "--model", "good", "--model", "bad", "--json", "--no-progress"]
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    assert fake_models == ["good", "bad"]  # each model loaded once
    out = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(out[-1])
    good, bad = summary["models"]
    assert list(good)[:8] == CONTRACT
    assert (good["model"], good["cer"], good["utterances"]) == ("good", 0.0, 2)
    assert bad["cer"] == pytest.approx(7 / 10)  # 唔該 and 單 deleted (3 of 6), 100蚊 (4 of 4)
    assert good["rtf"] is not None and good["latency_p50_ms"] is not None
    assert (tmp_path / "rep" / "report.html").is_file()


def test_voice_eval_fail_above(manifest, fake_models):
    args = ["eval", str(manifest), "--no-progress", "--json"]
    assert main([*args, "--model", "good", "--fail-above", "0.1"]) == 0
    assert main([*args, "--model", "good", "--model", "bad", "--fail-above", "0.1"]) == 1


def test_voice_eval_rejects_bad_manifest(tmp_path, fake_models, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"audio_filepath": "x.wav"}\nnot json\n', encoding="utf-8")
    assert main(["eval", str(path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "text" in err and "bad.jsonl:2" in err
    assert fake_models == []  # no model loaded for a bad manifest


def test_voice_eval_rejects_empty_normalised_reference(tmp_path, fake_models, capsys):
    write_wav(tmp_path / "a.wav", np.zeros(16000, np.float32), 16000)
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "a.wav", "text": "，。！"}\n', encoding="utf-8")
    assert main(["eval", str(path), "--no-progress"]) == 2
    assert "empty after normalisation" in capsys.readouterr().err
    assert fake_models == []


def test_call_mode_streams_the_call_and_scores_the_vad(tmp_path, monkeypatch, capsys):
    from voice.tts import Voice, synthesize

    parts, lines, t = [np.zeros(8000, np.float32)], [], 0.5
    for text in ["唔該我想查下我張單", "好啦唔該晒"]:
        speech = synthesize(text, Voice("yue+m2")) * 0.5
        lines.append({"audio_filepath": "call.wav", "offset": round(t, 3),
                      "duration": round(speech.size / 16000, 3), "text": text, "call_id": "k1"})  # fmt: skip
        parts += [speech, np.zeros(16000, np.float32)]
        t += speech.size / 16000 + 1.0
    write_wav(tmp_path / "call.wav", np.concatenate(parts), 16000)
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")

    class Echo:
        def transcribe(self, segment):  # the reference line that overlaps the segment most
            best = max(lines, key=lambda x: min(segment.end, x["offset"] + x["duration"])
                       - max(segment.start, x["offset"]))  # fmt: skip
            return Transcript(best["text"], asr_ms=1.0)

    monkeypatch.setattr("voice.commands.asr_from_args", lambda args: (Echo(), VadOptions()))
    assert main(["eval", str(path), "--mode", "call", "--json", "--no-progress"]) == 0
    model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][0]
    assert model["mode"] == "call" and model["calls"] == 1 and model["utterances"] == 2
    assert model["vad_miss_rate"] < 0.1  # the VAD found the speech...
    assert model["vad_false_alarm_rate"] < 0.5  # ...with some padding around it
    assert model["cer"] <= 0.5


@pytest.mark.slow
def test_voice_eval_with_the_packaged_base_model(tmp_path, base_model_dir, demo_call, capsys):
    lines = [
        {"audio_filepath": str(demo_call.path), "offset": s, "duration": round(e - s, 3),
         "text": text, "call_id": "demo", "speaker": "f3"}
        for s, e, text in demo_call.lines[:2]
    ]  # fmt: skip
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), "utf-8")
    argv = ["eval", str(path), "--model", str(base_model_dir), "--json", "--no-progress"]
    assert main([*argv, "--report", str(tmp_path / "rep")]) == 0
    model = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][0]
    assert list(model)[:8] == CONTRACT and model["utterances"] == 2
    assert model["rtf"] > 0 and model["latency_p95_ms"] >= model["latency_p50_ms"] > 0
    rows = (tmp_path / "rep" / "1-base" / "utterances.jsonl").read_text("utf-8").splitlines()
    assert len(rows) == 2


def test_a_model_that_scored_nothing_has_no_rate_and_fails_the_bar(tmp_path, fake_models):
    path = tmp_path / "m.jsonl"
    path.write_text('{"audio_filepath": "missing.wav", "text": "你好"}\n', encoding="utf-8")
    summary = summary_json(
        [ModelResult("m", "utterance", (), 0, 0.0, 0.0, failures=("line 1: missing",))]
    )
    assert summary["models"][0]["cer"] is None and summary["models"][0]["rtf"] is None
    assert main(["eval", str(path), "--no-progress", "--fail-above", "0.5"]) == 1


def test_voice_eval_splits_seen_and_unseen_text(manifest, fake_models, capsys, tmp_path):
    train = tmp_path / "train.jsonl"
    line = {"audio_filepath": "c1.wav", "offset": 0.0, "duration": 1.5, "text": "唔該，我想查單。",
            "call_id": "t1", "speaker": "s9", "split": "train"}  # fmt: skip
    train.write_text(json.dumps(line, ensure_ascii=False) + "\n", "utf-8")
    argv = ["eval", str(manifest), "--model", "bad", "--json", "--no-progress"]
    assert main([*argv, "--seen-in", str(train), "--report", str(tmp_path / "rep")]) == 0
    bad = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][0]
    # 唔該我想查單 is seen (punctuation aside): 3 of 6 deleted; 一百蚊 is unseen: all 4 wrong
    assert bad["cer_seen_text"] == pytest.approx(3 / 6) and bad["utterances_seen_text"] == 1
    assert bad["cer_unseen_text"] == pytest.approx(1.0) and bad["utterances_unseen_text"] == 1
    assert "Seen and unseen text" in (tmp_path / "rep" / "report.md").read_text("utf-8")

    assert main([*argv, "--seen-in", str(tmp_path / "missing.jsonl")]) == 2
    assert main([*argv, "--seen-in", str(train), "--mode", "call"]) == 2


def test_voice_eval_normalisation_steps_can_be_switched_off(manifest, fake_models, capsys):
    argv = ["eval", str(manifest), "--model", "good", "--json", "--no-progress"]
    assert main([*argv, "--no-remove-punctuation"]) == 0
    good = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][0]
    assert good["cer"] > 0  # the reference's comma now counts; the hypothesis has none
    assert "remove_punctuation=False" in good["normalizer"]
