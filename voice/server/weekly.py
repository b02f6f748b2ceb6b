"""The weekly report for knowledge-base owners: what the AI failed on, and the service KPIs.

`voice report weekly --db DB --week 2026-W48 --out DIR` writes `report.html` (self-contained: the
week's heatmap of unresolved utterances by category and day, the KPIs against the week before,
and the unresolved questions grouped by meaning within each category, as `voice kb suggest`
groups them (voice.quality.mining), with counts and example calls) and
`unresolved.csv`, whose first columns are the knowledge base's own (`id, category, questions,
keywords, answer, answer_en, priority`) so a KB owner fills in the answers and appends the rows.
"""

from __future__ import annotations

import csv
import html
import io
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from voice.errors import ConfigError
from voice.quality import mining
from voice.quality.mining import QuestionGroup
from voice.server import analytics

WEEK_PATTERN = re.compile(r"^(\d{4})-W(\d{2})$")
MAX_TURNS = mining.MAX_TURNS  # unresolved utterances read per category: a week of a large centre
EXAMPLES = mining.EXAMPLES  # example calls shown per question group
KB_COLUMNS = mining.KB_COLUMNS
# KPI name -> (label, how it is shown, higher is better?)
KPI_ROWS = {
    "calls": ("通話數 Calls", "{:,.0f}", None),
    "utterances": ("轉錄句數 Utterances", "{:,.0f}", None),
    "first_response_ms_p50": ("首次回應 p50 First response", "{:,.0f} ms", False),
    "first_response_ms_p95": ("首次回應 p95 First response", "{:,.0f} ms", False),
    "resolution_rate": ("解決率 AI resolution rate", "{:.1%}", True),
    "handoff_rate": ("轉接率 Handoff rate", "{:.1%}", False),
    "night_response_rate": ("夜間回應率 Night-time response rate", "{:.1%}", True),
    "resolution_depth": ("解決深度 Resolution depth", "{:.2f}", True),
    "sentiment_improvement": ("情緒改善 Sentiment improvement", "{:+.2f}", True),
}


def week_period(week: str) -> tuple[datetime, datetime]:
    """Monday 00:00 to the next Monday 00:00, Hong Kong time, of an ISO week such as 2026-W48."""
    match = WEEK_PATTERN.match(week.strip())
    if not match:
        raise ConfigError(f"--week {week!r}: write the ISO week as YYYY-Www, e.g. 2026-W48")
    try:
        monday = datetime.fromisocalendar(int(match[1]), int(match[2]), 1)
    except ValueError:
        raise ConfigError(f"--week {week!r}: year {match[1]} has no week {match[2]}") from None
    start = monday.replace(tzinfo=analytics.HK)
    return start, start + timedelta(days=7)


@dataclass(frozen=True)
class WeeklyReport:
    """What the report shows, read from the store."""

    week: str
    start: datetime
    end: datetime
    heatmap: dict[str, Any]
    kpis: dict[str, Any]
    previous: dict[str, Any]
    groups: list[QuestionGroup]


def build(db, week: str) -> WeeklyReport:
    """The report of ISO `week` from a store's read connection."""
    start, end = week_period(week)
    heat = analytics.heatmap(db, start, end, "day")
    turns = mining.unresolved_in(db, start, end, heat["categories"], limit=MAX_TURNS)
    # the same grouping by meaning as `voice kb suggest`, but within each category: this report
    # is read by category (its heatmap's rows)
    groups = mining.group_questions(turns, within_category=True)
    return WeeklyReport(
        week=week.strip(),
        start=start,
        end=end,
        heatmap=heat,
        kpis=analytics.kpis(db, start, end),
        previous=analytics.kpis(db, start - timedelta(days=7), start),
        groups=groups,
    )


def write(report: WeeklyReport, out: Path) -> tuple[Path, Path]:
    """report.html and unresolved.csv in `out` (written atomically, owner-only: they quote
    callers)."""
    from voice.files import write_atomic

    out = Path(out)
    page = write_atomic(out / "report.html", render_html(report), private=True)
    table = write_atomic(out / "unresolved.csv", render_csv(report), private=True)
    return page, table


def render_csv(report: WeeklyReport) -> str:
    """One row per question group, KB columns first (answer left for the KB owner), then how
    often it was asked and example calls. A BOM so spreadsheet programs read the Chinese."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*KB_COLUMNS, "count", "example_calls"])
    for group in report.groups:
        questions = "|".join(group.phrasings)
        category = "" if group.category == analytics.UNCATEGORISED else group.category
        row = ["", category, questions, "", "", "", "normal", group.count,
               " ".join(group.calls[:EXAMPLES])]  # fmt: skip
        writer.writerow([analytics.spreadsheet_safe(str(v)) for v in row])
    return "\ufeff" + buffer.getvalue()


def render_html(report: WeeklyReport) -> str:
    e = html.escape
    days = [b[:10] for b in report.heatmap["buckets"]]
    peak = max((n for row in report.heatmap["unresolved"] for n in row), default=0) or 1
    heat_rows = []
    for category, unresolved, total in zip(report.heatmap["categories"],
                                           report.heatmap["unresolved"],
                                           report.heatmap["total"], strict=True):  # fmt: skip
        cells = "".join(
            f'<td style="background:rgba(204,34,0,{0.08 + 0.8 * n / peak:.2f})" '
            f'title="{n} / {t}">{n}<small> / {t}</small></td>'
            for n, t in zip(unresolved, total, strict=True)
        )
        heat_rows.append(f"<tr><th>{e(category)}</th>{cells}<td>{sum(unresolved)}</td></tr>")
    kpi_rows = "".join(_kpi_row(name, report.kpis, report.previous) for name in KPI_ROWS)
    group_rows = "".join(
        f"<tr><td>{g.count}</td><td>{e(g.category)}</td><td>{e(g.text)}"
        + (
            f"<br><small>{e(' / '.join(g.phrasings[1:4]))}</small>" if len(g.phrasings) > 1 else ""
        )  # fmt: skip
        + f"</td><td>{e(' '.join(g.calls[:EXAMPLES]))}</td></tr>"
        for g in report.groups[:50]
    )
    period = f"{report.start:%Y-%m-%d} – {(report.end - timedelta(days=1)):%Y-%m-%d} (HKT)"
    no_data = "<p>本週沒有未解決的句子。No unresolved utterances this week.</p>"
    return f"""<!DOCTYPE html>
<html lang="zh-Hant-HK"><head><meta charset="utf-8">
<title>每週報告 Weekly report {e(report.week)}</title>
<style>
body {{ font-family: "Noto Sans CJK TC", "Noto Sans TC", sans-serif; margin: 2em; color: #1f2933; }}
h1 {{ color: #0b5cad; }} table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #d9e2ec; padding: 4px 8px; text-align: left; vertical-align: top; }}
thead th {{ background: #f0f4f8; }} small {{ color: #52606d; }}
.better {{ color: #18794e; }} .worse {{ color: #c62828; }}
</style></head><body>
<h1>每週報告 Weekly report {e(report.week)}</h1>
<p>{e(period)}</p>
<h2>服務指標 KPIs (this week vs the week before)</h2>
<table><thead><tr><th>KPI</th><th>本週 This week</th><th>上週 Last week</th><th>變化 Change</th>
</tr></thead><tbody>{kpi_rows}</tbody></table>
<h2>未解決熱圖 Unresolved utterances by category and day</h2>
{_heat_table(days, heat_rows) if heat_rows else no_data}
<h2>未解決問題 Top unresolved questions</h2>
<p>Grouped by meaning within each category; <code>unresolved.csv</code> has every group as a knowledge-base row
waiting for its answer.</p>
{_group_table(group_rows) if group_rows else no_data}
</body></html>
"""


def _heat_table(days: list[str], rows: list[str]) -> str:
    head = "".join(f"<th>{d[5:]}</th>" for d in days)
    return (f"<table><thead><tr><th>類別 Category</th>{head}<th>合計 Total</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>")  # fmt: skip


def _group_table(rows: str) -> str:
    return ("<table><thead><tr><th>次數 Count</th><th>類別 Category</th><th>問題 Question</th>"
            f"<th>例子 Example calls</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip


def _kpi_row(name: str, now: dict[str, Any], before: dict[str, Any]) -> str:
    label, shown, higher_better = KPI_ROWS[name]

    def fmt(value: Any) -> str:
        return "—" if value is None else shown.format(value)

    change, css = "—", ""
    a, b = now.get(name), before.get(name)
    if a is not None and b is not None:
        delta = a - b
        change = shown.format(delta) if "%" not in shown else f"{delta * 100:+.1f} pt"
        if not change.startswith(("+", "-")):
            change = "+" + change if delta >= 0 else change
        if higher_better is not None and delta:
            css = ' class="better"' if (delta > 0) == higher_better else ' class="worse"'
    return (f"<tr><td>{html.escape(label)}</td><td>{fmt(a)}</td><td>{fmt(b)}</td>"
            f"<td{css}>{change}</td></tr>")  # fmt: skip


__all__ = ["QuestionGroup", "WeeklyReport", "build", "week_period", "write"]
