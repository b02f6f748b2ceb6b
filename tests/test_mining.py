"""`voice kb suggest` (issue 16 item 5): unresolved utterances in a real store grouped by meaning
with the real sentence encoder, ranked by volume, written as KB rows that `voice kb check` accepts
once answered."""

from __future__ import annotations

import csv
import io
import logging
from datetime import date, datetime
from pathlib import Path

import pytest

from voice.cli import main
from voice.errors import ConfigError
from voice.quality import mining
from voice.quality.mining import KB_COLUMNS, QuestionGroup
from voice.server.store import Store

STUDENT = ["你哋有冇學生優惠", "學生可唔可以平啲", "讀緊書有冇折", "學生有冇折扣呀"]
PETS = ["寵物可唔可以上車", "帶狗上車得唔得", "我隻貓可唔可以一齊搭車"]


def hk(text: str) -> float:
    """Unix time of a Hong Kong wall-clock time 'YYYY-MM-DD HH:MM'."""
    return datetime.fromisoformat(text + "+08:00").timestamp()


def feed(store: Store, call_id: str, at: float,
         turns: list[tuple[str, bool, str | None]]) -> None:  # fmt: skip
    """A call as the hub stores it: per turn (text, resolved, best category or None: no KB entry
    came close) a transcript, then its suggestion, 20 s apart."""
    store.open_call(call_id, "stream", None, "agent-1", {}, now=at)
    seq = 0
    for n, (text, resolved, category) in enumerate(turns):
        ts = at + 20 * n + 5
        span = {"call_id": call_id, "start": 20.0 * n, "end": 20.0 * n + 2}
        suggestions = [] if category is None else [
            {"id": "kb-1", "category": category, "reply": "好的", "score": 0.4}
        ]  # fmt: skip
        for data, when in (
            ({"type": "transcript", **span, "text": text, "language": "yue-Hant-HK",
              "latency_ms": 300.0}, ts),
            ({"type": "suggestion", **span, "language": "yue-Hant-HK", "resolved": resolved,
              "suggestions": suggestions}, ts + 0.2),
        ):  # fmt: skip
            seq += 1
            store.add_event(call_id, seq, data, now=when)
    store.add_event(call_id, seq + 1, {"type": "end", "call_id": call_id}, now=at + 20 * len(turns))
    store.close_call(call_id, "completed")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Unresolved turns of two new questions from 2026-12-01 to 12-03 (HK), paraphrased and
    filed under different best categories, with one-offs, resolved turns and turns outside."""
    path = tmp_path / "calls.sqlite3"
    store = Store(path)
    feed(store, "A", hk("2026-12-01 10:00"), [
        (STUDENT[0], False, "優惠"), (PETS[0], False, "送貨"), ("今日天氣點呀", False, None),
    ])  # fmt: skip
    feed(store, "B", hk("2026-12-02 09:00"), [
        (STUDENT[1], False, "優惠"), (STUDENT[0], False, "帳單"), (PETS[1], False, None),
    ])  # fmt: skip
    feed(store, "C", hk("2026-12-03 23:50"), [
        (STUDENT[2], False, None), (STUDENT[3], False, "優惠"), (PETS[2], False, "送貨"),
        ("我想轉台", False, "帳單"),
    ])  # fmt: skip
    # resolved: not new questions, even when phrased like one
    feed(store, "R", hk("2026-12-02 15:00"), [
        (STUDENT[0], True, "優惠"), ("我想查帳單", True, "帳單"), ("我想查帳單", True, "帳單"),
    ])  # fmt: skip
    # outside 12-01..12-03: the day before, and 00:30 on the day after (HKT, not UTC)
    feed(store, "OLD", hk("2026-11-30 23:00"), [(PETS[0], False, "送貨"), (PETS[1], False, None)])
    feed(
        store, "LATE", hk("2026-12-04 00:30"), [("我想轉台", False, "帳單"), (PETS[0], False, None)]
    )
    store.close()
    return path


def read_rows(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"))))


def test_suggest_groups_paraphrases_ranked_by_volume(db, tmp_path, capsys):
    out = tmp_path / "out" / "candidates.csv"
    assert main(["kb", "suggest", "--db", str(db), "--from", "2026-12-01", "--to", "2026-12-03",
                 "--out", str(out)]) == 0  # fmt: skip
    assert "10 unresolved utterances" in capsys.readouterr().out
    rows = read_rows(out)
    assert rows[0] == [*KB_COLUMNS, "count", "example_calls"]
    assert [r[0] for r in rows[1:]] == ["NEW-001", "NEW-002"]  # one-offs are left out
    student, pets = rows[1], rows[2]
    # paraphrases sharing few characters are one question, under whatever category they came
    assert sorted(student[2].split("|")) == sorted(STUDENT)  # 你哋有冇學生優惠 twice, once here
    assert student[1] == "優惠" and student[7] == "5" and student[8] == "A B C"
    assert sorted(pets[2].split("|")) == sorted(PETS) and pets[7] == "3"
    assert pets[1] == "送貨"  # the commonest category seen: 未分類 is no category
    assert [r[3:7] for r in rows[1:]] == [["", "", "", "normal"]] * 2  # left for the KB owner
    assert out.stat().st_mode & 0o777 == 0o600  # quotes callers: owner-only

    # once a human writes the answers, the rows are a valid knowledge base
    for row in rows[1:]:
        row[4] = "請留低電話，我哋會再聯絡你。"
    answered = tmp_path / "answered.csv"
    answered.write_text("\n".join(",".join(r) for r in rows) + "\n", encoding="utf-8")
    assert main(["kb", "check", str(answered)]) == 0
    assert "2 entries in 2 categories" in capsys.readouterr().out


def test_suggest_min_count_and_threshold(db, tmp_path):
    out = tmp_path / "all.csv"
    assert main(["kb", "suggest", "--db", str(db), "--from", "2026-12-01", "--to", "2026-12-03",
                 "--out", str(out), "--min-count", "1"]) == 0  # fmt: skip
    questions = [r[2] for r in read_rows(out)[1:]]
    assert sorted(questions[2:]) == sorted(["今日天氣點呀", "我想轉台"])  # one-offs, 1 each
    # a strict threshold splits the loosest paraphrases off
    assert main(["kb", "suggest", "--db", str(db), "--from", "2026-12-01", "--to", "2026-12-03",
                 "--out", str(out), "--min-count", "1", "--threshold", "0.95"]) == 0  # fmt: skip
    assert len(read_rows(out)) - 1 > 4


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--from", "2026-12-32"], "--from"),
        (["--to", "12/03/2026"], "--to"),
        (["--from", "2026-12-05", "--to", "2026-12-01"], "--from"),
        (["--min-count", "0"], "--min-count"),
        (["--threshold", "1.5"], "--threshold"),
    ],
)
def test_suggest_names_a_bad_flag(db, tmp_path, capsys, argv, flag):
    assert main(["kb", "suggest", "--db", str(db), "--out", str(tmp_path / "x.csv"), *argv]) == 2
    assert f"error: {flag} " in capsys.readouterr().err
    assert not (tmp_path / "x.csv").exists()


def test_suggest_names_a_missing_store(tmp_path, capsys):
    missing = tmp_path / "none.sqlite3"
    assert main(["kb", "suggest", "--db", str(missing), "--out", str(tmp_path / "x.csv")]) == 2
    assert f"--db {missing}" in capsys.readouterr().err
    assert not missing.exists()  # not created by looking


def test_period_is_inclusive_hong_kong_days():
    start, end = mining.period("2026-12-01", "2026-12-03")
    assert start.isoformat() == "2026-12-01T00:00:00+08:00"
    assert end.isoformat() == "2026-12-04T00:00:00+08:00"
    start, end = mining.period(None, None, today=date(2026, 12, 3))  # the last 7 days
    assert (start.date(), end.date()) == (date(2026, 11, 27), date(2026, 12, 4))
    with pytest.raises(ConfigError, match="--from"):
        mining.period("2025-01-01", "2026-12-03")  # longer than the store's queries allow


def turn(text: str, call: str, category: str = "x") -> dict[str, str]:
    return {"text": text, "call_id": call, "category": category, "ts": ""}


def test_within_category_keeps_categories_apart():
    turns = [
        turn(STUDENT[0], "A", "優惠"),
        turn(STUDENT[1], "B", "帳單"),
        turn(STUDENT[3], "C", "優惠"),
    ]
    across = mining.group_questions(turns)
    assert [(g.count, g.category) for g in across] == [(3, "優惠")]
    within = mining.group_questions(turns, within_category=True)
    assert [(g.count, g.category) for g in within] == [(2, "優惠"), (1, "帳單")]


def test_without_the_encoder_it_groups_by_spelling(monkeypatch, caplog):
    from voice.answer.embed import SentenceEncoder

    def absent(cls, threads: int = 0):
        raise ConfigError("the sentence encoder is not installed")

    monkeypatch.setattr(SentenceEncoder, "load", classmethod(absent))
    turns = [turn("點解收多咗錢", "A"), turn("點解收多咗錢呀", "B"), turn(STUDENT[0], "C"),
             turn(STUDENT[1], "D")]  # fmt: skip
    with caplog.at_level(logging.WARNING):
        groups = mining.group_questions(turns)
    assert "by spelling, not meaning" in caplog.text
    # near-identical spellings group; paraphrases sharing few characters do not
    assert [g.phrasings for g in groups] == [
        ["點解收多咗錢", "點解收多咗錢呀"],
        [STUDENT[0]],
        [STUDENT[1]],
    ]


def test_candidate_rows_cap_guard_and_separator():
    many = QuestionGroup("優惠", "q0", [f"q{i}" for i in range(15)] + ["q0"], ["A", "B", "C", "D"])
    odd = QuestionGroup("未分類", "=1+1", ["=1+1", "有冇|折"], ["E"])
    rows = mining.candidate_rows([many, odd, QuestionGroup("x", "one", ["one"], ["F"])])
    assert rows[0][:3] == ["NEW-001", "優惠", "|".join(f"q{i}" for i in range(10))]
    assert rows[0][7:] == ["16", "A B C"]
    assert rows[1][1:3] == ["", "=1+1|有冇 折"] and len(rows) == 2  # the one-off is left out
    assert "'=1+1|有冇 折" in mining.render_csv(rows)  # a spreadsheet would run it otherwise
