"""voice.data.align and JSONL import: cuts land in pauses, text stays in order, splits hold out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voice.cli import main
from voice.data import ManifestEntry, check_manifest, load_manifest
from voice.data.align import (
    AlignOptions,
    clauses,
    cut_by_length,
    cut_by_turns,
    find_speech,
    sentences,
    weight,
)
from voice.data.importer import ImportOptions, import_data, speaker_split

RATE = 16_000
SENTENCES = [
    "今日天氣好好，我哋去公園玩。",
    "細佬話佢想食雪糕。",
    "媽媽買咗兩個雪糕俾我哋，仲有一支水。",
    "我哋坐喺樹下面慢慢食。",
    "食完之後，我哋行返屋企。",
]


def _tone_speech(
    texts: list[str], pauses: list[float], per_char: float = 0.25, seed: int = 0
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A 'reading' in tones: each character a 200 ms syllable with a 50 ms gap, pauses between.

    Returns the samples and each text's (start, end) in seconds.
    """
    rng = np.random.default_rng(seed)
    t = np.arange(int(RATE * (per_char - 0.05))) / RATE
    parts, spans, now = [np.zeros(int(0.3 * RATE), np.float32)], [], 0.3
    for i, text in enumerate(texts):
        start = now
        for _ in range(int(weight(text))):
            pitch = rng.uniform(150, 300)
            parts.append((0.3 * np.sin(2 * np.pi * pitch * t)).astype(np.float32))
            parts.append(np.zeros(int(0.05 * RATE), np.float32))
            now += per_char
        spans.append((start, now))
        gap = pauses[i] if i < len(pauses) else 0.3
        parts.append(np.zeros(int(gap * RATE), np.float32))
        now += gap
    audio = np.concatenate(parts)
    audio += rng.standard_normal(audio.size).astype(np.float32) * 1e-3
    return audio, spans


@pytest.fixture(scope="module")
def espeak_reading():
    """espeak-ng reading SENTENCES with known pauses (0.5-0.9 s) between them."""
    from voice.tts import Voice, synthesize, trim_silence

    rng = np.random.default_rng(3)
    parts, spans, now = [np.zeros(int(0.4 * RATE), np.float32)], [], 0.4
    for text in SENTENCES:
        x = trim_silence(synthesize(text, Voice("yue+f2"))) * 0.5
        spans.append((now, now + x.size / RATE))
        pause = rng.uniform(0.5, 0.9)
        parts += [x, np.zeros(int(pause * RATE), np.float32)]
        now += x.size / RATE + pause
    audio = np.concatenate(parts)
    audio += rng.standard_normal(audio.size).astype(np.float32) * 2e-3
    return audio, spans


def _assert_cuts_in_pauses(pieces, spans, margin: float = 0.0):
    for piece in pieces[:-1]:
        inside = [s for s in spans if s[0] - margin < piece.end < s[1] + margin]
        assert not inside, f"cut at {piece.end:.2f} s falls inside speech {inside}"


# --- text units -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("雞先生問：「點樣搭車出去呀？」An鴨答：「唔知呀！」",
         ["雞先生問：「點樣搭車出去呀？」", "An鴨答：「唔知呀！」"]),
        ("好。好！真係？", ["好。", "好！", "真係？"]),
        ("冇標點", ["冇標點"]),
        ("一句。」", ["一句。」"]),
        ("佢叫：「好嘢！我飛緊噉啊！」不過要小心。",  # no sentence end inside quotes
         ["佢叫：「好嘢！我飛緊噉啊！」", "不過要小心。"]),
    ],
)  # fmt: skip
def test_sentences_keep_closing_quotes_and_join_back(text, expected):
    assert sentences(text) == expected
    assert "".join(sentences(text)) == text


def test_clauses_and_weights():
    assert clauses("同埋我個friend，其實好好。好啦") == ["同埋我個friend，", "其實好好。", "好啦"]
    assert clauses("叫：「好嘢！我飛緊！」") == ["叫：", "「好嘢！", "我飛緊！」"]
    assert weight("我個account login唔到") == 4 + 2 * 2  # an English word counts two
    assert weight("「」，。！") == 0
    assert weight("𠸏𡃉") == 2  # characters outside the BMP count too


# --- cutting ----------------------------------------------------------------------------------


def test_short_line_is_not_cut():
    audio, _ = _tone_speech(SENTENCES[:1], [])
    (piece,) = cut_by_length(audio, SENTENCES[0], AlignOptions(max_seconds=29.5))
    assert piece.start == 0 and piece.end == pytest.approx(audio.size / RATE, abs=1e-3)
    assert piece.text == SENTENCES[0] and piece.dropped is None


@pytest.mark.parametrize("max_seconds", [6.0, 9.0, 14.0])
def test_tone_cuts_land_in_pauses_in_order_under_the_limit(max_seconds):
    audio, spans = _tone_speech(SENTENCES, [0.6, 0.4, 0.8, 0.5])
    options = AlignOptions(max_seconds=max_seconds, detector="energy")
    pieces = cut_by_length(audio, "".join(SENTENCES), options)
    assert len(pieces) > 1 and all(p.dropped is None for p in pieces)
    assert all(p.duration <= max_seconds for p in pieces)
    assert pieces[0].start == 0 and pieces[-1].end == pytest.approx(audio.size / RATE, abs=1e-3)
    assert all(a.end == b.start for a, b in zip(pieces, pieces[1:], strict=False))  # tiled
    assert "".join(p.text for p in pieces) == "".join(SENTENCES)  # every unit, in order
    _assert_cuts_in_pauses(pieces, spans)
    for piece in pieces:  # each piece holds exactly the sentences spoken inside it
        spoken = [
            s for s, (a, b) in zip(SENTENCES, spans, strict=True) if piece.start < a < piece.end
        ]
        assert piece.text == "".join(spoken)


def test_fewest_cuts_are_used():
    audio, _ = _tone_speech(SENTENCES, [0.6, 0.4, 0.8, 0.5])
    total = audio.size / RATE
    options = AlignOptions(max_seconds=total * 0.7, detector="energy")  # one cut will do
    assert len(cut_by_length(audio, "".join(SENTENCES), options)) == 2


def test_espeak_cuts_land_in_pauses(espeak_reading):
    audio, spans = espeak_reading
    speech = find_speech(audio)
    assert speech.pauses and 0 < speech.speech < audio.size / RATE
    pieces = cut_by_length(audio, "".join(SENTENCES), AlignOptions(max_seconds=7.0))
    assert len(pieces) >= 2 and all(p.dropped is None and p.duration <= 7.0 for p in pieces)
    assert "".join(p.text for p in pieces) == "".join(SENTENCES)
    _assert_cuts_in_pauses(pieces, spans, margin=0.05)
    for piece in pieces:
        spoken = [
            s for s, (a, b) in zip(SENTENCES, spans, strict=True) if piece.start < a < piece.end
        ]
        assert piece.text == "".join(spoken)


def test_no_usable_pause_is_dropped_with_a_reason():
    rng = np.random.default_rng(0)
    t = np.arange(12 * RATE) / RATE
    audio = 0.3 * np.sin(2 * np.pi * 200 * t) * (1 + 0.3 * np.sin(2 * np.pi * 4 * t))
    audio = (audio + rng.standard_normal(t.size) * 1e-3).astype(np.float32)
    pieces = cut_by_length(audio, "".join(SENTENCES[:3]), AlignOptions(max_seconds=8.0))
    assert len(pieces) == 1 and pieces[0].dropped
    assert "over 8 s" in pieces[0].dropped and "no pause" in pieces[0].dropped


def test_turns_cut_at_turn_boundaries_and_merge_without_a_pause():
    texts = ["你今日去咗邊度呀？", "我去咗公園散步。", "好唔好玩呀？", "幾好玩。"]
    # no pause between turns 3 and 4: they overlap in a real conversation
    audio, spans = _tone_speech(texts, [0.7, 0.6, 0.03])
    turns = list(zip("ABAB", texts, strict=True))
    pieces = cut_by_turns(audio, turns, AlignOptions(detector="energy"))
    assert [p.speakers for p in pieces] == [("A",), ("B",), ("A", "B")]
    assert [p.text for p in pieces] == [texts[0], texts[1], texts[2] + texts[3]]
    _assert_cuts_in_pauses(pieces, spans)


# --- speaker split ----------------------------------------------------------------------------


def _entries(tmp_path: Path, speakers: dict[str, tuple[int, float]]) -> list[ManifestEntry]:
    audio = tmp_path / "a.wav"
    out = []
    for speaker, (count, seconds) in speakers.items():
        for i in range(count):
            out.append(
                ManifestEntry(audio, "a.wav", "你好。", 0.0, seconds, f"{speaker}_{i}", speaker)
            )
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_speaker_split_holds_out_known_speakers_only(tmp_path, seed):
    speakers = {f"reader:{i}": (10, 30.0) for i in range(12)}  # 5 min each
    speakers |= {f"hbl_unknown_reader_story_{i}": (10, 60.0) for i in range(5)}
    options = ImportOptions(split="speaker", test_minutes=15, test_speakers=4, dev_minutes=6,
                            seed=seed)  # fmt: skip
    entries, notes = speaker_split(_entries(tmp_path, speakers), options)
    assert notes == []
    split_of: dict[str, set[str]] = {}
    for e in entries:
        split_of.setdefault(e.speaker, set()).add(e.split)
    assert all(len(s) == 1 for s in split_of.values())  # a speaker never straddles splits
    assert all(split_of[s] == {"train"} for s in speakers if "unknown" in s)
    test = [e for e in entries if e.split == "test"]
    dev = [e for e in entries if e.split == "dev"]
    assert sum(e.duration for e in test) >= 15 * 60 and len({e.speaker for e in test}) >= 4
    assert sum(e.duration for e in dev) >= 6 * 60
    assert any(e.split == "train" and "unknown" not in e.speaker for e in entries)
    assert speaker_split(_entries(tmp_path, speakers), options)[0] == entries  # stable


def test_speaker_split_says_when_it_falls_short(tmp_path):
    entries, notes = speaker_split(
        _entries(tmp_path, {"a": (2, 10.0), "b_unknown": (5, 10.0)}), ImportOptions(split="speaker")
    )
    assert {e.speaker: e.split for e in entries} == {"a": "test", "b_unknown": "train"}
    assert "less than the 15 min and 4 speakers" in notes[0]


# --- JSONL import -----------------------------------------------------------------------------


@pytest.fixture
def jsonl_source(tmp_path, espeak_reading) -> Path:
    """A NeMo-style source: one long page, one short page per reader, one page with no pause."""
    src = tmp_path / "src"
    (src / "audio").mkdir(parents=True)
    audio, _ = espeak_reading
    short, _ = _tone_speech(SENTENCES[:1], [])
    t = np.arange(12 * RATE) / RATE
    hum = (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32)
    lines = []
    for k, reader in enumerate(["reader:A", "reader:B", "reader:C", "unknown_story_1"]):
        sf.write(str(src / "audio" / f"p{k}_long.wav"), audio, RATE)
        sf.write(str(src / "audio" / f"p{k}_short.flac"), short, RATE)
        for name, text, length in [
            (f"p{k}_long.wav", "".join(SENTENCES), audio.size / RATE),
            (f"p{k}_short.flac", SENTENCES[0], short.size / RATE),
        ]:
            lines.append({"audio_filepath": f"audio/{name}", "offset": 0.0,
                          "duration": round(length, 3), "text": text,
                          "call_id": name.split(".")[0], "speaker": reader,
                          "license": "CC-BY-4.0", "source": f"test {name}",
                          "segment": "longform_unaligned"})  # fmt: skip
    sf.write(str(src / "audio" / "hum.wav"), hum, RATE)
    lines.append({"audio_filepath": "audio/hum.wav", "duration": 12.0, "license": "CC-BY-3.0",
                  "text": "".join(SENTENCES[:3]), "call_id": "hum", "speaker": "reader:A"})  # fmt: skip
    (src / "manifest.jsonl").write_text(
        "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines), encoding="utf-8"
    )
    (src / "README.md").write_text("# test data\n", encoding="utf-8")
    (src / "ATTRIBUTION_authors.md").write_text("authors\n", encoding="utf-8")
    return src / "manifest.jsonl"


def test_jsonl_import_round_trip(jsonl_source, tmp_path):
    out = tmp_path / "gen" / "m.jsonl"
    options = ImportOptions(max_seconds=7.0, split="speaker", test_minutes=0.05, test_speakers=1,
                            dev_minutes=0.05)  # fmt: skip
    report = import_data(jsonl_source, out, options)
    assert report.manifest == out and check_manifest(out).ok, check_manifest(out).format()
    assert report.lines_in == 9 and report.lines_cut == 5
    assert [p.line for p in report.dropped] == [9] and "hum" in report.dropped[0].message
    assert report.seconds_dropped == pytest.approx(12.0, abs=0.01)
    assert report.seconds_out == pytest.approx(report.seconds_in - 12.0, abs=0.01)
    entries, problems = load_manifest(out)
    assert problems == []
    source = {x["call_id"]: x for x in map(json.loads, jsonl_source.read_text().splitlines())}
    for e in entries:
        line = source[e.call_id]
        assert e.audio_filepath == "../src/" + line["audio_filepath"]  # relative to the output
        assert line["offset"] <= e.offset and e.end <= line["offset"] + line["duration"] + 1e-6
        assert e.duration <= 7.0 and e.extra["license"] == "CC-BY-4.0"
        assert e.extra["source"] == line["source"] and e.speaker == line["speaker"]
    pieces = [e for e in entries if e.call_id == "p0_long"]
    assert [e.extra["utt_index"] for e in pieces] == list(range(len(pieces)))
    assert "".join(e.text for e in pieces) == "".join(SENTENCES)
    assert "utt_index" not in next(e for e in entries if e.call_id == "p0_short").extra
    # a piece's text is aligned to its audio; a line kept whole keeps the source's note
    assert {e.extra["segment"] for e in pieces} == {"aligned"}
    assert (
        next(e for e in entries if e.call_id == "p0_short").extra["segment"] == "longform_unaligned"
    )
    assert {e.split for e in entries if e.speaker == "unknown_story_1"} == {"train"}
    assert {e.split for e in entries} == {"train", "dev", "test"}
    sidecar = json.loads((out.parent / "m.jsonl.attribution.json").read_text())
    assert sidecar == {
        "sources": ["../src"],
        "licenses": ["CC-BY-4.0"],
        "files": ["src_ATTRIBUTION_authors.md", "src_README.md"],
    }
    assert (out.parent / "src_README.md").read_text() == "# test data\n"


def test_cli_import_jsonl_prints_what_came_in_and_went_out(jsonl_source, tmp_path, capsys):
    out = tmp_path / "m.jsonl"
    args = ["data", "import", str(jsonl_source), "--out", str(out), "--max-seconds", "7",
            "--split", "test"]  # fmt: skip
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "in:  9 line(s)" in printed and "out: " in printed
    assert "dropped by the aligner: 1" in printed and "hum: line dropped" in printed
    assert "test " in printed and "OK: 0 error(s)" in printed
    assert {e.split for e in load_manifest(out)[0]} == {"test"}


def test_cut_turns_names_speakers_by_call(tmp_path):
    texts = ["你今日去咗邊度呀？", "我去咗公園散步。", "好唔好玩呀？"]
    audio, _ = _tone_speech(texts, [0.7, 0.6])
    sf.write(str(tmp_path / "c.wav"), audio, RATE)
    line = {"audio_filepath": "c.wav", "text": "".join(texts), "call_id": "c1",
            "turns": [{"spk": s, "text": t} for s, t in zip("ABA", texts, strict=True)]}  # fmt: skip
    (tmp_path / "src.jsonl").write_text(json.dumps(line, ensure_ascii=False) + "\n")
    report = import_data(tmp_path / "src.jsonl", tmp_path / "out.jsonl",
                         ImportOptions(cut_turns=True, split="test"))  # fmt: skip
    assert [(e.speaker, e.text) for e in report.entries] == [
        ("c1:A", texts[0]), ("c1:B", texts[1]), ("c1:A", texts[2])
    ]  # fmt: skip
    assert all("turns" not in e.extra for e in report.entries)
    assert check_manifest(report.manifest).ok
