"""`voice audit`: the quality auditors' commands (sample calls; list and show the draws)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import unicodedata
from collections.abc import Callable
from typing import Any

from voice.cliopts import add_option
from voice.errors import ConfigError

Actions = argparse._SubParsersAction


def register(sub: argparse._SubParsersAction) -> None:
    audit = sub.add_parser(
        "audit",
        help="quality audit: reproducible call samples, recorded in the call store",
        description="The quality loop's audit trail. `sample` draws a reproducible stratified "
        "sample of finished calls and records it as a job; `jobs` lists the jobs; `show` prints "
        "one job's parameters and calls, and redraws it to prove the sample.",
    )
    actions = audit.add_subparsers(dest="audit", metavar="ACTION", required=True)
    for add in ACTIONS:
        add(actions)


def add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--db", help="the call store (default: voice serve's, "
                        "$XDG_DATA_HOME/voice/voice_calls.sqlite3)")  # fmt: skip


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def db_path(args: argparse.Namespace) -> str:
    if args.db:
        return args.db
    from voice.server.config import default_db_path

    return default_db_path()


# --- sample -----------------------------------------------------------------------------------


def register_sample(actions: Actions) -> None:
    from voice.quality.sampling import STRATIFY_KEYS, SampleOptions

    p = actions.add_parser(
        "sample",
        help="draw a reproducible stratified sample of finished calls and record it as a job",
        description="Sample PERCENT of the finished calls started from --from to --to (Hong Kong "
        "days, both included), per stratum, at least --min-per-stratum each. Each call is ranked "
        "by sha256(SEED:CALL_ID) and each stratum's lowest ranks are taken, so the same store and "
        "flags always give the same calls. The job (who, when, flags, calls) is recorded in the "
        "store: `voice audit show JOB_ID` prints it again.",
    )
    defaults = SampleOptions()
    add_db(p)
    add_option(p, "--from", defaults, "date_from", dest="date_from", metavar="YYYY-MM-DD",
               required=True, help="first day of the period, Hong Kong time")  # fmt: skip
    add_option(p, "--to", defaults, "date_to", dest="date_to", metavar="YYYY-MM-DD",
               required=True, help="last day of the period (included), Hong Kong time")  # fmt: skip
    add_option(p, "--percent", defaults, type=float,
               help="share of each stratum drawn, rounded up, 0 < PERCENT <= 100")  # fmt: skip
    add_option(p, "--stratify", defaults, metavar="KEYS",
               help=f"comma list of {', '.join(STRATIFY_KEYS)}: sample each combination "
               "separately (category: the call's most frequent KB category; default: all calls "
               "as one stratum)")  # fmt: skip
    add_option(
        p,
        "--min-per-stratum",
        defaults,
        type=int,
        metavar="N",
        help="calls drawn from each stratum at least (all of it when smaller)",
    )
    add_option(
        p,
        "--seed",
        defaults,
        type=int,
        metavar="N",
        required=True,
        help="the draw's seed: pick a new one each audit; it is recorded with the job",
    )
    add_option(
        p,
        "--by",
        defaults,
        metavar="NAME",
        help="who draws, recorded with the job (default: your OS user name)",
    )
    add_json(p)
    p.set_defaults(func=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    from voice.quality import sampling
    from voice.server.db import masked

    options = sampling.SampleOptions(
        date_from=args.date_from, date_to=args.date_to, percent=args.percent,
        stratify=args.stratify, min_per_stratum=args.min_per_stratum, seed=args.seed, by=args.by,
    )  # fmt: skip
    options.validate()  # bad flags are refused before the store is opened
    store = sampling.open_store(db_path(args))
    try:
        job = sampling.sample(store, options)
    except sampling.EmptyPopulation as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    if args.json:
        _print_json(job.summary())
        return 0
    p = job.params
    print(f"{job.id}: {len(job.sampled)} of {job.population} calls sampled "
          f"({p['percent']:g}% per stratum, at least {p['min_per_stratum']}; seed {p['seed']}), "
          f"calls started {p['from']} to {p['to']} HKT")  # fmt: skip
    _print_strata(job.strata)
    print(f"show it again: voice audit show {job.id} --db {shlex.quote(masked(db_path(args)))}")
    return 0


# --- jobs -------------------------------------------------------------------------------------


def register_jobs(actions: Actions) -> None:
    p = actions.add_parser("jobs", help="list the recorded sampling jobs, newest first")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run_jobs)


def run_jobs(args: argparse.Namespace) -> int:
    from voice.quality import sampling
    from voice.server.analytics import iso_hk

    store = sampling.open_store(db_path(args))
    try:
        jobs = sampling.jobs(store.db)
    finally:
        store.close()
    if args.json:
        _print_json([_job_json(job) for job in jobs])
        return 0
    if not jobs:
        print("no sampling jobs recorded (voice audit sample draws one)")
    for job in jobs:
        p = job.params
        print(f"{job.id}  {iso_hk(int(job.created_at))}  by {job.created_by}  {p['from']}..{p['to']}  "
              f"{p['percent']:g}% by {','.join(p['stratify']) or 'all'}  seed {p['seed']}  "
              f"{len(job.sampled)}/{job.population} calls")  # fmt: skip
    return 0


# --- show -------------------------------------------------------------------------------------


def register_show(actions: Actions) -> None:
    p = actions.add_parser(
        "show",
        help="a sampling job's parameters, strata and calls, and whether a redraw gives them",
        description="Print who drew the job, when, with which flags, its strata and sampled calls; "
        "then draw it again from the recorded flags against the store as it is now, to show the "
        "same population gives the same calls (calls deleted since by retention change the "
        "population).",
    )
    p.add_argument("job_id", metavar="JOB_ID", help="as `voice audit jobs` lists them")
    add_db(p)
    add_json(p)
    p.set_defaults(func=run_show)


def run_show(args: argparse.Namespace) -> int:
    from voice.quality import sampling
    from voice.server.analytics import iso_hk
    from voice.server.db import masked

    path = db_path(args)
    store = sampling.open_store(path)
    try:
        job = sampling.job(store.db, args.job_id)
        if job is None:
            raise ConfigError(f"JOB_ID {args.job_id!r}: no such job in {masked(path)} "
                              "(voice audit jobs lists them)")  # fmt: skip
        calls = sampling.sampled_calls(store.db, job)
        check = sampling.redraw(store.db, job)
    finally:
        store.close()
    if args.json:
        _print_json({**_job_json(job), "calls": calls, "redraw": check})
        return 0
    print(f"job {job.id}")
    print(f"  drawn by {job.created_by} at {iso_hk(int(job.created_at))}")
    print(f"  parameters {json.dumps(job.params, ensure_ascii=False)}")
    print(f"  method {job.method}; population {job.population} calls "
          f"(sha256 {job.population_sha256[:16]}...)")  # fmt: skip
    print(f"  redrawn now: population {_same(check['same_population'])}, "
          f"sample {_same(check['same_sample'])}")  # fmt: skip
    _print_strata(job.strata)
    _print_calls(calls)
    return 0


# --- output -----------------------------------------------------------------------------------


def _job_json(job) -> dict[str, Any]:
    from voice.server.analytics import iso_hk

    return {"job_id": job.id, "created_at": iso_hk(job.created_at),
            "created_by": job.created_by, "params": job.params, "method": job.method,
            "population": job.population, "population_sha256": job.population_sha256,
            "sampled": job.sampled, "strata": job.strata}  # fmt: skip


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def _print_strata(strata: dict[str, dict[str, int]]) -> None:
    width = max(map(_width, ["stratum", *strata]))
    print(f"  {_pad('stratum', width)}  population  sampled")
    for name, counts in strata.items():
        print(f"  {_pad(name, width)}  {counts['population']:>10}  {counts['sampled']:>7}")
    total = sum(c["population"] for c in strata.values())
    print(f"  {_pad('total', width)}  {total:>10}  {sum(c['sampled'] for c in strata.values()):>7}")


def _print_calls(calls: list[dict[str, Any]]) -> None:
    rows = [("call", "stratum", "agent", "started (HKT)", "status")]
    rows += [(c["call_id"], c["stratum"], c["agent"] or "-", c["started_at"] or "-", c["status"])
             for c in calls]  # fmt: skip
    widths = [max(_width(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print("  " + "  ".join(_pad(cell, w) for cell, w in zip(row, widths, strict=False))
              + "  " + row[-1])  # fmt: skip


def _width(text: str) -> int:
    """Columns `text` takes in a terminal: Chinese characters take two (category names)."""
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * (width - _width(text))


def _same(yes: bool) -> str:
    return "same" if yes else "DIFFERENT"


# Each adds one `voice audit` action; a new action (reviews, corrections) is a register_* here.
ACTIONS: tuple[Callable[[Actions], None], ...] = (register_sample, register_jobs, register_show)
