"""voice.data: synthetic corpus end to end, manifest checks line by line, imports round trip."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.cli import main
from voice.data import ManifestEntry, check_manifest, load_manifest, write_manifest
from voice.data.chinese import convert_simplified, simplified_chars
from voice.data.importer import ImportOptions, import_recordings
from voice.data.manifest import DataError
from voice.data.synth import SynthOptions, generate_corpus
from voice.data.synth.numbers import cardinal, digits
from voice.data.synth.text import ScriptOptions, ScriptWriter, partition, tidy

CALLS = 5


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return generate_corpus(out, SynthOptions(calls=CALLS, seed=0, workers=2, progress=False))


# --- synthetic corpus ----------------------------------------------------------------------------


def test_corpus_passes_check_with_expected_figures(corpus):
    report = check_manifest(corpus)
    assert report.ok, report.format()
    assert report.calls == CALLS
    assert 4 * CALLS <= report.entries <= 12 * CALLS
    assert set(report.splits) == {"train", "dev", "test"}
    assert report.sample_rates == {8000: CALLS}
    assert not report.foreign
    assert any("500+" in p.message for p in report.warnings)  # fewer calls than fine-tuning needs
    for split in ("train", "dev", "test"):
        assert (corpus.parent / f"{split}.jsonl").is_file()


def test_corpus_lines_follow_the_contract(corpus):
    entries, problems = load_manifest(corpus)
    assert problems == []
    first = json.loads(corpus.read_text(encoding="utf-8").splitlines()[0])
    assert list(first)[:7] == [
        "audio_filepath", "offset", "duration", "text", "call_id", "speaker", "split"
    ]  # fmt: skip
    assert first["audio_filepath"] == f"calls/{first['call_id']}.wav"
    speakers: dict[str, set[str]] = {}
    for entry in entries:
        speakers.setdefault(entry.speaker, set()).add(entry.split)
        info = sf.info(str(entry.audio_path))
        assert info.subtype == "ULAW" and info.samplerate == 8000 and info.channels == 1
        assert 0 <= entry.offset and entry.offset + entry.duration <= info.duration
        assert not any(ch.isdigit() for ch in entry.text)  # numbers are written as spoken
    assert all(len(splits) == 1 for splits in speakers.values())
    by_call: dict[str, list[ManifestEntry]] = {}
    for entry in entries:
        by_call.setdefault(entry.call_id, []).append(entry)
    for call in by_call.values():
        assert 4 <= len(call) <= 12
        for a, b in zip(call, call[1:], strict=False):
            assert a.end <= b.offset  # utterances in order, never overlapping


def test_utterance_audio_holds_speech_and_pauses_are_quiet(corpus):
    entries, _ = load_manifest(corpus)
    entry = entries[0]
    speech = entry.load_audio()
    assert speech.dtype == np.float32 and speech.size == pytest.approx(entry.duration * 16000, 2)
    call, rate = sf.read(str(entry.audio_path), dtype="float32")
    gap = call[int((entry.end + 0.05) * rate) : int((entries[1].offset - 0.05) * rate)]
    assert np.sqrt(np.mean(speech**2)) > 3 * np.sqrt(np.mean(gap**2))


@pytest.mark.slow
def test_corpus_is_deterministic_whatever_the_worker_count(corpus, tmp_path):
    again = generate_corpus(tmp_path, SynthOptions(calls=CALLS, seed=0, workers=1, progress=False))
    assert again.read_text(encoding="utf-8") == corpus.read_text(encoding="utf-8")
    a = sorted((corpus.parent / "calls").glob("*.wav"))
    b = sorted((tmp_path / "calls").glob("*.wav"))
    assert [p.read_bytes() for p in a] == [p.read_bytes() for p in b]


def test_cli_check_passes_on_the_corpus(corpus, capsys):
    assert main(["data", "check", str(corpus)]) == 0
    out = capsys.readouterr().out
    assert "calls: 5" in out and "OK" in out


# --- broken manifests ----------------------------------------------------------------------------


def _broken(corpus: Path, tmp_path: Path) -> Path:
    entries, _ = load_manifest(corpus)
    good = entries[0].to_dict(tmp_path)
    lines = [
        json.dumps(good, ensure_ascii=False),  # 1 fine
        json.dumps({**good, "audio_filepath": "calls/nowhere.wav"}),  # 2 missing file
        '{"audio_filepath": "x.wav", "text": ',  # 3 bad JSON
        json.dumps({**good, "offset": 9999.0}),  # 4 offset past the end
        json.dumps({**good, "text": "  "}),  # 5 empty text
        json.dumps({**good, "offset": good["offset"] + 0.5, "text": "我们这个月的账单"}),  # 6
        json.dumps({"text": "冇檔案"}),  # 7 no audio_filepath
        json.dumps({**good, "duration": -1}),  # 8 bad duration
        json.dumps([1, 2]),  # 9 not an object
    ]
    path = tmp_path / "broken.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_broken_manifest_is_reported_line_by_line(corpus, tmp_path, capsys):
    path = _broken(corpus, tmp_path)
    report = check_manifest(path)
    assert not report.ok
    errors = {(p.line, p.field) for p in report.errors}
    assert {(2, "audio_filepath"), (3, ""), (4, "offset"), (5, "text"), (7, "audio_filepath")} <= (
        errors
    )
    assert {(6, "text"), (6, "offset"), (8, "duration"), (9, "")} <= errors  # simplified, overlap
    assert 1 not in {p.line for p in report.errors}
    assert main(["data", "check", str(path)]) == 1
    out = capsys.readouterr().out
    for line in (2, 3, 4, 5, 6, 7, 8, 9):
        assert f"broken.jsonl:{line}:" in out
    assert "FAILED" in out


def test_load_manifest_never_raises_on_garbage(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xff\xfe\x00garbage\n{}\nnull\n")
    entries, problems = load_manifest(path)
    assert entries == [] and [p.line for p in problems] == [1, 2, 2, 3]
    with pytest.raises(DataError, match="cannot read"):
        load_manifest(tmp_path / "missing.jsonl")
    assert main(["data", "check", str(tmp_path / "missing.jsonl")]) == 2


def test_write_manifest_validates_first_and_writes_relative_paths(tmp_path):
    audio = tmp_path / "a" / "x.wav"
    entry = ManifestEntry(audio_path=audio, audio_filepath=str(audio), text="唔該", call_id="x")
    path = write_manifest(tmp_path / "m.jsonl", [entry])
    assert json.loads(path.read_text(encoding="utf-8"))["audio_filepath"] == "a/x.wav"
    with pytest.raises(DataError, match="empty transcript"):
        write_manifest(tmp_path / "bad.jsonl", [ManifestEntry(audio, str(audio), "")])
    assert not (tmp_path / "bad.jsonl").exists()


# --- import --------------------------------------------------------------------------------------


def test_import_csv_round_trip(corpus, tmp_path):
    entries, _ = load_manifest(corpus)
    table = tmp_path / "calls.csv"
    with table.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "transcript", "start", "end", "speaker"])
        for e in entries:
            writer.writerow([str(e.audio_path), e.text, e.offset, e.offset + e.duration, e.speaker])
    manifest, imported, problems = import_recordings(table, tmp_path / "out" / "m.jsonl")
    assert problems == [] and manifest is not None
    assert [(e.text, e.offset, e.call_id, e.speaker) for e in imported] == [
        (e.text, e.offset, e.call_id, e.speaker) for e in entries
    ]
    assert all(abs(a.duration - b.duration) < 0.002 for a, b in zip(imported, entries, strict=True))
    assert check_manifest(manifest).ok


def test_import_folder_with_txt_converts_simplified(corpus, tmp_path, capsys):
    entries, _ = load_manifest(corpus)
    folder = tmp_path / "calls"
    for i, e in enumerate(entries[:3]):
        sf.write(str(folder / f"u{i}.wav") if folder.exists() else _mkdir(folder, f"u{i}.wav"),
                 e.load_audio(), 16000)  # fmt: skip
        (folder / f"u{i}.txt").write_text(e.text + "\n", encoding="utf-8")
    (folder / "u0.txt").write_text("我们这个月的账单多咗，唔该晒。", encoding="utf-8")
    (folder / "u9.wav").write_bytes(b"not audio")
    (folder / "u9.txt").write_text("壞檔案", encoding="utf-8")
    out = tmp_path / "m.jsonl"
    assert main(["data", "import", str(folder), "--out", str(out), "--split", "train"]) == 1
    err = capsys.readouterr().err
    assert "u9.wav" in err and "Simplified characters" in err
    imported, problems = load_manifest(out)
    assert problems == [] and len(imported) == 3
    assert imported[0].text == "我們這個月的賬單多咗，唔該晒。"  # 晒 stays: Cantonese, not 曬
    assert [e.text for e in imported[1:]] == [e.text for e in entries[1:3]]
    assert all(e.offset is None and e.split == "train" for e in imported)


def _mkdir(folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    return str(folder / name)


def test_import_stereo_needs_a_channel_and_extracts_it(tmp_path):
    rate = 8000
    customer = (0.3 * np.sin(np.arange(rate * 2) * 0.05)).astype(np.float32)
    agent = (0.2 * np.sin(np.arange(rate * 2) * 0.31)).astype(np.float32)
    sf.write(str(tmp_path / "call.wav"), np.stack([agent, customer], axis=1), rate)
    table = tmp_path / "t.csv"
    table.write_text("file,transcript\ncall.wav,我想查下張單\n", encoding="utf-8")
    manifest, entries, problems = import_recordings(table, tmp_path / "m.jsonl")
    assert manifest is None and "--channel" in problems[0].message
    manifest, entries, problems = import_recordings(
        table, tmp_path / "m.jsonl", ImportOptions(channel=1)
    )
    assert problems == [] and sf.info(str(entries[0].audio_path)).channels == 1
    got, _ = sf.read(str(entries[0].audio_path), dtype="float32")
    assert np.allclose(got, customer, atol=1e-3)
    assert load_manifest(manifest)[0][0].audio_filepath == "channels/call.ch1.wav"


# --- text ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "spoken"),
    [(0, "零"), (2, "兩"), (10, "十"), (12, "十二"), (20, "二十"), (102, "一百零二"),
     (350, "三百五十"), (1050, "一千零五十"), (2000, "兩千"), (12345, "一萬二千三百四十五")],
)  # fmt: skip
def test_cardinal(n, spoken):
    assert cardinal(n) == spoken


def test_text_helpers():
    assert digits("A1230") == "A一二三零"
    assert tidy("我個account  login唔到 ，check下") == "我個 account login 唔到，check 下"
    assert simplified_chars("唔該晒，葵涌") == [] and simplified_chars("这个") == ["个", "这"]
    assert convert_simplified("唔该晒") == ("唔該晒", ["该"])


def test_sentence_pools_are_held_out_by_split():
    chat = [f"第{cardinal(i)}句測試句子。" for i in range(200)]
    pools = partition(chat)
    assert all(pools.values())
    assert not set(pools["train"]) & (set(pools["dev"]) | set(pools["test"]))

    def lines(writer, split):
        return {line for i in range(80) for line in writer.call(random.Random(i), split)[1]}

    shared = ScriptWriter(chat)
    train, test = lines(shared, "train"), lines(shared, "test")
    test_chat = test & set(chat)
    assert test_chat and not test_chat & train  # chat is held out by sentence
    assert test & train  # templates are shared (fixed phrasings like closings recur)

    strict = ScriptWriter(chat, ScriptOptions(hold_out_templates=True))
    train, test = lines(strict, "train"), lines(strict, "test")
    assert len(test & train) <= len(test) // 20
