"""Supervisor analytics: rollups written with each stored event, and the console's queries.

These tables live beside `calls` and `events` in the store's SQLite file and are written in the
same transaction as the event they come from (`Store.add_event` calls `record`), so they never
disagree with the events; `Store.expire` deletes them with their calls (`forget`), and a store
from before they existed gets them filled from its events when it opens (`rebuild`).

- `analytics_turns`: one row per caller utterance (its transcript event), completed by the
  suggestion that answers it: category of the best suggestion ("未分類" when none came close),
  resolved, response time, sentiment score, Hong Kong hour and night flag.
- `analytics_hourly`: suggestions and unresolved ones per Hong Kong hour and category, so a heatmap
  reads at most a few thousand rows whatever the number of stored turns.
- `analytics_calls`: per-call counters the KPIs average over calls started in a period, stored in
  order of start (a row per call from `Store.open_call`).
- `analytics_call_hours`, `analytics_response_hours`: those counters summed per Hong Kong hour of
  the calls' start, and first response times counted per 10 ms, kept by triggers on
  `analytics_calls`: the KPIs of a month read about 720 hours whatever the number of calls, plus
  the calls of the partial hours at either end of the period.

Time buckets are Hong Kong local time (Asia/Hong_Kong: UTC+8, no daylight saving since 1979), so
an hour or day bucket is a whole number of hours after the epoch shifted by 8 hours.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS analytics_turns (
    call_id TEXT NOT NULL, seq INTEGER NOT NULL, ts REAL NOT NULL, hk_hour INTEGER NOT NULL,
    night INTEGER NOT NULL, start REAL, latency_ms REAL, category TEXT, resolved INTEGER,
    response_ms REAL, sentiment REAL, PRIMARY KEY (call_id, seq)
);
CREATE INDEX IF NOT EXISTS analytics_turns_ts ON analytics_turns (ts, category, resolved, hk_hour);
CREATE INDEX IF NOT EXISTS analytics_turns_unresolved ON analytics_turns (category, resolved, ts);
CREATE TABLE IF NOT EXISTS analytics_hourly (
    hk_hour INTEGER NOT NULL, category TEXT NOT NULL, total INTEGER NOT NULL,
    unresolved INTEGER NOT NULL, PRIMARY KEY (hk_hour, category)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS analytics_calls (
    started_at REAL NOT NULL, call_id TEXT NOT NULL, utterances INTEGER NOT NULL DEFAULT 0,
    suggestions INTEGER NOT NULL DEFAULT 0, resolved INTEGER NOT NULL DEFAULT 0,
    night_suggestions INTEGER NOT NULL DEFAULT 0, night_resolved INTEGER NOT NULL DEFAULT 0,
    handoff INTEGER NOT NULL DEFAULT 0, depth INTEGER NOT NULL DEFAULT 0,
    first_response_ms REAL, sentiment_delta REAL, PRIMARY KEY (started_at, call_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS analytics_calls_id ON analytics_calls (call_id);
CREATE TABLE IF NOT EXISTS analytics_call_hours (
    hk_hour INTEGER PRIMARY KEY, calls INTEGER NOT NULL DEFAULT 0,
    utterances INTEGER NOT NULL DEFAULT 0, suggestions INTEGER NOT NULL DEFAULT 0,
    resolved INTEGER NOT NULL DEFAULT 0, night_suggestions INTEGER NOT NULL DEFAULT 0,
    night_resolved INTEGER NOT NULL DEFAULT 0, handoff INTEGER NOT NULL DEFAULT 0,
    depth INTEGER NOT NULL DEFAULT 0, sentiment_sum REAL NOT NULL DEFAULT 0,
    sentiment_n INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS analytics_response_hours (
    hk_hour INTEGER NOT NULL, ms10 INTEGER NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (hk_hour, ms10)
) WITHOUT ROWID;
"""
TABLES = ("analytics_turns", "analytics_hourly", "analytics_calls", "analytics_call_hours",
          "analytics_response_hours")  # fmt: skip

HK = ZoneInfo("Asia/Hong_Kong")
HK_OFFSET_S = 8 * 3600  # Asia/Hong_Kong has been UTC+8 all year since 1979: buckets are integers
HOUR_S = 3600
BUCKET_HOURS = {"hour": 1, "day": 24}
MAX_PERIOD = {"hour": timedelta(days=31), "day": timedelta(days=366)}  # bounds the answer's size
NIGHT_FROM, NIGHT_TO = 20, 8  # night shift, Hong Kong time: 20:00 to 08:00
UNCATEGORISED = "未分類"  # a turn whose suggestions were empty: no KB entry came close
DEFAULT_DAYS = 7

# analytics_calls summed per Hong Kong hour of the calls' start, and their first response times
# counted per 10 ms: kept by triggers, so every change to a call's row (record, forget, rebuild)
# moves its start hour's sums with it and the KPIs of a month read ~720 rows, not every call.
SUMMED = ("utterances", "suggestions", "resolved", "night_suggestions", "night_resolved",
          "handoff", "depth")  # fmt: skip
HOUR_SQL = "CAST(({row}started_at + 28800) / 3600 AS INTEGER)"  # hk_hour(): started_at > 0
MS10_SQL = "CAST({row}first_response_ms / 10 AS INTEGER)"  # a first response's 10 ms slot
MS10 = MS10_SQL.format(row="")  # as the index has it: the percentiles' lookup must match it
# The same on PostgreSQL, whose CAST rounds where SQLite's truncates (both values are positive).
PG_HOUR_SQL = "CAST(trunc(({row}started_at + 28800) / 3600) AS BIGINT)"
PG_MS10_SQL = "CAST(trunc({row}first_response_ms / 10) AS BIGINT)"
PG_MS10 = PG_MS10_SQL.format(row="")


def _ms10(db: Any) -> str:
    """The 10 ms slot expression of `db`'s dialect (the one its index was made with)."""
    return PG_MS10 if getattr(db, "postgresql", False) else MS10


def _fold_sql(row: str, sign: str, postgresql: bool = False) -> str:
    """Statements adding (sign "+") or removing ("-") the analytics_calls row `row` (NEW/OLD)
    to or from its hour's sums and response count; empty rows are deleted."""
    hour_sql, ms10_sql = (PG_HOUR_SQL, PG_MS10_SQL) if postgresql else (HOUR_SQL, MS10_SQL)
    hour, ms10 = hour_sql.format(row=row + "."), ms10_sql.format(row=row + ".")
    sums = ", ".join(f"{c} = {c} {sign} {row}.{c}" for c in SUMMED)
    scored = f"(CASE WHEN {row}.sentiment_delta IS NULL THEN 0 ELSE 1 END)"
    return f"""
    INSERT INTO analytics_call_hours (hk_hour) VALUES ({hour}) ON CONFLICT DO NOTHING;
    UPDATE analytics_call_hours SET calls = calls {sign} 1, {sums},
        sentiment_sum = sentiment_sum {sign} coalesce({row}.sentiment_delta, 0),
        sentiment_n = sentiment_n {sign} {scored} WHERE hk_hour = {hour};
    DELETE FROM analytics_call_hours WHERE hk_hour = {hour} AND calls <= 0;
    INSERT INTO analytics_response_hours (hk_hour, ms10, n)
        SELECT {hour}, {ms10}, {sign}1 WHERE {row}.first_response_ms IS NOT NULL
        ON CONFLICT (hk_hour, ms10) DO UPDATE SET n = analytics_response_hours.n {sign} 1;
    DELETE FROM analytics_response_hours WHERE hk_hour = {hour} AND ms10 = {ms10} AND n <= 0;"""


TABLES_SQL = SCHEMA  # the tables and plain indexes, in the SQL both databases take
SCHEMA += f"""
CREATE INDEX IF NOT EXISTS analytics_calls_ms10 ON analytics_calls ({MS10}, started_at);
CREATE TRIGGER IF NOT EXISTS analytics_calls_in AFTER INSERT ON analytics_calls BEGIN
{_fold_sql("NEW", "+")}
END;
CREATE TRIGGER IF NOT EXISTS analytics_calls_out AFTER DELETE ON analytics_calls BEGIN
{_fold_sql("OLD", "-")}
END;
CREATE TRIGGER IF NOT EXISTS analytics_calls_change AFTER UPDATE ON analytics_calls BEGIN
{_fold_sql("OLD", "-")}
{_fold_sql("NEW", "+")}
END;
"""

# PostgreSQL: the same index and the triggers' statements in one PL/pgSQL trigger function.
PG_SCHEMA = (
    TABLES_SQL,
    f"CREATE INDEX IF NOT EXISTS analytics_calls_ms10 ON analytics_calls (({PG_MS10}), started_at)",
    f"""CREATE OR REPLACE FUNCTION analytics_calls_fold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'INSERT' THEN {_fold_sql("OLD", "-", postgresql=True)}
    END IF;
    IF TG_OP <> 'DELETE' THEN {_fold_sql("NEW", "+", postgresql=True)}
    END IF;
    RETURN NULL;
END $$""",
    "DROP TRIGGER IF EXISTS analytics_calls_fold ON analytics_calls",
    "CREATE TRIGGER analytics_calls_fold AFTER INSERT OR UPDATE OR DELETE ON analytics_calls "
    "FOR EACH ROW EXECUTE FUNCTION analytics_calls_fold()",
)


def create(db: Any) -> None:
    """Create the rollup tables, their index and the triggers keeping the hourly sums."""
    if getattr(db, "postgresql", False):
        db.executescript(PG_SCHEMA[0])
        for statement in PG_SCHEMA[1:]:
            db.execute(statement)
    else:
        db.executescript(SCHEMA)


KPI_DEFINITIONS: dict[str, str] = {
    "calls": "Calls started in the period.",
    "utterances": "Caller utterances transcribed in those calls.",
    "first_response_ms_p50": (
        "Median over calls of the time from the end of the caller's first utterance to the "
        "first suggestion shown (transcription latency plus the wait for the suggestion), in ms."
    ),
    "first_response_ms_p95": (
        "95th percentile (nearest rank) over calls of the same first response time, in ms."
    ),
    "resolution_rate": (
        "Share of suggestions in those calls that resolved the caller's question (a KB entry "
        "matched with confidence)."
    ),
    "handoff_rate": "Share of those calls in which the caller was handed off to a human.",
    "night_response_rate": (
        "Resolution rate of the utterances spoken between 20:00 and 08:00 Hong Kong time."
    ),
    "resolution_depth": (
        "Mean over those calls of the number of resolved turns before the first handoff "
        "(or the end of the call)."
    ),
    "sentiment_improvement": (
        "Mean over calls with at least two scored turns of the caller's mean sentiment score "
        "(-1 to 1) in the last quarter of the turns minus that of the first quarter (at least "
        "one turn each); positive means callers ended happier than they began."
    ),
}


class BadParameter(ValueError):
    """A query parameter that cannot be used; the message names it."""

    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


# --- time -------------------------------------------------------------------------------------


def hk_hour(ts: float) -> int:
    """Hours since 1970-01-01 00:00 Hong Kong time of the hour holding unix time `ts`."""
    return math.floor((ts + HK_OFFSET_S) / HOUR_S)


def hour_ts(hour: int) -> float:
    """Unix time at which Hong Kong hour number `hour` begins."""
    return hour * HOUR_S - HK_OFFSET_S


def is_night(ts: float) -> bool:
    local_hour = hk_hour(ts) % 24
    return local_hour >= NIGHT_FROM or local_hour < NIGHT_TO


def iso_hk(ts: float) -> str:
    """`ts` as ISO 8601 in Hong Kong time, e.g. 2026-11-30T14:00:00+08:00."""
    return datetime.fromtimestamp(ts, HK).isoformat()


def parse_day(value: str, flag: str) -> date:
    """A YYYY-MM-DD date given to a command's `flag`; ConfigError naming the flag otherwise."""
    from voice.errors import ConfigError

    try:
        if len(value.strip()) != 10:
            raise ValueError
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            f"{flag} {value!r}: write the date as YYYY-MM-DD, e.g. 2026-12-01"
        ) from None


def day_period(first: date, last: date) -> tuple[float, float]:
    """Unix times of `first` 00:00 and of the day after `last` 00:00, Hong Kong time: both
    days inclusive, as commands that take --from/--to mean them."""
    start = datetime.combine(first, datetime.min.time(), HK)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), HK)
    return start.timestamp(), end.timestamp()


def parse_time(value: str | None, name: str, default: datetime | None = None) -> datetime:
    """An ISO 8601 date or date-time query parameter as an aware datetime; one without an offset
    is read as Hong Kong time (what a supervisor types). Raises BadParameter naming `name`."""
    if value is None or value == "":
        if default is None:
            raise BadParameter(name, "is required (ISO 8601, e.g. 2026-11-30T14:00:00+08:00)")
        return default
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise BadParameter(
            name, f"{value!r} is not an ISO 8601 date or time (e.g. 2026-11-30T14:00:00+08:00)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=HK)


def parse_bucket(value: str | None, name: str = "bucket") -> str:
    bucket = value or "hour"
    if bucket not in BUCKET_HOURS:
        raise BadParameter(name, f"must be one of {', '.join(BUCKET_HOURS)}, not {value!r}")
    return bucket


def check_period(start: datetime, end: datetime, bucket: str | None = None) -> None:
    """Refuse an empty or reversed period, or one with too many buckets to draw."""
    if start.tzinfo is None or end.tzinfo is None:
        raise BadParameter("from" if start.tzinfo is None else "to", "needs a UTC offset")
    if start >= end:
        raise BadParameter("from", f"must be before to ({start.isoformat()} >= {end.isoformat()})")
    if bucket is not None and end - start > MAX_PERIOD[bucket]:
        days = MAX_PERIOD[bucket].days
        raise BadParameter("from", f"period longer than {days} days for bucket={bucket}")


# --- writes (inside Store.add_event's transaction) ---------------------------------------------


def _num(value: Any) -> float | None:
    """A finite number from event JSON, else None: a malformed field must not fail the write
    (a failed write ends the call)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def spreadsheet_safe(cell: str) -> str:
    """`cell` for a CSV export: one a spreadsheet would run as a formula (=, +, -, @ first) is
    kept as text with a leading apostrophe."""
    return "'" + cell if cell.startswith(("=", "+", "-", "@")) else cell


def best_category(data: dict[str, Any]) -> str:
    suggestions = data.get("suggestions")
    if isinstance(suggestions, list) and suggestions and isinstance(suggestions[0], dict):
        category = suggestions[0].get("category")
        if isinstance(category, str) and category:
            return category
    return UNCATEGORISED


def record(db: sqlite3.Connection, call_id: str, seq: int, data: dict[str, Any], ts: float) -> None:
    """Fold one stored event into the rollups. Call inside the transaction that stores it."""
    kind = data.get("type")
    if kind == "transcript":
        _record_transcript(db, call_id, seq, data, ts)
    elif kind == "suggestion":
        _record_suggestion(db, call_id, seq, data, ts)
    elif kind == "handoff":
        _call_row(db, call_id)
        db.execute("UPDATE analytics_calls SET handoff=1 WHERE call_id=?", (call_id,))


def open_call(db: sqlite3.Connection, call_id: str, started_at: float) -> None:
    """A new call's row; call inside the transaction that stores the call."""
    db.execute(
        "INSERT INTO analytics_calls (started_at, call_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
        (started_at, call_id),
    )


def _call_row(db: sqlite3.Connection, call_id: str) -> None:
    """Make sure the call has its row (a call stored before analytics existed)."""
    db.execute(
        "INSERT INTO analytics_calls (started_at, call_id) "
        "SELECT started_at, id FROM calls WHERE id=? ON CONFLICT DO NOTHING",
        (call_id,),
    )


def _record_transcript(db: sqlite3.Connection, call_id: str, seq: int, data: dict[str, Any],
                       ts: float) -> None:  # fmt: skip
    db.execute(
        "INSERT INTO analytics_turns (call_id, seq, ts, hk_hour, night, start, "
        "latency_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (call_id, seq, ts, hk_hour(ts), int(is_night(ts)), _num(data.get("start")),
         _num(data.get("latency_ms"))),
    )  # fmt: skip
    _call_row(db, call_id)
    db.execute("UPDATE analytics_calls SET utterances=utterances+1 WHERE call_id=?", (call_id,))


def _record_suggestion(db: sqlite3.Connection, call_id: str, seq: int, data: dict[str, Any],
                       ts: float) -> None:  # fmt: skip
    category = best_category(data)
    resolved = int(data.get("resolved") is True)
    sentiment = data.get("sentiment")
    score = _num(sentiment.get("score")) if isinstance(sentiment, dict) else None
    start = _num(data.get("start"))
    # The turn is the transcript with the same start that no suggestion has answered yet.
    turn = db.execute(
        "SELECT seq, ts, latency_ms FROM analytics_turns WHERE call_id=? AND start IS NOT DISTINCT FROM ? "
        "AND category IS NULL ORDER BY seq DESC LIMIT 1",
        (call_id, start),
    ).fetchone()
    if turn is None:  # no transcript stored for it: the suggestion stands for the turn, untimed
        turn_seq, turn_ts, response_ms = seq, ts, None
        db.execute(
            "INSERT INTO analytics_turns (call_id, seq, ts, hk_hour, night, start) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (call_id, seq, ts, hk_hour(ts), int(is_night(ts)), start),
        )
    else:
        turn_seq, turn_ts, latency = turn
        waited_ms = max(0.0, ts - turn_ts) * 1000
        response_ms = None if latency is None else round(latency + waited_ms, 1)
    db.execute(
        "UPDATE analytics_turns SET category=?, resolved=?, response_ms=?, sentiment=? "
        "WHERE call_id=? AND seq=?",
        (category, resolved, response_ms, score, call_id, turn_seq),
    )
    hour, night = hk_hour(turn_ts), int(is_night(turn_ts))
    db.execute(
        "INSERT INTO analytics_hourly (hk_hour, category, total, unresolved) VALUES (?, ?, 1, ?) "
        "ON CONFLICT (hk_hour, category) DO UPDATE SET total=analytics_hourly.total+1, "
        "unresolved=analytics_hourly.unresolved+excluded.unresolved",
        (hour, category, 1 - resolved),
    )
    _call_row(db, call_id)
    db.execute(
        "UPDATE analytics_calls SET suggestions=suggestions+1, resolved=resolved+?, "
        "night_suggestions=night_suggestions+?, night_resolved=night_resolved+?, "
        "depth=depth+(CASE WHEN handoff=0 THEN ? ELSE 0 END), "
        "first_response_ms=coalesce(first_response_ms, ?) WHERE call_id=?",
        (resolved, night, night * resolved, resolved, response_ms, call_id),
    )
    if score is not None:
        # Recomputed from the call's scored turns: which turns form a quarter changes as it grows.
        scores = [s for (s,) in db.execute(
            "SELECT sentiment FROM analytics_turns WHERE call_id=? AND sentiment IS NOT NULL "
            "ORDER BY seq", (call_id,))]  # fmt: skip
        db.execute(
            "UPDATE analytics_calls SET sentiment_delta=? WHERE call_id=?",
            (sentiment_delta(scores), call_id),
        )


def sentiment_delta(scores: list[float]) -> float | None:
    """Mean of the last quarter of a call's turn scores minus the mean of the first quarter (at
    least one turn each); None with fewer than two turns."""
    if len(scores) < 2:
        return None
    k = max(1, len(scores) // 4)
    return sum(scores[-k:]) / k - sum(scores[:k]) / k


def forget(db: sqlite3.Connection, calls_sql: str, params: Iterable[Any]) -> None:
    """Delete the rollups of the calls `calls_sql` selects (ids), inside the caller's transaction;
    the hourly counts lose their turns first, then empty hours go."""
    params = tuple(params)
    db.execute(
        "INSERT INTO analytics_hourly (hk_hour, category, total, unresolved) "
        "SELECT hk_hour, category, -count(*), -sum(CASE WHEN resolved=0 THEN 1 ELSE 0 END) "
        "FROM analytics_turns "
        f"WHERE call_id IN ({calls_sql}) AND category IS NOT NULL GROUP BY hk_hour, category "
        "ON CONFLICT (hk_hour, category) DO UPDATE SET "
        "total=analytics_hourly.total+excluded.total, "
        "unresolved=analytics_hourly.unresolved+excluded.unresolved",
        params,
    )
    db.execute("DELETE FROM analytics_hourly WHERE total <= 0")
    db.execute(f"DELETE FROM analytics_turns WHERE call_id IN ({calls_sql})", params)
    db.execute(f"DELETE FROM analytics_calls WHERE call_id IN ({calls_sql})", params)


def rebuild(db: sqlite3.Connection) -> int:
    """Fill empty rollups from the stored events (a database written before analytics existed);
    inside the caller's transaction. Returns how many events were read."""
    db.execute(
        "INSERT INTO analytics_calls (started_at, call_id) "
        "SELECT started_at, id FROM calls WHERE true ON CONFLICT DO NOTHING"  # WHERE: SQLite's
    )  # parser needs one before an upsert clause
    rows = db.execute("SELECT call_id, seq, ts, data FROM events ORDER BY call_id, seq")
    count = 0
    for call_id, seq, ts, data in rows:  # a cursor: an old store may hold millions of events
        try:
            event = json.loads(data)
        except ValueError:
            continue
        if isinstance(event, dict):
            record(db, call_id, seq, event, ts)
        count += 1
    return count


# --- reads ------------------------------------------------------------------------------------


def _bucket_of(hour: int, hours: int) -> int:
    return hour // hours


def heatmap(db: sqlite3.Connection, start: datetime, end: datetime,
            bucket: str = "hour") -> dict[str, Any]:  # fmt: skip
    """Suggestions and unresolved ones per category and Hong Kong hour or day in [start, end).

    `buckets` are the starts of every hour/day touching the period (empty ones too); the first
    and last count only the turns inside the period. Categories: most unresolved first."""
    bucket = parse_bucket(bucket)
    check_period(start, end, bucket)
    hours = BUCKET_HOURS[bucket]
    t0, t1 = start.timestamp(), end.timestamp()
    first = _bucket_of(hk_hour(t0), hours)
    last = _bucket_of(hk_hour(math.nextafter(t1, -math.inf)), hours)
    cells: dict[tuple[str, int], list[int]] = {}
    for index, category, total, unresolved in _bucket_counts(db, t0, t1, hours):
        cell = cells.setdefault((category, index - first), [0, 0])
        cell[0] += total
        cell[1] += unresolved
    width = last - first + 1
    sums: dict[str, list[int]] = {}
    for (category, _), (total, unresolved) in cells.items():
        s = sums.setdefault(category, [0, 0])
        s[0] += unresolved
        s[1] += total
    categories = sorted(sums, key=lambda c: (-sums[c][0], -sums[c][1], c))
    return {
        "categories": categories,
        "buckets": [iso_hk(hour_ts((first + i) * hours)) for i in range(width)],
        "unresolved": [[cells.get((c, i), [0, 0])[1] for i in range(width)] for c in categories],
        "total": [[cells.get((c, i), [0, 0])[0] for i in range(width)] for c in categories],
    }


def _split(t0: float, t1: float) -> tuple[tuple[int, int] | None, list[tuple[float, float]]]:
    """[t0, t1) as the whole Hong Kong hours inside it ([first, last) hour numbers, or None) and
    the partial spans around them, which are read from per-turn or per-call rows."""
    full_from = hk_hour(t0) if hour_ts(hk_hour(t0)) == t0 else hk_hour(t0) + 1
    full_to = hk_hour(t1)  # exclusive: the hour holding t1 is partial or outside the period
    if full_from >= full_to:
        return None, [(t0, t1)]
    edges = [(t0, hour_ts(full_from)), (hour_ts(full_to), t1)]
    return (full_from, full_to), [(a, b) for a, b in edges if a < b]


def _bucket_counts(db: sqlite3.Connection, t0: float, t1: float,
                   hours: int) -> list[tuple[Any, ...]]:  # fmt: skip
    """(bucket number, category, total, unresolved) for turns in [t0, t1), a bucket being `hours`
    Hong Kong hours: whole hours from the hourly rollup, the partial hours at either end from the
    turns themselves. Summed by SQLite: a month of hours by 30 categories is 20 000 rows."""
    hours_in, edges = _split(t0, t1)
    rows = []
    if hours_in is not None:
        rows += db.execute(
            "SELECT hk_hour / ? AS b, category, sum(total), sum(unresolved) "
            "FROM analytics_hourly WHERE hk_hour >= ? AND hk_hour < ? GROUP BY b, category",
            (hours, *hours_in),
        ).fetchall()
    for a, b in edges:
        rows += db.execute(
            "SELECT hk_hour / ? AS b, category, count(*), "
            "sum(CASE WHEN resolved=0 THEN 1 ELSE 0 END) FROM analytics_turns "
            "WHERE ts >= ? AND ts < ? AND category IS NOT NULL GROUP BY b, category",
            (hours, a, b),
        ).fetchall()
    return rows


def percentile(sorted_values: list[float], p: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least p% of the values at or below."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def _ratio(part: float | None, whole: float | None) -> float | None:
    return None if not whole else (part or 0) / whole


def kpis(db: sqlite3.Connection, start: datetime, end: datetime) -> dict[str, Any]:
    """The KPI_DEFINITIONS figures over calls started in [start, end); None where undefined."""
    check_period(start, end)
    t0, t1 = start.timestamp(), end.timestamp()
    hours_in, edges = _split(t0, t1)
    (calls, utterances, suggestions, resolved, night_suggestions, night_resolved, handoffs,
     depth, sentiment_sum, sentiment_n) = _call_sums(db, hours_in, edges)  # fmt: skip
    slots = _response_slots(db, hours_in, edges)
    return {
        "calls": calls,
        "utterances": utterances,
        "first_response_ms_p50": _first_response(db, t0, t1, slots, 50),
        "first_response_ms_p95": _first_response(db, t0, t1, slots, 95),
        "resolution_rate": _ratio(resolved, suggestions),
        "handoff_rate": _ratio(handoffs, calls),
        "night_response_rate": _ratio(night_resolved, night_suggestions),
        "resolution_depth": _ratio(depth, calls),
        "sentiment_improvement": _ratio(sentiment_sum, sentiment_n),
    }


def _call_sums(db: sqlite3.Connection, hours_in: tuple[int, int] | None,
               edges: list[tuple[float, float]]) -> list[int | float]:  # fmt: skip
    """calls, the SUMMED columns, sentiment sum and count of the calls started in the period:
    whole hours from the hourly sums, partial ones from the calls' rows."""
    summed = ", ".join(f"sum({c})" for c in SUMMED)
    parts = []
    if hours_in is not None:
        parts.append(db.execute(
            f"SELECT sum(calls), {summed}, sum(sentiment_sum), sum(sentiment_n) "
            "FROM analytics_call_hours WHERE hk_hour >= ? AND hk_hour < ?", hours_in,
        ).fetchone())  # fmt: skip
    for span in edges:
        parts.append(db.execute(
            f"SELECT count(*), {summed}, sum(sentiment_delta), count(sentiment_delta) "
            "FROM analytics_calls WHERE started_at >= ? AND started_at < ?", span,
        ).fetchone())  # fmt: skip
    totals: list[int | float] = [0] * (len(SUMMED) + 3)
    for part in parts:
        totals = [t + (v or 0) for t, v in zip(totals, part, strict=True)]
    return totals


def _response_slots(db: sqlite3.Connection, hours_in: tuple[int, int] | None,
                    edges: list[tuple[float, float]]) -> dict[int, int]:  # fmt: skip
    """How many calls of the period had their first response in each 10 ms slot."""
    queries = [] if hours_in is None else [(
        "SELECT ms10, sum(n) FROM analytics_response_hours WHERE hk_hour >= ? AND hk_hour < ? "
        "GROUP BY ms10", hours_in)]  # fmt: skip
    queries += [(
        f"SELECT {_ms10(db)} AS s, count(*) FROM analytics_calls "
        "WHERE started_at >= ? AND started_at < ? AND first_response_ms IS NOT NULL GROUP BY s",
        span) for span in edges]  # fmt: skip
    slots: dict[int, int] = {}
    for sql, params in queries:
        for slot, n in db.execute(sql, params):
            slots[slot] = slots.get(slot, 0) + n
    return slots


def _first_response(db: sqlite3.Connection, t0: float, t1: float, slots: dict[int, int],
                    p: float) -> float | None:  # fmt: skip
    """Nearest-rank percentile `p` of the first response times of calls started in [t0, t1),
    exact: the 10 ms slot holding the rank comes from `slots`, then only that slot's values are
    read (fetching every call's value would take most of the time budget)."""
    total = sum(slots.values())
    if not total:
        return None
    rank = max(1, math.ceil(p / 100 * total))
    below = 0
    for slot in sorted(slots):
        if below + slots[slot] >= rank:
            break
        below += slots[slot]
    values = sorted(v for (v,) in db.execute(  # the analytics_calls_ms10 index: a short range
        f"SELECT first_response_ms FROM analytics_calls WHERE "
        f"{_ms10(db)} = ? AND started_at >= ? AND started_at < ?",
        (slot, t0, t1)))  # fmt: skip
    if rank - below > len(values):  # the hourly counts disagree with the calls: cannot happen
        log.warning("analytics: response counts disagree with calls; reading every call")
        every = sorted(v for (v,) in db.execute(
            "SELECT first_response_ms FROM analytics_calls WHERE started_at >= ? "
            "AND started_at < ? AND first_response_ms IS NOT NULL", (t0, t1)))  # fmt: skip
        return percentile(every, p)
    return values[rank - below - 1]


def unresolved_turns(db: sqlite3.Connection, start: datetime, end: datetime, category: str,
                     bucket_start: datetime | None = None, bucket: str = "hour",
                     limit: int = 200) -> list[dict[str, Any]]:  # fmt: skip
    """Unresolved turns of `category` in [start, end) (and in the bucket starting at
    `bucket_start`, if given), oldest first, with what the caller said."""
    bucket = parse_bucket(bucket)
    check_period(start, end)
    t0, t1 = start.timestamp(), end.timestamp()
    if bucket_start is not None:
        b0 = bucket_start.timestamp()
        t0, t1 = max(t0, b0), min(t1, b0 + BUCKET_HOURS[bucket] * HOUR_S)
    rows = db.execute(
        "SELECT t.call_id, t.ts, json_extract(e.data, '$.text'), t.category FROM analytics_turns t "
        "LEFT JOIN events e ON e.call_id = t.call_id AND e.seq = t.seq AND e.type = 'transcript' "
        "WHERE t.category = ? AND t.resolved = 0 AND t.ts >= ? AND t.ts < ? "
        "ORDER BY t.ts LIMIT ?",
        (category, t0, t1, limit),
    )
    return [{"call_id": c, "ts": iso_hk(ts), "text": text, "category": cat}
            for c, ts, text, cat in rows]  # fmt: skip


def default_period(now: datetime | None = None) -> tuple[datetime, datetime]:
    end = now or datetime.now(UTC)
    return end - timedelta(days=DEFAULT_DAYS), end


__all__ = [
    "KPI_DEFINITIONS",
    "SCHEMA",
    "UNCATEGORISED",
    "BadParameter",
    "create",
    "forget",
    "heatmap",
    "kpis",
    "open_call",
    "parse_bucket",
    "parse_time",
    "rebuild",
    "spreadsheet_safe",
    "record",
    "unresolved_turns",
]
