"""Timing of the analytics queries over a store of generated turns (target: under 200 ms each)."""

from __future__ import annotations

import logging
import random
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from voice.server import analytics
from voice.server.store import Store

log = logging.getLogger(__name__)

TURNS_PER_CALL = 20  # a call's caller utterances; the KPIs' time grows with calls in the period
DAY_S = 86_400.0
CATEGORIES = [analytics.UNCATEGORISED, *(f"類別{i:02d}" for i in range(29))]


def fill(store: Store, rows: int, days: float = 30.0, seed: int = 0,
         turns_per_call: int = TURNS_PER_CALL) -> None:  # fmt: skip
    """`rows` turns in calls of `turns_per_call` over the `days` before now, written straight into
    the rollup tables (and `calls`) in one transaction, as record() would have left them."""
    rng = random.Random(seed)
    now = time.time()
    calls, turns, call_rows = [], [], []
    hourly: Counter[tuple[int, str]] = Counter()
    unresolved: Counter[tuple[int, str]] = Counter()
    for c in range(max(1, rows // turns_per_call)):
        call_id = f"bench-{c}"
        started = now - rng.random() * days * DAY_S
        calls.append((call_id, "stream", None, None, started, started + 600, "completed", "{}"))
        resolved_n = night_n = night_resolved = 0
        first = None
        for t in range(turns_per_call):
            ts = started + 10 + t * 25
            hour = analytics.hk_hour(ts)
            night = int(analytics.is_night(ts))
            category = rng.choice(CATEGORIES)
            resolved = int(category != analytics.UNCATEGORISED and rng.random() < 0.7)
            response = 300 + rng.random() * 900
            first = response if first is None else first
            turns.append((call_id, 2 * t + 1, ts, hour, night, t * 25.0, response - 50, category,
                          resolved, response, rng.uniform(-1, 1)))  # fmt: skip
            hourly[hour, category] += 1
            unresolved[hour, category] += 1 - resolved
            resolved_n += resolved
            night_n += night
            night_resolved += night * resolved
        call_rows.append((started, call_id, turns_per_call, turns_per_call, resolved_n, night_n,
                          night_resolved, int(rng.random() < 0.2), resolved_n // 2, first,
                          rng.uniform(-0.5, 0.5)))  # fmt: skip
    db = store._writes
    db.execute("BEGIN")
    db.executemany("INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)", calls)
    db.executemany("INSERT INTO analytics_turns VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", turns)
    db.executemany(
        "INSERT INTO analytics_hourly VALUES (?, ?, ?, ?)",
        [(h, c, n, unresolved[h, c]) for (h, c), n in hourly.items()],
    )
    db.executemany(
        "INSERT INTO analytics_calls VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", call_rows
    )
    db.execute("COMMIT")
    db.execute("ANALYZE")  # what a long-running store would have gathered (PRAGMA optimize)


def _median_ms(query, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        query()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def bench_analytics(rows: int = 1_000_000, repeats: int = 5,
                    turns_per_call: int = TURNS_PER_CALL) -> dict[str, float]:  # fmt: skip
    """Median ms of the console's queries over `rows` stored turns spread over 30 days: the hour
    heatmap of 7 days, the day heatmap of 30 days, the KPIs of 30 days, a drill-down of 7 days.
    Also the seconds it took to fill the store."""
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "bench.sqlite3")
        t0 = time.perf_counter()
        fill(store, rows, turns_per_call=turns_per_call)
        filled_s = time.perf_counter() - t0
        end = datetime.now(UTC)
        week, month = end - timedelta(days=7), end - timedelta(days=30)
        db = store.db
        result = {
            "rows": float(rows),
            "calls": float(rows // turns_per_call),
            "fill_s": round(filled_s, 1),
            "heatmap_hour_7d_ms": _median_ms(lambda: analytics.heatmap(db, week, end), repeats),
            "heatmap_day_30d_ms": _median_ms(
                lambda: analytics.heatmap(db, month, end, "day"), repeats
            ),
            "kpis_30d_ms": _median_ms(lambda: analytics.kpis(db, month, end), repeats),
            "unresolved_7d_ms": _median_ms(
                lambda: analytics.unresolved_turns(db, week, end, CATEGORIES[1]), repeats
            ),
        }
        store.close()
    return {k: round(v, 1) for k, v in result.items()}


if __name__ == "__main__":
    print(bench_analytics())
