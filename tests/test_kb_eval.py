"""`voice kb eval` on the packaged sample KB: metric counts, bad lines, JSON keys, exit codes."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from voice.answer import SAMPLE_KB, AnswerEngine, AnswerOptions
from voice.answer.engine import Answer, Suggestion
from voice.answer.kbeval import (
    METRICS,
    KbEvalOptions,
    Query,
    evaluate,
    evaluate_file,
    format_report,
    load_queries,
    score_answer,
)
from voice.answer.sentiment import Sentiment
from voice.cli import main
from voice.errors import ConfigError

# (query line, outcome on the sample KB, checked with `voice answer --kb ... --json TEXT`)
GOOD = [
    # right, resolved (ACC-001 0.998)
    {"text": "我唔記得咗密碼", "expect": "ACC-001"},
    # right, resolved (SIM-001 0.998)
    {"text": "點樣補 SIM 卡", "expect": "SIM-001", "lang": "zh", "negative": False},
    # wrong: BILL-003 0.989 first and resolved, BILL-001 second
    {"text": "張單幾時要交錢", "expect": "BILL-001"},
    # English, right
    {"text": "I forgot my password", "expect": "ACC-001", "lang": "en"},
    {"text": "how can I pay my bill", "expect": "PAY-001", "lang": "en"},
    # off-topic, nothing suggested
    {"text": "今日天氣點呀", "expect": None},
    {"text": "what is the weather like today", "expect": None, "lang": "en"},
    # labelled off-topic but resolved (BILL-001 0.998)
    {"text": "我想知今期帳單金額", "expect": None},
    # upset and right (BILL-002 0.672, tone negative -0.97)
    {
        "text": "你哋搞咩呀，我講咗三次我張單多咗錢，真係好嬲",
        "expect": "BILL-002",
        "negative": True,
    },
    # labelled upset, tone neutral
    {"text": "點樣重設密碼", "expect": "ACC-001", "negative": True},
    # English text labelled zh: the reply is in English
    {"text": "my mobile data is not working", "expect": "NET-001", "lang": "zh"},
    # calm label, tone negative (-0.76), unresolved (NET-004 0.23)
    {"text": "尋晚場波踢得垃圾到極", "expect": None, "negative": False},
]
# Bad lines, each with the field its problem names (None: the whole line).
BAD = [
    ("not json at all", None),
    ('["a list"]', None),
    ('{"expect": "ACC-001"}', "text"),
    ('{"text": "  ", "expect": null}', "text"),
    ('{"text": "點樣補卡", "expect": "NOPE-999"}', "expect"),
    ('{"text": "點樣補卡", "expect": 101}', "expect"),
    ('{"text": "點樣補卡"}', "expect"),
    ('{"text": "點樣補卡", "expect": null, "lang": "fr"}', "lang"),
    ('{"text": "點樣補卡", "expect": null, "negative": "yes"}', "negative"),
]


def write_queries(path: Path) -> tuple[Path, dict[int, str | None]]:
    """GOOD and BAD interleaved with blank lines; returns the file and {bad line number: field}."""
    lines: list[str] = []
    bad: dict[int, str | None] = {}
    for i in range(max(len(GOOD), len(BAD))):
        if i < len(GOOD):
            lines.append(json.dumps(GOOD[i], ensure_ascii=False))
        if i < len(BAD):
            lines.append(BAD[i][0])
            bad[len(lines)] = BAD[i][1]
        lines.append("")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path, bad


@pytest.fixture(scope="module")
def queries_file(tmp_path_factory) -> tuple[Path, dict[int, str | None]]:
    return write_queries(tmp_path_factory.mktemp("kbeval") / "queries.jsonl")


@pytest.fixture(scope="module")
def result(queries_file):
    return evaluate_file(queries_file[0], SAMPLE_KB)


def test_metric_counts_on_the_sample_kb(result):
    counts = {name: (m.hits, m.total) for name, m in result.metrics.items()}
    assert counts == {
        "top1": (7, 8),
        "resolved_top1": (7, 8),
        "mrr": (8, 8),  # hits: the expected entry was suggested at all
        "resolved_precision": (7, 9),
        "off_topic_rejection": (3, 4),
        "language": (11, 12),
        "negative_recall": (1, 2),
        "negative_false_alarms": (1, 10),
    }
    assert result.metrics["mrr"].value == pytest.approx((7 + 1 / 2) / 8)
    assert result.metrics["top1"].value == pytest.approx(7 / 8)
    by_lang = {lang: (m["top1"].hits, m["top1"].total) for lang, m in result.by_lang.items()}
    assert by_lang == {"zh": (5, 6), "en": (2, 2)}
    assert result.top_k == 5
    assert 0 < result.latency_ms["p50"] <= result.latency_ms["p95"]


def test_misses_name_the_failed_checks(result):
    texts = [g["text"] for g in GOOD]
    failed = {texts.index(o.query.text): o.failed for o in result.misses}
    assert failed == {
        2: ("top1", "resolved_top1", "resolved_precision"),
        7: ("resolved_precision", "off_topic_rejection"),
        9: ("negative_recall",),
        10: ("language",),
        11: ("negative_false_alarms",),
    }
    wrong = next(o for o in result.misses if o.query.expect == "BILL-001")
    assert (wrong.top_id, wrong.resolved, wrong.rank) == ("BILL-003", True, 2)


def test_bad_lines_are_reported_by_line_and_field_and_skipped(result, queries_file):
    path, bad = queries_file
    assert len(result.outcomes) == len(GOOD)
    assert not {o.query.line for o in result.outcomes} & set(bad)
    assert len(result.problems) == len(BAD)
    for problem, (line, field) in zip(result.problems, bad.items(), strict=True):
        assert problem.startswith(f"{path} line {line}")
        if field is not None:
            assert f"line {line} field {field}:" in problem
    assert any("NOPE-999" in p and "not an entry id" in p for p in result.problems)


def test_a_file_with_no_valid_line_is_a_config_error(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(raw for raw, _ in BAD) + "\n\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no valid query line"):
        load_queries(path, {"ACC-001"})
    assert main(["kb", "eval", str(path), "--kb", str(SAMPLE_KB)]) == 2
    err = capsys.readouterr().err
    assert "no valid query line" in err and f"{path} line 5 field expect" in err
    assert main(["kb", "eval", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["kb", "eval", str(path), "--top-k", "0"]) == 2


def test_cli_json(queries_file, capsys):
    path, _ = queries_file
    assert main(["kb", "eval", str(path), "--kb", str(SAMPLE_KB), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"kb", "queries", "problems", "metrics", "by_lang", "latency_ms", "misses"} <= set(data)
    assert list(data["metrics"]) == list(METRICS)
    assert data["metrics"]["top1"] == {"value": 0.875, "hits": 7, "total": 8}
    assert set(data["latency_ms"]) == {"p50", "p95"}
    assert len(data["problems"]) == len(BAD)
    miss = next(m for m in data["misses"] if m["expect"] == "BILL-001")
    assert miss["got"]["id"] == "BILL-003" and miss["got"]["resolved"] is True
    assert miss["failed"] == ["top1", "resolved_top1", "resolved_precision"]
    assert isinstance(miss["line"], int) and miss["text"] == "張單幾時要交錢"


def test_cli_readable_report_names_a_miss(queries_file, capsys):
    path, _ = queries_file
    assert main(["kb", "eval", str(path), "--misses", "2"]) == 0  # default KB: the sample
    out = capsys.readouterr().out
    assert "top1" in out and "87.5%" in out and "7/8" in out
    assert "張單幾時要交錢" in out and "BILL-003" in out  # the first miss
    assert "misses (2 of 5 shown)" in out
    assert "點樣重設密碼" not in out  # the third miss is not shown
    assert f"{path} line 2" in out  # a problem


def test_latency_uses_the_injected_clock():
    engine = AnswerEngine.from_file(SAMPLE_KB, AnswerOptions(top_k=5))
    ticks = itertools.count(step=0.002)  # every answer takes 2 ms
    queries = [Query(1, "我唔記得咗密碼", "ACC-001"), Query(2, "今日天氣點呀", None)]
    res = evaluate(engine, queries, clock=lambda: next(ticks))
    assert res.latency_ms == {"p50": 2.0, "p95": 2.0}
    assert format_report(res).count("line ") == 0  # no misses, no problems


@pytest.mark.parametrize(
    ("expect", "ids", "resolved", "label", "failed"),
    [
        ("A", ("A", "B"), True, "neutral", ()),
        ("A", ("B", "A"), False, "neutral", ("top1", "resolved_top1")),
        ("A", ("A",), False, "neutral", ("resolved_top1",)),
        ("A", (), False, "negative", ("top1", "resolved_top1", "negative_false_alarms")),
        (None, ("B",), True, "neutral", ("resolved_precision", "off_topic_rejection")),
        (None, (), False, "neutral", ()),
    ],
)
def test_score_answer_checks(expect, ids, resolved, label, failed):
    answer = Answer(
        text="x",
        language="yue-Hant-HK",
        resolved=resolved,
        suggestions=tuple(Suggestion(i, "c", "r", 0.9 - n / 10) for n, i in enumerate(ids)),
        sentiment=Sentiment(label, -0.9 if label == "negative" else 0.0),
    )
    outcome = score_answer(Query(1, "x", expect), answer, 1.0)
    assert outcome.failed == failed
    assert outcome.rank == (ids.index(expect) + 1 if expect in ids else None)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="--top-k"):
        KbEvalOptions(top_k=0)
    with pytest.raises(ConfigError, match="--misses"):
        KbEvalOptions(misses=-1)


def test_line_numbers_count_newlines_only(tmp_path):
    path = tmp_path / "q.jsonl"
    first = json.dumps({"text": "a\u2028b", "expect": None}, ensure_ascii=False)
    path.write_bytes(f'{first}\r\n\r\n{{"text": "c", "expect": "X"}}\r\n'.encode())
    queries, problems = load_queries(path, {"A"})
    assert [q.line for q in queries] == [1]
    assert problems == [
        f"{path} line 3 field expect: 'X' is not an entry id in the KB (use null for an off-topic query)"
    ]


# -- registers: yue / cmn / en labels ----------------------------------------------------------

REGISTERS_SET = Path(__file__).parents[1] / "eval" / "kb" / "registers_queries.jsonl"


def test_lang_labels_yue_cmn_en_and_the_old_zh(tmp_path):
    path = tmp_path / "q.jsonl"
    lines = [
        {"text": "我唔記得咗密碼", "expect": "ACC-001", "lang": "yue"},
        {"text": "我忘記密碼了，怎麼辦", "expect": "ACC-001", "lang": "cmn"},
        {"text": "I forgot my password", "expect": "ACC-001", "lang": "en"},
        {"text": "點樣重設密碼", "expect": "ACC-001", "lang": "zh"},
        {"text": "點樣重設密碼", "expect": "ACC-001", "lang": "mandarin"},
    ]
    path.write_text("\n".join(json.dumps(x, ensure_ascii=False) for x in lines), encoding="utf-8")
    queries, problems = load_queries(path, {"ACC-001"})
    assert [q.lang for q in queries] == ["yue", "cmn", "en", "zh"]
    assert len(problems) == 1 and "line 5 field lang" in problems[0] and '"cmn"' in problems[0]


def test_language_accuracy_per_register():
    engine = AnswerEngine.from_file(SAMPLE_KB, AnswerOptions(top_k=5))
    queries = [
        Query(1, "我唔記得咗密碼", "ACC-001", "yue"),
        Query(2, "我忘記密碼了，怎麼辦", "ACC-001", "cmn"),
        Query(3, "I forgot my password", "ACC-001", "en"),
        Query(4, "我唔記得咗密碼", "ACC-001", "cmn"),  # Cantonese labelled Mandarin: a miss
        Query(5, "點樣重設密碼", "ACC-001", "zh"),  # the old label, for Cantonese
    ]
    res = evaluate(engine, queries)
    got = {
        lang: {name: (m.hits, m.total) for name, m in metrics.items()}
        for lang, metrics in res.by_lang.items()
    }
    assert got == {
        "yue": {"top1": (1, 1), "language": (1, 1)},
        "cmn": {"top1": (2, 2), "language": (1, 2)},
        "en": {"top1": (1, 1), "language": (1, 1)},
        "zh": {"top1": (1, 1), "language": (1, 1)},
    }
    assert [o.query.line for o in res.misses] == [4]
    report = format_report(res)
    assert "language cmn" in report and "1/2" in report


def test_a_mandarin_reply_to_a_zh_line_is_a_language_miss():
    answer = Answer(
        text="x",
        language="cmn-Hant-HK",
        resolved=False,
        suggestions=(),
        sentiment=Sentiment("neutral", 0.0),
    )
    assert score_answer(Query(1, "x", None, "zh"), answer, 1.0).failed == ("language",)
    assert score_answer(Query(1, "x", None, "cmn"), answer, 1.0).failed == ()


def test_the_registers_set_fits_the_sample_kb():
    from voice.answer import load_kb

    queries, problems = load_queries(REGISTERS_SET, load_kb(SAMPLE_KB).by_id)
    assert problems == []
    counts = {lang: sum(q.lang == lang for q in queries) for lang in ("yue", "cmn", "en")}
    assert all(n >= 20 for n in counts.values()), counts
