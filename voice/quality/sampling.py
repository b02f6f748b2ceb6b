"""Audit sampling: a reproducible, stratified draw of finished calls, recorded as a job in the store.

`voice audit sample` implements the procedure "sample 5% of the conversations every quarter for
audit". The draw is a pure function of the stored calls and the parameters, and is recorded so an
auditor can see who drew it, when, how, and which calls came out.

- Population: finished calls (status other than 'live') whose start falls on a Hong Kong day from
  `--from` to `--to`, both included (YYYY-MM-DD; [from 00:00, to + 1 day 00:00) HKT).
- Strata: `--stratify` is a comma list of `agent` and `category` (default none: one stratum
  "all"). agent = calls.agent, "unassigned" when empty; category = the call's main knowledge-base
  category: the most frequent analytics_turns.category among its turns, ties going to the one that
  occurred first, UNCATEGORISED ("未分類") when no turn was categorised. A stratum is named by its
  keys in the fixed order agent, category (whatever the flag's order), e.g.
  "agent=agent-1|category=帳單".
- Size per stratum: k = max(min_per_stratum, ceil(percent/100 * size)), capped at the stratum's
  size. Rounding is up, computed exactly from the percent as written (Fraction, so 7% of 100 is 7,
  not 8 from 0.07 * 100 = 7.000000000000001): every non-empty stratum gets at least one call, so
  with many small strata the overall share is above `percent` (by less than one call per stratum).
- Selection: each call is ranked by sha256(f"{seed}:{call_id}") (hex, ties impossible in practice
  and broken by call id) and a stratum's k lowest ranks are taken. A call's rank depends on the
  seed and its own id only, so the draw depends neither on row order nor on the other strata, and
  the same store, period and parameters always give the same sample. `--seed` is required: the
  auditor picks it (a fresh one each quarter) and it is recorded with the job.
- Order: `sampled` lists call ids sorted by id (the sample is a set; ranks are recomputable).
- Record: tables audit_jobs (id "job_" + 12 random hex digits, created_at unix time, created_by
  the OS user or `--by`, params JSON {from, to, percent, stratify, min_per_stratum, seed}, method,
  population, population_sha256 = sha256 of the sorted population ids one per line, so a later
  redraw can prove the population was the same, strata JSON) and audit_samples (job_id, call_id,
  stratum), in the store's SQLite file (owner-only, opened through Store) and written in one
  transaction. The population is read before that transaction, on the read connection: a quarter's
  scan must not hold the write lock the live server's event writes wait on, and finished calls of
  a past period do not change. Samples are kept when `Store.expire` deletes their calls: the
  record of the draw outlives the calls (it holds ids only, no caller data).
- An empty population is refused (EmptyPopulation; the CLI exits 1) and nothing is recorded: an
  empty period is almost always a mistyped date, and a job with no calls proves nothing.
- strata JSON: {stratum name: {"population": int, "sampled": int}}, names sorted.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import math
import secrets
import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.errors import ConfigError
from voice.server import analytics

if TYPE_CHECKING:  # the store creates this module's tables, so it is imported lazily here
    from voice.server.store import Store

STRATIFY_KEYS = ("agent", "category")  # also the order of the keys in a stratum's name
ALL = "all"  # the one stratum's name when there is no --stratify
UNASSIGNED = "unassigned"  # agent of a call no agent took
METHOD = "sha256-rank/1"  # recorded per job: names this module's way of drawing, should it change

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS audit_jobs (id TEXT PRIMARY KEY, created_at REAL NOT NULL, "
    "created_by TEXT NOT NULL, params TEXT NOT NULL, method TEXT NOT NULL, "
    "population INTEGER NOT NULL, population_sha256 TEXT NOT NULL, strata TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS audit_samples (job_id TEXT NOT NULL, call_id TEXT NOT NULL, "
    "stratum TEXT NOT NULL, PRIMARY KEY (job_id, call_id))",
    # Which audits a call was drawn in: what a reviewer looking at one call wants to know.
    "CREATE INDEX IF NOT EXISTS audit_samples_call ON audit_samples (call_id)",
)


class EmptyPopulation(Exception):
    """No finished call started in the period: nothing to draw, nothing recorded."""


@dataclass(frozen=True)
class SampleOptions:
    """What `voice audit sample` asks for; the defaults are the flags' (voice/quality/cli.py)."""

    date_from: str | None = None  # YYYY-MM-DD, Hong Kong time, included
    date_to: str | None = None  # YYYY-MM-DD, Hong Kong time, included
    percent: float = 5.0
    stratify: str | None = None  # comma list of STRATIFY_KEYS; None: one stratum
    min_per_stratum: int = 1
    seed: int | None = None  # required
    by: str | None = None  # who draws; None: the OS user

    def validate(self) -> SampleParams:
        """The checked parameters; ConfigError naming the flag otherwise."""
        start = parse_day(self.date_from, "--from")
        end = parse_day(self.date_to, "--to")
        if start > end:
            raise ConfigError(f"--from {start} is after --to {end}")
        if not 0 < self.percent <= 100:  # also refuses NaN
            raise ConfigError(f"--percent {self.percent:g}: must be above 0 and at most 100")
        if self.min_per_stratum < 0:
            raise ConfigError(f"--min-per-stratum {self.min_per_stratum}: must be 0 or more")
        if self.seed is None:
            raise ConfigError("--seed is required: the draw is reproducible from it (pick a new "
                              "one each audit; it is recorded with the job)")  # fmt: skip
        return SampleParams(start, end, float(self.percent), parse_stratify(self.stratify),
                            self.min_per_stratum, self.seed)  # fmt: skip


@dataclass(frozen=True)
class SampleParams:
    """Validated parameters of a draw: everything the sample depends on besides the store."""

    start: date
    end: date
    percent: float
    stratify: tuple[str, ...]
    min_per_stratum: int
    seed: int

    def to_json(self) -> dict[str, Any]:
        return {"from": self.start.isoformat(), "to": self.end.isoformat(),
                "percent": self.percent, "stratify": list(self.stratify),
                "min_per_stratum": self.min_per_stratum, "seed": self.seed}  # fmt: skip

    def period(self) -> tuple[float, float]:
        """Unix times of `start` 00:00 and the day after `end` 00:00, Hong Kong time."""
        return analytics.day_period(self.start, self.end)


@dataclass(frozen=True)
class Job:
    """A recorded draw."""

    id: str
    created_at: float
    created_by: str
    params: dict[str, Any]
    method: str
    population: int
    population_sha256: str
    strata: dict[str, dict[str, int]]
    samples: dict[str, str]  # call id -> stratum, sorted by call id

    @property
    def sampled(self) -> list[str]:
        return list(self.samples)

    def summary(self) -> dict[str, Any]:
        """What `voice audit sample --json` prints."""
        return {"job_id": self.id, "population": self.population, "sampled": self.sampled,
                "strata": self.strata}  # fmt: skip


# --- parameters -------------------------------------------------------------------------------


def parse_day(value: str | None, flag: str) -> date:
    if not value:
        raise ConfigError(f"{flag} is required (YYYY-MM-DD, Hong Kong time)")
    return analytics.parse_day(value, flag)


def parse_stratify(value: str | None) -> tuple[str, ...]:
    """The stratify keys in STRATIFY_KEYS order (so the flag's order does not rename strata)."""
    keys = [k.strip() for k in (value or "").split(",") if k.strip()]
    unknown = [k for k in keys if k not in STRATIFY_KEYS]
    if unknown:
        raise ConfigError(f"--stratify {value!r}: unknown key {unknown[0]!r} "
                          f"(choose from {', '.join(STRATIFY_KEYS)})")  # fmt: skip
    return tuple(k for k in STRATIFY_KEYS if k in keys)


def who(by: str | None) -> str:
    if by and by.strip():
        return by.strip()
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name in the environment or the password database
        raise ConfigError("--by: cannot tell who you are from the OS; pass --by NAME") from None


# --- the draw ---------------------------------------------------------------------------------


def main_category(categories: Iterable[str]) -> str:
    """The most frequent category, ties going to the one seen first; UNCATEGORISED if none."""
    counts: dict[str, int] = {}
    for category in categories:  # dicts keep first-seen order, and max keeps the first maximum
        counts[category] = counts.get(category, 0) + 1
    return max(counts, key=counts.__getitem__, default=analytics.UNCATEGORISED)


def stratum_name(stratify: tuple[str, ...], values: dict[str, str]) -> str:
    return "|".join(f"{key}={values[key]}" for key in stratify) or ALL


def population(db: sqlite3.Connection, params: SampleParams) -> dict[str, list[str]]:
    """Stratum name -> ids of the finished calls started in the period, sorted."""
    t0, t1 = params.period()
    calls = db.execute(
        "SELECT id, agent FROM calls WHERE started_at >= ? AND started_at < ? "
        "AND status != 'live' ORDER BY id",
        (t0, t1),
    ).fetchall()
    turns: dict[str, list[str]] = {}
    if "category" in params.stratify:
        rows = db.execute(
            "SELECT t.call_id, t.category FROM analytics_turns t JOIN calls c ON c.id = t.call_id "
            "WHERE c.started_at >= ? AND c.started_at < ? AND c.status != 'live' "
            "AND t.category IS NOT NULL ORDER BY t.call_id, t.seq",
            (t0, t1),
        )
        for call_id, category in rows:
            turns.setdefault(call_id, []).append(category)
    strata: dict[str, list[str]] = {}
    for call_id, agent in calls:
        values = {"agent": agent or UNASSIGNED, "category": main_category(turns.get(call_id, ()))}
        strata.setdefault(stratum_name(params.stratify, values), []).append(call_id)
    return strata


def rank(seed: int, call_id: str) -> str:
    return hashlib.sha256(f"{seed}:{call_id}".encode()).hexdigest()


def quota(size: int, percent: float, minimum: int) -> int:
    """Calls to draw from a stratum of `size`: percent of it rounded up, at least `minimum`, at
    most all of it."""
    share = math.ceil(Fraction(str(percent)) * size / 100)
    return min(size, max(minimum, share))


def draw(strata: dict[str, list[str]], params: SampleParams) -> dict[str, list[str]]:
    """Stratum name -> its sampled call ids, sorted by id."""
    sampled = {}
    for name, calls in strata.items():
        k = quota(len(calls), params.percent, params.min_per_stratum)
        ranked = sorted(calls, key=lambda call_id: (rank(params.seed, call_id), call_id))
        sampled[name] = sorted(ranked[:k])
    return sampled


def population_digest(strata: dict[str, list[str]]) -> str:
    ids = sorted(call_id for calls in strata.values() for call_id in calls)
    return hashlib.sha256("\n".join(ids).encode()).hexdigest()


# --- the store --------------------------------------------------------------------------------


def open_store(path: str | Path) -> Store:
    """The call store at `path` (which must exist: a new one has nothing to audit) with the audit
    tables."""
    from voice.server.store import open_existing

    return open_existing(path)  # which creates the audit tables


def create(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript would commit the transaction it runs in.
    for statement in SCHEMA:
        db.execute(statement)


def sample(store: Store, options: SampleOptions, now: float | None = None) -> Job:
    """Draw and record a sample; raises ConfigError for bad options, EmptyPopulation."""
    params = options.validate()
    by = who(options.by)
    strata = population(store.db, params)
    total = sum(map(len, strata.values()))
    if not total:
        raise EmptyPopulation(
            f"no finished calls started from {params.start} to {params.end} (HKT): nothing "
            "sampled, no job recorded"
        )
    sampled = draw(strata, params)
    samples = {call_id: name for name, ids in sampled.items() for call_id in ids}
    job = Job(
        id="job_" + secrets.token_hex(6),
        created_at=time.time() if now is None else now,
        created_by=by,
        params=params.to_json(),
        method=METHOD,
        population=total,
        population_sha256=population_digest(strata),
        strata={
            name: {"population": len(strata[name]), "sampled": len(sampled[name])}
            for name in sorted(strata)
        },  # fmt: skip
        samples=dict(sorted(samples.items())),
    )
    store.transact(_record, job)
    return job


def _record(db: sqlite3.Connection, job: Job) -> None:
    db.execute(
        "INSERT INTO audit_jobs (id, created_at, created_by, params, method, population, "
        "population_sha256, strata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (job.id, job.created_at, job.created_by, _json(job.params), job.method, job.population,
         job.population_sha256, _json(job.strata)),
    )  # fmt: skip
    db.executemany(
        "INSERT INTO audit_samples (job_id, call_id, stratum) VALUES (?, ?, ?)",
        [(job.id, call_id, stratum) for call_id, stratum in job.samples.items()],
    )


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


JOB_COLUMNS = ("id, created_at, created_by, params, method, population, population_sha256, "
               "strata")  # fmt: skip


def _job(db: sqlite3.Connection, row: tuple) -> Job:
    job_id, created_at, created_by, params, method, total, digest, strata = row
    samples = db.execute(
        "SELECT call_id, stratum FROM audit_samples WHERE job_id=? ORDER BY call_id", (job_id,)
    ).fetchall()
    return Job(job_id, created_at, created_by, json.loads(params), method, total, digest,
               json.loads(strata), dict(samples))  # fmt: skip


def jobs(db: sqlite3.Connection) -> list[Job]:
    """Every recorded job, newest first."""
    rows = db.execute(f"SELECT {JOB_COLUMNS} FROM audit_jobs ORDER BY created_at DESC, id")
    return [_job(db, row) for row in rows.fetchall()]


def job(db: sqlite3.Connection, job_id: str) -> Job | None:
    row = db.execute(f"SELECT {JOB_COLUMNS} FROM audit_jobs WHERE id=?", (job_id,)).fetchone()
    return None if row is None else _job(db, row)


def sampled_calls(db: sqlite3.Connection, job: Job) -> list[dict[str, Any]]:
    """The job's calls as stored now: id, stratum, agent, start (HKT), status; a call deleted
    since (retention) has None for those it no longer has."""
    out = []
    for call_id, stratum in job.samples.items():
        row = db.execute(
            "SELECT agent, started_at, status FROM calls WHERE id=?", (call_id,)
        ).fetchone()
        agent, started, status = row if row else (None, None, "expired")
        out.append({"call_id": call_id, "stratum": stratum, "agent": agent,
                    "started_at": None if started is None else analytics.iso_hk(started),
                    "status": status})  # fmt: skip
    return out


def redraw(db: sqlite3.Connection, job: Job) -> dict[str, Any]:
    """Draw `job` again from its recorded parameters against the store as it is now: whether the
    population (by digest) and the sampled ids are the same. The proof that the sample is the
    one the parameters give; calls deleted since (retention) make the population differ."""
    p = job.params
    options = SampleOptions(p["from"], p["to"], p["percent"], ",".join(p["stratify"]),
                            p["min_per_stratum"], p["seed"])  # fmt: skip
    params = options.validate()
    strata = population(db, params)
    sampled = sorted(call_id for ids in draw(strata, params).values() for call_id in ids)
    return {"method": METHOD, "same_method": job.method == METHOD,
            "same_population": population_digest(strata) == job.population_sha256,
            "same_sample": sampled == job.sampled}  # fmt: skip


__all__ = ["ALL", "METHOD", "STRATIFY_KEYS", "EmptyPopulation", "Job", "SampleOptions",
           "SampleParams", "draw", "job", "jobs", "main_category", "open_store", "population",
           "quota", "rank", "redraw", "sample", "sampled_calls"]  # fmt: skip
