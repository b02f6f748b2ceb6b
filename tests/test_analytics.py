"""Supervisor analytics (issue 14 items 5, 7): rollups written with each event, the heatmap in Hong
Kong time, the KPIs computed by hand, PDPO expiry of rollups, and the HTTP endpoints' access."""

from __future__ import annotations

import csv
import io
import sqlite3
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from voice.server import analytics
from voice.server.analytics import UNCATEGORISED, BadParameter
from voice.server.store import Store


def utc(text: str) -> float:
    """Unix time of a UTC wall-clock time written 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.fromisoformat(text + "+00:00").timestamp()


def hk(text: str) -> datetime:
    return datetime.fromisoformat(text + "+08:00")


@dataclass
class Turn:
    at: float  # unix time of the transcript event
    latency_ms: float  # the transcript's latency after the utterance ended
    wait_s: float  # transcript event -> suggestion event
    resolved: bool
    category: str | None  # None: no suggestion came close (empty list)
    sentiment: float
    text: str


def feed(store: Store, call_id: str, started: float, turns: list[Turn],
         handoff_at: float | None = None, close: bool = True) -> None:  # fmt: skip
    """Store a call as the hub would: transcript, then its suggestion, a handoff, the end."""
    store.open_call(call_id, "stream", None, "agent-1", {}, now=started)
    events: list[tuple[float, dict]] = []
    for turn in turns:
        start = round(turn.at - started - 2.0, 2)  # seconds from call start, 2 s utterances
        span = {"call_id": call_id, "start": start, "end": start + 2.0}
        events.append((turn.at, {"type": "transcript", **span, "text": turn.text,
                                 "language": "yue-Hant-HK", "latency_ms": turn.latency_ms,
                                 "asr_ms": turn.latency_ms - 50}))  # fmt: skip
        suggestions = [] if turn.category is None else [
            {"id": "kb-1", "category": turn.category, "reply": "好的", "score": 0.8},
            {"id": "kb-2", "category": "其他", "reply": "唔該", "score": 0.3},
        ]  # fmt: skip
        sentiment = {"label": "neutral", "score": turn.sentiment, "text_score": turn.sentiment,
                     "voice_score": 0.0, "level": 0, "cues": []}  # fmt: skip
        events.append((turn.at + turn.wait_s, {"type": "suggestion", **span,
                       "language": "yue-Hant-HK", "resolved": turn.resolved,
                       "suggestions": suggestions, "sentiment": sentiment}))  # fmt: skip
    if handoff_at is not None:
        events.append((handoff_at, {"type": "handoff", "call_id": call_id, "reason": "要真人"}))
    events.sort(key=lambda e: e[0])
    last = events[-1][0] if events else started
    events.append((last + 1, {"type": "end", "call_id": call_id, "duration": last + 1 - started,
                              "utterances": len(turns)}))  # fmt: skip
    for seq, (ts, data) in enumerate(events, 1):
        store.add_event(call_id, seq, data, now=ts)
    if close:
        store.close_call(call_id, "completed")


def seed(store: Store) -> None:
    """Three calls whose KPIs are worked out by hand in the tests.

    A: 2026-11-30 14:00 HK (day shift), 4 turns, handoff after the third.
    B: starts 23:29 UTC on 11-30 = 07:29 HK on 12-01 (night shift), 2 turns.
    C: 2026-12-01 10:00 HK, hands off at once, one turn no KB entry came close to.
    """
    a = utc("2026-11-30 06:00:00")
    feed(store, "A", a, [
        Turn(a + 10, 400, 0.25, True, "帳單", -0.6, "我想查帳單"),
        Turn(a + 60, 500, 0.1, False, None, -0.2, "點解收多咗錢"),
        Turn(a + 120, 300, 0.1, True, "帳單", 0.2, "幾時截數"),
        Turn(a + 180, 300, 0.1, True, "帳單", 0.6, "多謝"),
    ], handoff_at=a + 150)  # fmt: skip
    b = utc("2026-11-30 23:29:00")
    feed(store, "B", b, [
        Turn(utc("2026-11-30 23:30:00"), 300, 0.5, False, "轉賬", -0.4, "轉賬失敗"),
        Turn(utc("2026-11-30 23:31:00"), 300, 0.2, True, "轉賬", 0.0, "轉去邊個戶口"),
    ])  # fmt: skip
    c = utc("2026-12-01 02:00:00")
    feed(store, "C", c, [Turn(c + 30, 1000, 0.0, False, None, 0.3, "我要搵真人")],
         handoff_at=c + 5)  # fmt: skip


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "calls.sqlite3")
    seed(store)
    yield store
    store.close()


TWO_DAYS = (hk("2026-11-30T00:00:00"), hk("2026-12-02T00:00:00"))


def cells(grid: dict) -> dict[str, tuple[list[int], list[int]]]:
    """category -> (unresolved per bucket, total per bucket)."""
    return {c: (grid["unresolved"][i], grid["total"][i]) for i, c in enumerate(grid["categories"])}


# --- heatmap ----------------------------------------------------------------------------------


def test_day_heatmap_buckets_in_hong_kong_days_with_the_uncategorised_row(store):
    grid = analytics.heatmap(store.db, *TWO_DAYS, bucket="day")
    assert grid["buckets"] == ["2026-11-30T00:00:00+08:00", "2026-12-01T00:00:00+08:00"]
    # B spoke at 23:30 UTC on 11-30: 07:30 on 12-01 in Hong Kong, so its turns are on 12-01.
    assert cells(grid) == {
        UNCATEGORISED: ([1, 1], [1, 1]),  # A's second turn, C's turn: empty suggestion lists
        "轉賬": ([0, 1], [0, 2]),
        "帳單": ([0, 0], [3, 0]),  # the best suggestion's category, not the runner-up's 其他
    }
    assert grid["categories"] == [UNCATEGORISED, "轉賬", "帳單"]  # most unresolved first


def test_hour_heatmap_lists_every_hour_and_puts_23_30_utc_at_07_hk(store):
    grid = analytics.heatmap(store.db, hk("2026-12-01T07:00:00"), hk("2026-12-01T11:00:00"))
    assert grid["buckets"] == [f"2026-12-01T{h:02d}:00:00+08:00" for h in (7, 8, 9, 10)]
    assert cells(grid) == {"轉賬": ([1, 0, 0, 0], [2, 0, 0, 0]),
                           UNCATEGORISED: ([0, 0, 0, 1], [0, 0, 0, 1])}  # fmt: skip


def test_period_is_half_open_and_partial_hours_count_only_their_part(store):
    # 14:01:00 to 14:03:00 HK holds A's turns at 14:01 and 14:02, not 14:00:10 nor 14:03:00.
    grid = analytics.heatmap(store.db, hk("2026-11-30T14:01:00"), hk("2026-11-30T14:03:00"))
    assert grid["buckets"] == ["2026-11-30T14:00:00+08:00"]
    assert cells(grid) == {UNCATEGORISED: ([1], [1]), "帳單": ([0], [1])}
    # Partial first and last hours around whole ones (the rollup) add up like the turns do.
    grid = analytics.heatmap(
        store.db, hk("2026-11-30T14:00:30"), hk("2026-12-01T07:30:30"), bucket="day"
    )
    assert cells(grid) == {UNCATEGORISED: ([1, 0], [1, 0]), "轉賬": ([0, 1], [0, 1]),
                           "帳單": ([0, 0], [2, 0])}  # fmt: skip


def test_an_empty_period_has_buckets_but_no_rows(store):
    grid = analytics.heatmap(store.db, hk("2025-01-01T00:00:00"), hk("2025-01-03T00:00:00"), "day")
    assert grid == {"categories": [], "buckets": ["2025-01-01T00:00:00+08:00",
                    "2025-01-02T00:00:00+08:00"], "unresolved": [], "total": []}  # fmt: skip


# --- KPIs -------------------------------------------------------------------------------------


def test_kpis_match_the_hand_computed_values(store):
    k = analytics.kpis(store.db, *TWO_DAYS)
    assert k["calls"] == 3
    assert k["utterances"] == 7
    # First response per call: A 400 ms + 250 ms, B 300 + 500, C 1000 + 0 -> [650, 800, 1000].
    assert k["first_response_ms_p50"] == pytest.approx(800, abs=0.1)
    assert k["first_response_ms_p95"] == pytest.approx(1000, abs=0.1)
    assert k["resolution_rate"] == pytest.approx(4 / 7)  # A 3 of 4, B 1 of 2, C 0 of 1
    assert k["handoff_rate"] == pytest.approx(2 / 3)  # A and C
    assert k["night_response_rate"] == pytest.approx(1 / 2)  # only B spoke 20:00-08:00 HK
    # Resolved before the first handoff: A 2 (its 4th turn came after), B 1 (no handoff), C 0.
    assert k["resolution_depth"] == pytest.approx(1.0)
    # A: last quarter (0.6) - first quarter (-0.6) = 1.2; B: 0.0 - -0.4 = 0.4; C has one turn.
    assert k["sentiment_improvement"] == pytest.approx(0.8)
    assert set(k) == set(analytics.KPI_DEFINITIONS)


def test_kpis_count_calls_by_their_start(store):
    # 12-01 HK holds B (07:29) and C; B's call started at 23:29 UTC on 11-30 all the same.
    k = analytics.kpis(store.db, hk("2026-12-01T00:00:00"), hk("2026-12-02T00:00:00"))
    assert (k["calls"], k["utterances"], k["handoff_rate"]) == (2, 3, 0.5)
    assert k["resolution_rate"] == pytest.approx(1 / 3)


def test_kpis_of_a_period_cutting_hours_add_partial_hours_to_whole_ones(store):
    # From 14:00:05 HK on 11-30 (A started at 14:00:00: out) to half a second after C's start
    # (10:00:00 HK on 12-01: in); B in the whole hours between.
    k = analytics.kpis(store.db, hk("2026-11-30T14:00:05"), hk("2026-12-01T10:00:00.500"))
    assert (k["calls"], k["utterances"]) == (2, 3)
    assert (k["first_response_ms_p50"], k["first_response_ms_p95"]) == (800, 1000)
    assert k["resolution_rate"] == pytest.approx(1 / 3)
    assert (k["handoff_rate"], k["resolution_depth"]) == (0.5, 0.5)
    assert k["night_response_rate"] == pytest.approx(0.5)
    assert k["sentiment_improvement"] == pytest.approx(0.4)  # B only: C has one scored turn


def test_first_response_percentiles_are_exact_within_a_10_ms_slot(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    base = utc("2026-11-30 06:00:00")
    for i, latency in enumerate([812.0, 801.5, 809.9, 803.2, 805.0]):
        started = base + i * 600
        feed(store, f"P{i}", started, [Turn(started + 5, latency, 0.0, True, "帳單", 0, "喂")])
    k = analytics.kpis(store.db, *TWO_DAYS)
    assert (k["first_response_ms_p50"], k["first_response_ms_p95"]) == (805.0, 812.0)
    k = analytics.kpis(store.db, hk("2026-11-30T14:05:00"), hk("2026-11-30T14:25:00"))
    assert (k["calls"], k["first_response_ms_p50"]) == (2, 801.5)  # P1 (801.5) and P2 (809.9)


def test_kpis_of_an_empty_period_are_null_not_zero(store):
    k = analytics.kpis(store.db, hk("2025-01-01T00:00:00"), hk("2025-01-08T00:00:00"))
    assert k["calls"] == 0 and k["utterances"] == 0
    assert all(k[name] is None for name in k if name not in ("calls", "utterances"))


def test_a_call_without_events_counts_as_a_call_with_nothing_resolved(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    store.open_call("X", "stream", None, None, {}, now=utc("2026-11-30 06:00:00"))
    k = analytics.kpis(store.db, *TWO_DAYS)
    assert (k["calls"], k["handoff_rate"], k["resolution_depth"]) == (1, 0.0, 0.0)
    assert k["resolution_rate"] is None and k["first_response_ms_p50"] is None


def test_quarters_of_a_long_call():
    # 8 turns: the first and last two.
    assert analytics.sentiment_delta([-1, -0.5, 0, 0, 0, 0, 0.5, 1]) == pytest.approx(1.5)
    assert analytics.sentiment_delta([0.3]) is None


# --- drill-down -------------------------------------------------------------------------------


def test_unresolved_turns_quote_the_caller_in_order_with_hk_times(store):
    rows = analytics.unresolved_turns(store.db, *TWO_DAYS, UNCATEGORISED)
    assert rows == [
        {"call_id": "A", "ts": "2026-11-30T14:01:00+08:00", "text": "點解收多咗錢",
         "category": UNCATEGORISED},
        {"call_id": "C", "ts": "2026-12-01T10:00:30+08:00", "text": "我要搵真人",
         "category": UNCATEGORISED},
    ]  # fmt: skip
    cell = analytics.unresolved_turns(
        store.db, *TWO_DAYS, UNCATEGORISED, hk("2026-12-01T00:00:00"), "day"
    )
    assert [r["call_id"] for r in cell] == ["C"]
    assert analytics.unresolved_turns(store.db, *TWO_DAYS, "帳單") == []  # all resolved


# --- consistency and retention ----------------------------------------------------------------


def test_a_failed_event_write_leaves_the_rollups_unchanged(store):
    before = analytics.heatmap(store.db, *TWO_DAYS, bucket="day")
    duplicate = {"type": "suggestion", "call_id": "A", "start": 8.0, "end": 10.0,
                 "resolved": False, "suggestions": [], "sentiment": {"score": 0.0}}  # fmt: skip
    with pytest.raises(sqlite3.IntegrityError):
        store.add_event("A", 1, duplicate, now=utc("2026-11-30 06:00:20"))  # seq 1 is taken
    assert analytics.heatmap(store.db, *TWO_DAYS, bucket="day") == before


def test_malformed_event_fields_do_not_fail_the_write(tmp_path):
    store = Store(tmp_path / "c.sqlite3")
    store.open_call("M", "stream", None, None, {})
    store.add_event("M", 1, {"type": "suggestion", "resolved": "yes", "suggestions": "none",
                             "sentiment": {"score": "bad"}, "start": None})  # fmt: skip
    assert store.events("M")[0]["type"] == "suggestion"


def test_expiry_deletes_the_rollups_of_deleted_calls(store):
    # Retention of one day, a day after 12-01 00:00 UTC: A and B (started 11-30 UTC) go.
    assert store.expire(1, now=utc("2026-12-02 00:00:00")) == 2
    grid = analytics.heatmap(store.db, *TWO_DAYS, bucket="day")
    assert cells(grid) == {UNCATEGORISED: ([0, 1], [0, 1])}
    assert analytics.kpis(store.db, *TWO_DAYS)["calls"] == 1
    for table in ("analytics_turns", "analytics_calls"):
        left = {r[0] for r in store.db.execute(f"SELECT DISTINCT call_id FROM {table}")}
        assert left == {"C"}, table
    assert store.db.execute("SELECT sum(total) FROM analytics_hourly").fetchone() == (1,)
    # The per-hour KPI sums and response counts lost A and B too (no rows left at zero).
    assert store.db.execute("SELECT sum(calls), count(*) FROM analytics_call_hours").fetchone() == (
        1, 1)  # fmt: skip
    assert store.db.execute("SELECT sum(n), count(*) FROM analytics_response_hours").fetchone() == (
        1, 1)  # fmt: skip
    assert analytics.unresolved_turns(store.db, *TWO_DAYS, UNCATEGORISED)[0]["call_id"] == "C"


def test_a_store_from_before_analytics_gets_its_rollups_from_its_events(tmp_path, store):
    path = tmp_path / "calls.sqlite3"
    expected = analytics.kpis(store.db, *TWO_DAYS)
    for table in analytics.TABLES:
        store.db.execute(f"DROP TABLE {table}")
    store.db.execute("DROP TABLE alembic_version")  # such a store predates migrations too
    store.close()
    reopened = Store(path)
    assert analytics.kpis(reopened.db, *TWO_DAYS) == expected
    reopened.close()


# --- parameters -------------------------------------------------------------------------------


def test_parse_time_names_the_parameter_and_reads_local_times_as_hk():
    with pytest.raises(BadParameter, match="^from: 'yesterday' is not an ISO 8601"):
        analytics.parse_time("yesterday", "from")
    assert analytics.parse_time("2026-12-01T07:30", "to") == hk("2026-12-01T07:30:00")
    assert analytics.parse_time("2026-11-30T23:30:00Z", "to") == hk("2026-12-01T07:30:00")
    with pytest.raises(BadParameter, match="^from: must be before to"):
        analytics.kpis(None, hk("2026-12-02T00:00:00"), hk("2026-12-01T00:00:00"))
    with pytest.raises(BadParameter, match="^bucket: must be one of hour, day"):
        analytics.parse_bucket("week")


# --- HTTP -------------------------------------------------------------------------------------

TOKENS = {
    "agent-token-aaaaaaaaaaaa": {"role": "agent", "name": "agent-1"},
    "supervisor-token-cccccccc": {"role": "supervisor", "name": "sup-1"},
    "admin-token-dddddddddddd": {"role": "admin", "name": "admin-1"},
}
AGENT, SUPERVISOR, ADMIN = list(TOKENS)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(tmp_path):
    from starlette.testclient import TestClient

    from voice.server.app import create_app
    from voice.server.config import ServerConfig

    path = tmp_path / "calls.sqlite3"
    store = Store(path)
    now = time.time()
    # Two calls within the default 7 days, one before them.
    feed(store, "recent-1", now - 3600, [Turn(now - 3500, 400, 0.1, False, None, 0.0, "喂")])
    feed(store, "recent-2", now - 7200, [Turn(now - 7100, 400, 0.1, True, "帳單", 0.0, "帳單")])
    feed(store, "old", now - 9 * 86400, [Turn(now - 9 * 86400 + 60, 400, 0.1, False, None, 0, "")])
    store.close()
    config = ServerConfig(tokens=TOKENS, db_path=str(path), retention_days=0)
    with TestClient(create_app(config, transcriber=None)) as client:
        yield client


def test_analytics_need_a_supervisor_or_admin_token(client):
    assert client.get("/v1/analytics/kpis").status_code == 401
    assert client.get("/v1/analytics/kpis", headers=_bearer(AGENT)).status_code == 403
    assert client.get("/v1/analytics/heatmap", headers=_bearer(ADMIN)).status_code == 200
    # The drill-down quotes callers: call content, which an admin does not see.
    admin = client.get("/v1/analytics/unresolved?category=x", headers=_bearer(ADMIN))
    assert admin.status_code == 403


def test_kpis_default_to_the_last_seven_days(client):
    reply = client.get("/v1/analytics/kpis", headers=_bearer(SUPERVISOR))
    assert reply.status_code == 200
    body = reply.json()
    assert set(analytics.KPI_DEFINITIONS) <= set(body)
    assert body["definitions"] == analytics.KPI_DEFINITIONS
    assert (body["calls"], body["utterances"], body["resolution_rate"]) == (2, 2, 0.5)
    start, end = (datetime.fromisoformat(body[k]) for k in ("from", "to"))
    assert end - start == timedelta(days=7)


def test_bad_parameters_are_400_naming_the_parameter(client):
    for query, name in [("from=yesterday", "from"), ("to=2026-13-01", "to"),
                        ("bucket=week", "bucket"),
                        ("from=2026-12-02T00:00:00Z&to=2026-12-01T00:00:00Z", "from")]:  # fmt: skip
        reply = client.get(f"/v1/analytics/heatmap?{query}", headers=_bearer(SUPERVISOR))
        assert reply.status_code == 400, query
        assert reply.json()["error"].startswith(f"{name}:"), reply.json()
    reply = client.get("/v1/analytics/unresolved", headers=_bearer(SUPERVISOR))
    assert (reply.status_code, reply.json()["error"][:9]) == (400, "category:")


def test_heatmap_json_csv_and_drill_down_agree(client):
    sup = _bearer(SUPERVISOR)
    grid = client.get("/v1/analytics/heatmap?bucket=day", headers=sup).json()
    assert sorted(grid["categories"]) == sorted([UNCATEGORISED, "帳單"])
    assert len(grid["buckets"]) in (7, 8)  # 7 days from a time of day touch 8 days, or 7
    reply = client.get("/v1/analytics/heatmap.csv?bucket=day", headers=sup)
    assert reply.status_code == 200
    assert reply.headers["content-type"] == "text/csv; charset=utf-8"
    assert "attachment" in reply.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(reply.content.decode("utf-8-sig"))))
    assert rows[0] == ["category", "bucket", "unresolved", "total"]
    assert len(rows) == 1 + 2 * len(grid["buckets"])
    totals = {(r[0]): 0 for r in rows[1:]}
    for category, _, unresolved, _total in rows[1:]:
        totals[category] += int(unresolved)
    assert totals == {UNCATEGORISED: 1, "帳單": 0}
    drill = client.get(f"/v1/analytics/unresolved?category={UNCATEGORISED}", headers=sup).json()
    assert [(t["call_id"], t["text"]) for t in drill["turns"]] == [("recent-1", "喂")]


def test_reads_are_audited_with_who(client, caplog, monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger("voice"), "propagate", True)
    caplog.set_level(logging.INFO, "voice.audit")
    client.get("/v1/analytics/kpis", headers=_bearer(SUPERVISOR))
    reads = [r for r in caplog.records if getattr(r, "action", None) == "analytics.read"]
    assert [(r.outcome, r.user) for r in reads] == [("success", "sup-1")]


def test_the_readme_quotes_every_kpi_definition():
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    for name, definition in analytics.KPI_DEFINITIONS.items():
        assert f"| `{name}` | {definition} |" in readme, name


# --- the weekly report for KB owners (item 6) -------------------------------------------------


def test_weekly_report_of_an_iso_week(tmp_path, capsys):
    from voice.cli import main

    db = tmp_path / "calls.sqlite3"
    store = Store(db)
    seed(store)  # calls on 2026-11-30 and 12-01: ISO week 2026-W49 (Monday 11-30)
    w = utc("2026-12-02 03:00:00")  # 11:00 HK, same week: two ways of asking the same thing
    feed(store, "D", w, [
        Turn(w + 10, 300, 0.1, False, "帳單", -0.1, "點解收多咗錢"),
        Turn(w + 40, 300, 0.1, False, "帳單", -0.1, "點解收多咗錢呀"),
        Turn(w + 70, 300, 0.1, False, "送貨", 0.0, "=HYPERLINK(1)"),
    ])  # fmt: skip
    before = utc("2026-11-24 02:00:00")  # the week before: one resolved call
    feed(store, "P", before, [Turn(before + 10, 300, 0.1, True, "帳單", 0.0, "我想查帳單")])
    store.close()

    out = tmp_path / "report"
    assert main(["report", "weekly", "--db", str(db), "--week", "2026-W49", "--out", str(out)]) == 0
    assert "2026-W49: 4 calls" in capsys.readouterr().out
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "2026-11-30 – 2026-12-06 (HKT)" in page
    assert page.count("<th>11-30</th>") == 1 and "<th>12-06</th>" in page  # 7 day columns
    # KPIs against the week before: 4 calls now, 1 then
    calls_row = page.split("通話數 Calls</td>")[1].split("</tr>")[0]
    assert "<td>4</td><td>1</td>" in calls_row
    rows = list(csv.reader(io.StringIO((out / "unresolved.csv").read_text(encoding="utf-8-sig"))))
    assert rows[0] == ["id", "category", "questions", "keywords", "answer", "answer_en",
                       "priority", "count", "example_calls"]  # fmt: skip
    by_question = {r[2]: r for r in rows[1:]}
    grouped = by_question["點解收多咗錢|點解收多咗錢呀"]  # similar utterances are one group
    assert grouped[1] == "帳單" and grouped[7] == "2" and grouped[8] == "D"
    assert by_question["'=HYPERLINK(1)"][1] == "送貨"  # a spreadsheet formula is kept as text
    assert by_question["點解收多咗錢"][1] == ""  # call A's, 未分類: the KB owner picks one
    assert (out / "unresolved.csv").stat().st_mode & 0o077 == 0  # quotes callers: owner-only


@pytest.mark.parametrize("week", ["2026-48", "2026-W54", "W48"])
def test_weekly_report_names_a_bad_week(tmp_path, capsys, week):
    from voice.cli import main

    assert main(["report", "weekly", "--db", str(tmp_path / "x.sqlite3"), "--week", week,
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert f"--week {week!r}" in capsys.readouterr().err
