"""Audit sampling (issue 16 item 2): a reproducible stratified draw of finished calls, recorded
as a job in the call store; `voice audit sample|jobs|show` run as a subprocess."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from voice.cli import main
from voice.errors import ConfigError
from voice.quality import sampling
from voice.quality.sampling import EmptyPopulation, SampleOptions
from voice.server.analytics import UNCATEGORISED
from voice.server.store import Store

ROOT = Path(__file__).resolve().parents[1]
AGENTS = ["agent-1", "agent-2", "agent-3", "agent-4", None]  # None: no agent took the call
CATEGORIES = ["帳單", "轉賬", "信用卡", None]  # None: no KB entry came close (未分類)
CALLS = 200
DAY_S = 86_400


def hk(text: str) -> float:
    """Unix time of a Hong Kong wall-clock time 'YYYY-MM-DD HH:MM:SS'."""
    return datetime.fromisoformat(text + "+08:00").timestamp()


def add_call(store: Store, call_id: str, started: float, agent: str | None,
             category: str | None, turns: bool = True, live: bool = False) -> None:  # fmt: skip
    """A call whose main category is `category`: two suggestions in it after one in another
    category (so the most frequent wins, not the first); None: one empty suggestion list, or no
    turn at all when not `turns`."""
    store.open_call(call_id, "stream", agent, "agent-1", {}, now=started)
    if category is None:
        kinds = [[]] if turns else []
    else:
        other = "其他" if category != "其他" else "帳單"
        kinds = [[other], [category], [category]]
    for seq, cats in enumerate(kinds, 1):
        suggestions = [
            {"id": f"kb-{c}", "category": c, "reply": "好的", "score": 0.8} for c in cats
        ]
        store.add_event(call_id, seq, {"type": "suggestion", "call_id": call_id, "start": seq * 5.0,
                                       "end": seq * 5.0 + 2, "resolved": bool(cats),
                                       "suggestions": suggestions},
                        now=started + seq * 5)  # fmt: skip
    if not live:
        store.close_call(call_id, "completed")


def expected_strata() -> dict[str, list[str]]:
    """Stratum (agent, category) -> in-range finished call ids, as seeded."""
    out: dict[str, list[str]] = {}
    for i in range(CALLS):
        agent, category = AGENTS[(i // 4) % 5] or "unassigned", CATEGORIES[i % 4] or UNCATEGORISED
        out.setdefault(f"agent={agent}|category={category}", []).append(f"call-{i:03d}")
    out["agent=agent-1|category=帳單"] += ["edge-first", "edge-last"]
    return out


@pytest.fixture(scope="module")
def seeded(tmp_path_factory) -> Path:
    """200 finished calls over 10 Hong Kong days (2026-10-01..10), 5 agents x 4 categories, the
    period's first and last second, and calls just outside it or still live."""
    path = tmp_path_factory.mktemp("store") / "calls.sqlite3"
    store = Store(path)
    t0 = hk("2026-10-01 00:00:00")
    for i in range(CALLS):
        started = t0 + (i % 10) * DAY_S + (i * 7 % 1440) * 60
        add_call(store, f"call-{i:03d}", started, AGENTS[(i // 4) % 5], CATEGORIES[i % 4],
                 turns=i % 8 != 3)  # fmt: skip
    add_call(store, "edge-first", hk("2026-10-01 00:00:00"), "agent-1", "帳單")
    add_call(store, "edge-last", hk("2026-10-10 23:59:59"), "agent-1", "帳單")
    add_call(store, "out-early", hk("2026-09-30 23:59:59"), "agent-1", "帳單")
    add_call(store, "out-late", hk("2026-10-11 00:00:00"), "agent-1", "帳單")
    add_call(store, "still-live", hk("2026-10-05 12:00:00"), "agent-1", "帳單", live=True)
    store.close()
    return path


@pytest.fixture
def db(seeded, tmp_path) -> Path:
    """A copy of the seeded store for one test (the draws write jobs into it)."""
    return Path(shutil.copy(seeded, tmp_path / "calls.sqlite3"))


PERIOD = ["--from", "2026-10-01", "--to", "2026-10-10"]


def voice(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voice", *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)  # fmt: skip


def sample_json(db: Path, *flags: str) -> dict:
    out = voice("audit", "sample", "--db", db, *PERIOD, "--json", *flags)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def draw(db: Path, **options) -> sampling.Job:
    store = sampling.open_store(db)
    try:
        return sampling.sample(store, SampleOptions("2026-10-01", "2026-10-10", **options))
    finally:
        store.close()


# --- the draw ---------------------------------------------------------------------------------


def test_stratified_by_agent_and_category_takes_5_percent_of_every_stratum(db):
    job = draw(db, stratify="category, agent", seed=7)  # the flag's order does not rename strata
    expected = expected_strata()
    assert {n: c["population"] for n, c in job.strata.items()} == {
        n: len(ids) for n, ids in expected.items()}  # fmt: skip
    assert job.population == CALLS + 2
    for name, counts in job.strata.items():
        # 5% of 10 rounds up to 1; the edge calls make agent-1's 帳單 12: still 1.
        assert counts["sampled"] == max(1, -(-counts["population"] * 5 // 100)), name
        picked = [c for c, stratum in job.samples.items() if stratum == name]
        assert len(picked) == counts["sampled"] and set(picked) <= set(expected[name])
    # Every stratum rounds up, so the total is 5% plus less than a call per stratum.
    assert 0.05 * job.population <= len(job.sampled) < 0.05 * job.population + len(job.strata)
    assert job.sampled == sorted(job.sampled)


def test_unstratified_takes_5_percent_rounded_up_and_min_per_stratum_raises_it(db):
    job = draw(db, seed=7)
    assert job.strata == {"all": {"population": 202, "sampled": 11}}  # ceil(10.1)
    job = draw(db, stratify="agent", min_per_stratum=15, seed=7)
    assert {n: c["sampled"] for n, c in job.strata.items()} == {
        "agent=agent-1": 15, "agent=agent-2": 15, "agent=agent-3": 15, "agent=agent-4": 15,
        "agent=unassigned": 15}  # fmt: skip


def test_quota_rounds_up_exactly_and_is_capped_at_the_stratum():
    assert sampling.quota(100, 7.0, 1) == 7  # 0.07 * 100 is 7.000000000000001 in floats
    assert sampling.quota(10, 5.0, 1) == 1
    assert sampling.quota(10, 5.0, 0) == 1  # rounding up already gives every stratum a call
    assert sampling.quota(2, 5.0, 3) == 2
    assert sampling.quota(40, 100.0, 1) == 40


def test_main_category_is_the_most_frequent_ties_to_the_first():
    assert sampling.main_category(["轉賬", "帳單", "帳單"]) == "帳單"
    assert sampling.main_category(["轉賬", "帳單", "帳單", "轉賬"]) == "轉賬"
    assert sampling.main_category([]) == UNCATEGORISED


def test_a_strata_draw_depends_neither_on_row_order_nor_on_other_strata():
    params = SampleOptions("2026-10-01", "2026-10-10", percent=10, seed=3).validate()
    ids = [f"c{i}" for i in range(50)]
    alone = sampling.draw({"a": ids}, params)["a"]
    shuffled = sampling.draw({"b": [f"x{i}" for i in range(30)], "a": ids[::-1]}, params)
    assert shuffled["a"] == alone and len(alone) == 5
    assert alone == sorted(sorted(ids, key=lambda c: sampling.rank(3, c))[:5])


def test_live_calls_and_calls_outside_the_hong_kong_days_are_never_sampled(db):
    job = draw(db, percent=100, stratify="agent,category", seed=1)
    every = {c for ids in expected_strata().values() for c in ids}
    assert set(job.sampled) == every  # includes 00:00:00 on --from and 23:59:59 on --to
    assert not {"out-early", "out-late", "still-live"} & set(job.sampled)


def test_an_empty_period_is_refused_and_nothing_is_recorded(db):
    with pytest.raises(EmptyPopulation, match="no finished calls"):
        store = sampling.open_store(db)
        try:
            sampling.sample(store, SampleOptions("2025-01-01", "2025-03-31", seed=1))
        finally:
            store.close()
    out = voice("audit", "sample", "--db", db, "--from", "2025-01-01", "--to", "2025-03-31",
                "--seed", "1")  # fmt: skip
    assert out.returncode == 1 and "no finished calls" in out.stderr
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM audit_jobs").fetchone() == (0,)


def test_redraw_notices_a_population_changed_by_retention(db):
    job = draw(db, stratify="agent", seed=5)
    store = sampling.open_store(db)
    try:
        assert sampling.redraw(store.db, job) == {
            "method": sampling.METHOD,
            "same_method": True,
            "same_population": True,
            "same_sample": True,
        }
        store.expire(days=1, now=hk("2026-10-06 00:00:00"))  # the first four days' calls go
        check = sampling.redraw(store.db, job)
        calls = sampling.sampled_calls(store.db, job)
    finally:
        store.close()
    assert not check["same_population"]
    assert any(c["status"] == "expired" for c in calls)
    assert sampling.job(sqlite3.connect(db), job.id).sampled == job.sampled  # the record stays


# --- the CLI ----------------------------------------------------------------------------------


def test_json_has_exactly_the_documented_keys(db):
    result = sample_json(db, "--stratify", "agent,category", "--seed", "42")
    assert set(result) == {"job_id", "population", "sampled", "strata"}
    assert result["job_id"].startswith("job_") and result["population"] == 202
    assert result["strata"]["agent=unassigned|category=未分類"] == {"population": 10, "sampled": 1}
    assert sum(s["sampled"] for s in result["strata"].values()) == len(result["sampled"])


def test_same_inputs_give_the_same_sample_and_another_seed_another(db):
    flags = ("--stratify", "agent,category", "--percent", "5", "--seed", "20264")
    first, second = sample_json(db, *flags), sample_json(db, *flags)
    assert first["sampled"] == second["sampled"] and first["strata"] == second["strata"]
    assert first["job_id"] != second["job_id"]
    other = sample_json(db, "--stratify", "agent,category", "--percent", "5", "--seed", "20265")
    assert other["sampled"] != first["sampled"] and other["strata"] == first["strata"]


def test_the_job_is_recorded_owner_only_and_show_and_jobs_print_it(db):
    before = time.time()
    result = sample_json(db, "--stratify", "agent", "--seed", "9", "--by", "auditor-a")
    job_id = result["job_id"]
    with sqlite3.connect(db) as con:
        created_at, by, params, population, strata = con.execute(
            "SELECT created_at, created_by, params, population, strata FROM audit_jobs "
            "WHERE id=?", (job_id,)).fetchone()  # fmt: skip
        samples = con.execute("SELECT call_id, stratum FROM audit_samples WHERE job_id=? "
                              "ORDER BY call_id", (job_id,)).fetchall()  # fmt: skip
    assert before - 1 <= created_at <= time.time() and by == "auditor-a"
    assert json.loads(params) == {
        "from": "2026-10-01",
        "to": "2026-10-10",
        "percent": 5.0,
        "stratify": ["agent"],
        "min_per_stratum": 1,
        "seed": 9,
    }
    assert population == 202 and json.loads(strata) == result["strata"]
    assert [c for c, _ in samples] == result["sampled"]
    assert all(s.startswith("agent=") for _, s in samples)
    assert db.stat().st_mode & 0o777 == 0o600

    shown = voice("audit", "show", job_id, "--db", db)
    assert shown.returncode == 0, shown.stderr
    assert job_id in shown.stdout and "auditor-a" in shown.stdout and '"seed": 9' in shown.stdout
    assert "population same, sample same" in shown.stdout
    assert all(call_id in shown.stdout for call_id in result["sampled"])
    as_json = json.loads(voice("audit", "show", job_id, "--db", db, "--json").stdout)
    assert as_json["created_by"] == "auditor-a" and as_json["sampled"] == result["sampled"]
    assert [c["call_id"] for c in as_json["calls"]] == result["sampled"]
    assert as_json["redraw"]["same_sample"] is True

    listed = voice("audit", "jobs", "--db", db)
    assert listed.returncode == 0 and job_id in listed.stdout and "auditor-a" in listed.stdout
    missing = voice("audit", "show", "job_nope", "--db", db)
    assert missing.returncode == 2 and "job_nope" in missing.stderr


def test_human_output_shows_strata_the_job_and_how_to_show_it_again(db):
    out = voice("audit", "sample", "--db", db, *PERIOD, "--stratify", "agent", "--seed", "1")
    assert out.returncode == 0, out.stderr
    assert "agent=unassigned" in out.stdout and "population" in out.stdout
    assert "voice audit show job_" in out.stdout


@pytest.mark.parametrize(("flags", "named"), [
    (["--from", "2026-10-10", "--to", "2026-10-01", "--seed", "1"], "--from"),
    (["--from", "2026-13-01", "--to", "2026-10-10", "--seed", "1"], "--from"),
    ([*PERIOD, "--percent", "0", "--seed", "1"], "--percent"),
    ([*PERIOD, "--percent", "100.5", "--seed", "1"], "--percent"),
    ([*PERIOD, "--stratify", "agent,shift", "--seed", "1"], "--stratify"),
    ([*PERIOD, "--min-per-stratum", "-1", "--seed", "1"], "--min-per-stratum"),
    ([*PERIOD], "--seed"),
])  # fmt: skip
def test_bad_flags_exit_2_naming_the_flag_and_record_nothing(db, flags, named, capsys):
    # In process (the subprocess tests above and below cover the process's exit code): fast.
    try:
        code = main(["audit", "sample", "--db", str(db), *flags])
    except SystemExit as exc:  # argparse's own refusals (a missing required flag)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and named in err, err
    with sqlite3.connect(db) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master")}
        if "audit_jobs" in tables:
            assert con.execute("SELECT count(*) FROM audit_jobs").fetchone() == (0,)


def test_a_missing_store_is_named_and_not_created(tmp_path):
    path = tmp_path / "nope.sqlite3"
    out = voice("audit", "sample", "--db", path, *PERIOD, "--seed", "1")
    assert out.returncode == 2 and f"--db {path}" in out.stderr
    assert not path.exists()
    with pytest.raises(ConfigError, match="--db"):
        sampling.open_store(path)
