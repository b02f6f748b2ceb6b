"""Supervisor analytics over HTTP: the unresolved-question heatmap (JSON and CSV), the KPIs and the
drill-down list of a heatmap cell; the queries are in voice/server/analytics.py.

Every endpoint needs the `analytics` permission (supervisor, admin); the drill-down, which quotes
callers, also needs `all_calls` (supervisor). Each reads the store's read
connection off the event loop and is audited as `analytics.read`. Periods are `from`/`to` (ISO
8601; without an offset, Hong Kong time), half-open, by default the 7 days before now. A bad
parameter is answered 400 with {"error": "<parameter>: <what is wrong>"}.
"""

from __future__ import annotations

import asyncio
import csv
import io
from collections.abc import Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from voice.server import analytics
from voice.server.analytics import BadParameter
from voice.server.audit import audit
from voice.server.auth import Principal
from voice.server.routes.context import context

MAX_LIMIT = 1000  # drill-down rows per request


def _period(request: Request) -> tuple[datetime, datetime]:
    """`from` and `to` from the query, by default the 7 days before now."""
    default_start, default_end = analytics.default_period()
    end = analytics.parse_time(request.query_params.get("to"), "to", default_end)
    start = analytics.parse_time(
        request.query_params.get("from"), "from", end - (default_end - default_start)
    )
    return start, end


def _limit(request: Request) -> int:
    value = request.query_params.get("limit") or "200"
    if not value.isdigit() or not 1 <= int(value) <= MAX_LIMIT:
        raise BadParameter("limit", f"must be a whole number from 1 to {MAX_LIMIT}, not {value!r}")
    return int(value)


async def _answer(request: Request, query: Callable[[Request, Any], Any],
                  quotes_calls: bool = False) -> Any:  # fmt: skip
    """Check the permission, run `query(request, db)` in a worker thread (SQLite would block
    the event loop) and audit the read. Returns the query's result, or the Response to send.
    A query that `quotes_calls` (callers' words) also needs `all_calls`: admins see aggregates
    but no call content."""
    ctx = context(request)
    who = ctx.require(request, "analytics")
    if isinstance(who, Response):
        return who
    if quotes_calls and not who.can("all_calls"):
        audit("authorize", "failure", who, reason="needs all_calls")
        return ctx.refuse(True)
    try:
        result = await asyncio.to_thread(query, request, ctx.hub.store.db)
    except BadParameter as exc:
        _audit(who, request, f"bad_parameter {exc.name}")
        return JSONResponse({"error": str(exc)}, 400)
    _audit(who, request)
    return result


def _audit(who: Principal, request: Request, reason: str | None = None) -> None:
    """Analytics aggregate call content (drill-down rows quote callers), so reads are audited."""
    audit("analytics.read", "success" if reason is None else "failure", who, reason=reason)


def _heatmap(request: Request, db) -> dict[str, Any]:
    start, end = _period(request)
    bucket = analytics.parse_bucket(request.query_params.get("bucket"))
    return analytics.heatmap(db, start, end, bucket)


def _kpis(request: Request, db) -> dict[str, Any]:
    start, end = _period(request)
    return {
        "from": start.isoformat(),
        "to": end.isoformat(),
        **analytics.kpis(db, start, end),
        "definitions": analytics.KPI_DEFINITIONS,
    }


def _unresolved(request: Request, db) -> dict[str, Any]:
    start, end = _period(request)
    category = request.query_params.get("category")
    if not category:
        raise BadParameter("category", "is required (a row of the heatmap)")
    bucket = analytics.parse_bucket(request.query_params.get("bucket"))
    bucket_start = request.query_params.get("bucket_start")
    at = analytics.parse_time(bucket_start, "bucket_start") if bucket_start else None
    turns = analytics.unresolved_turns(db, start, end, category, at, bucket, _limit(request))
    return {"turns": turns}


async def heatmap(request: Request) -> Response:
    result = await _answer(request, _heatmap)
    return result if isinstance(result, Response) else JSONResponse(result)


async def kpis(request: Request) -> Response:
    result = await _answer(request, _kpis)
    return result if isinstance(result, Response) else JSONResponse(result)


async def unresolved(request: Request) -> Response:
    result = await _answer(request, _unresolved, quotes_calls=True)
    return result if isinstance(result, Response) else JSONResponse(result)


async def heatmap_csv(request: Request) -> Response:
    result = await _answer(request, _heatmap)
    if isinstance(result, Response):
        return result
    return Response(
        heatmap_to_csv(result),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="unresolved-heatmap.csv"'},
    )


def heatmap_to_csv(grid: dict[str, Any]) -> str:
    """One row per category and bucket: category, bucket, unresolved, total; with a UTF-8 byte
    order mark so Excel reads the Chinese category names as UTF-8."""
    out = io.StringIO()
    out.write("\ufeff")
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(["category", "bucket", "unresolved", "total"])
    for row, category in enumerate(grid["categories"]):
        cell = analytics.spreadsheet_safe(category)
        for col, bucket in enumerate(grid["buckets"]):
            writer.writerow([cell, bucket, grid["unresolved"][row][col], grid["total"][row][col]])
    return out.getvalue()


__all__ = ["heatmap", "heatmap_csv", "kpis", "unresolved"]
