"""Audit review (issue 16 item 3): the rubric, reviews and their agreement, and the review API
against a real `voice serve` with recording on: sampled calls only for auditors, audio per
utterance, corrections, blind double review."""

from __future__ import annotations

import asyncio
import io
import json
import sqlite3
from pathlib import Path

import httpx
import pytest
import soundfile as sf
from test_server import _bearer, _serve
from websockets.asyncio.client import connect

from voice.audio import mulaw_encode
from voice.quality import reviews
from voice.quality.reviews import ClipError, ReviewError, RubricError
from voice.server.auth import Principal

SUPERVISOR = "supervisor-token-review-1"
AUDITOR = "auditor-token-review-0001"
AUDITOR2 = "auditor-token-review-0002"
AGENT = "agent-token-review-000001"
ADMIN = "admin-token-review-000001"
TOKENS = {SUPERVISOR: {"role": "supervisor", "name": "主管陳"},
          AUDITOR: {"role": "auditor", "name": "auditor-lee"},
          AUDITOR2: {"role": "auditor", "name": "auditor-wong"},
          AGENT: {"role": "agent", "name": "agent-1"},
          ADMIN: {"role": "admin", "name": "admin"}}  # fmt: skip
SAMPLED, OTHER = "AUD-1", "AUD-2"
JOB = "job_0123456789ab"
KB = Path(__file__).parents[1] / "voice" / "answer" / "data" / "sample_kb.csv"
GOOD = {"greeting": True, "suggestion_accuracy": 4, "compliance": "compliant", "empathy": 3}


# --- helpers shared with test_review_browser.py -----------------------------------------------


async def _stream(ws_base: str, call_id: str, data: bytes) -> None:
    """A call over WS /stream, as fast as it goes, assigned to agent-1; returns at its end."""
    async with connect(ws_base + "/stream", additional_headers=_bearer(SUPERVISOR)) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "mulaw",
                                  "sample_rate": 8000, "agent": "agent-1"}))  # fmt: skip
        for i in range(0, len(data), 1600):
            await ws.send(data[i : i + 1600])
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass


def seed_sample(db_path: Path, job_id: str, call_ids: list[str]) -> None:
    """Record an audit job that sampled `call_ids`, as `voice audit sample` does (its tables via
    voice.quality.sampling), and make sure the reviews table exists."""
    from voice.quality import sampling

    db = sqlite3.connect(db_path, isolation_level=None, timeout=30)
    try:
        db.execute("BEGIN IMMEDIATE")
        sampling.create(db)
        reviews.create(db)
        params = {"from": "2026-12-01", "to": "2026-12-31", "percent": 5.0, "stratify": [],
                  "min_per_stratum": 1, "seed": 7}  # fmt: skip
        db.execute("INSERT INTO audit_jobs (id, created_at, created_by, params, method, "
                   "population, population_sha256, strata) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                   (job_id, 1.8e9, "qa-lead", json.dumps(params), sampling.METHOD, 20, "0" * 64,
                    json.dumps({"all": {"population": 20, "sampled": len(call_ids)}})))  # fmt: skip
        db.executemany("INSERT INTO audit_samples (job_id, call_id, stratum) VALUES (?, ?, 'all')",
                       [(job_id, c) for c in call_ids])  # fmt: skip
        db.execute("COMMIT")
    finally:
        db.close()


def start_server(tmp: Path, model_dir: Path):
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    return _serve(tmp, "--model", str(model_dir), "--auth", str(tmp / "auth.json"), "--kb", str(KB),
                  "--record-dir", str(tmp / "recordings"), "--max-calls", "4")  # fmt: skip


def stream_calls(server, demo_call, calls: dict[str, float | None]) -> None:
    """Stream the demo call once per id (cut to the given seconds, or whole), together."""
    pcm, rate = sf.read(demo_call.path, dtype="int16")
    data = mulaw_encode(pcm)

    async def run() -> None:
        await asyncio.gather(*(_stream(server.ws, call_id, data[: int(s * rate)] if s else data)
                               for call_id, s in calls.items()))  # fmt: skip

    asyncio.run(run())


# --- the rubric -------------------------------------------------------------------------------


def test_the_shipped_rubric_loads_with_both_languages():
    rubric = reviews.load_rubric()
    assert [i.id for i in rubric.items][:4] == ["greeting", "suggestion_accuracy", "compliance",
                                                "empathy"]  # fmt: skip
    for item in rubric.items:
        assert item.label["zh"] and item.label["en"]
    assert rubric.item("compliance").values() == ("compliant", "minor", "major")
    assert rubric.to_json()["items"][1]["values"] == [1, 2, 3, 4, 5]


def _item(**changes):
    item = {"id": "greeting", "label": {"zh": "問候", "en": "Greeting"}, "type": "yes_no",
            "required": True}  # fmt: skip
    item.update(changes)
    return {k: v for k, v in item.items() if v is not None}


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (_item(type="stars"), "item greeting: type: one of scale, yes_no, choice"),
        (_item(label={"zh": "問候"}), "item greeting: label.en: a non-empty string"),
        (_item(required="yes"), "item greeting: required: true or false"),
        (_item(type="choice"), "item greeting: options: a list of at least two"),
        (
            _item(
                type="choice",
                options=[
                    {"value": "a", "label": {"zh": "甲", "en": "A"}},
                    {"value": "a", "label": {"zh": "乙", "en": "B"}},
                ],
            ),
            "item greeting: options 2: value 'a' repeated",
        ),  # fmt: skip
        (_item(options=[]), "item greeting: options: only a choice item has options"),
        (_item(id="1st"), "item 1: id: letters, digits and _"),
        (_item(weight=2), "item greeting: weight: not a key of an item"),
    ],
)
def test_a_bad_rubric_is_refused_naming_the_item_and_key(item, message):
    with pytest.raises(RubricError, match="^r.yaml: " + message.replace("(", r"\(")):
        reviews.parse_rubric({"version": "1", "items": [item]}, "r.yaml")


def test_a_rubric_file_repeating_an_id_or_without_version_is_refused(tmp_path):
    path = tmp_path / "rubric.yaml"
    path.write_text("version: '1'\nitems:\n  - {id: a, label: {zh: 甲, en: A}, type: scale, "
                    "required: true}\n  - {id: a, label: {zh: 乙, en: B}, type: yes_no, "
                    "required: false}\n")  # fmt: skip
    with pytest.raises(RubricError, match="item a: id: used by an earlier item"):
        reviews.load_rubric(path)
    path.write_text("items: []\n")
    with pytest.raises(RubricError, match="version"):
        reviews.load_rubric(path)
    with pytest.raises(RubricError, match="cannot read"):
        reviews.load_rubric(tmp_path / "missing.yaml")


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        ({**GOOD, "greeting": None}, "scores.greeting: required"),
        ({**GOOD, "suggestion_accuracy": 6}, "scores.suggestion_accuracy: a whole number from 1"),
        ({**GOOD, "suggestion_accuracy": True}, "scores.suggestion_accuracy: a whole number"),
        ({**GOOD, "greeting": "yes"}, "scores.greeting: true or false"),
        ({**GOOD, "compliance": "fine"}, "scores.compliance: one of compliant, minor, major"),
        ({**GOOD, "tone": 3}, "scores.tone: not an item of rubric"),
        ([1, 2], "scores: an object"),
    ],
)
def test_scores_are_checked_against_the_rubric_naming_the_item(scores, message):
    with pytest.raises(ReviewError, match="^" + message):
        reviews.load_rubric().check(scores)


def test_an_optional_item_may_be_left_out():
    assert reviews.load_rubric().check({**GOOD, "resolved": None}) == GOOD


# --- reviews and agreement --------------------------------------------------------------------


@pytest.fixture
def db():
    conn = sqlite3.connect(":memory:", isolation_level=None)
    reviews.create(conn)
    yield conn
    conn.close()


def _add(db, call_id, who, now, **scores):
    return reviews.add(db, reviews.load_rubric(), call_id, who, "auditor", {**GOOD, **scores}, "",
                       now)  # fmt: skip


def test_one_review_per_reviewer_and_call(db):
    first = _add(db, "c1", "lee", 1.0)
    assert first.scores == GOOD and first.rubric_version == reviews.load_rubric().version
    with pytest.raises(reviews.AlreadyReviewed):
        _add(db, "c1", "lee", 2.0, empathy=5)
    assert [r.reviewer for r in reviews.of_call(db, "c1")] == ["lee"]
    with pytest.raises(ReviewError, match="comment: at most"):
        reviews.add(db, reviews.load_rubric(), "c2", "lee", "auditor", GOOD, "x" * 3000, 1.0)
    reviews.forget(db, "SELECT ?", ("c1",))
    assert reviews.of_call(db, "c1") == []


def test_pair_agreement_is_the_share_of_items_answered_alike(db):
    rubric = reviews.load_rubric()
    _add(db, "c1", "lee", 1.0, resolved=True)
    _add(db, "c1", "wong", 2.0, empathy=5)  # differs on empathy; resolved unanswered
    assert reviews.pair_agreement(reviews.of_call(db, "c1")[:1], rubric) is None
    two = reviews.pair_agreement(reviews.of_call(db, "c1"), rubric)
    assert two["agreement"] == 0.75 and two["pairs"] == 1  # 3 of the 4 items both answered
    assert two["by_item"] == {"greeting": 1.0, "suggestion_accuracy": 1.0, "compliance": 1.0,
                              "empathy": 0.0}  # fmt: skip
    _add(db, "c1", "chan", 3.0)  # agrees with lee on all 4, with wong on 3: (3 + 4 + 3) / 12
    three = reviews.pair_agreement(reviews.of_call(db, "c1"), rubric)
    assert three["pairs"] == 3 and three["agreement"] == pytest.approx((0.75 + 1 + 0.75) / 3,
                                                                       abs=1e-4)  # fmt: skip


def test_cohen_kappa_matches_the_textbook_example():
    # 50 items: both yes 20, both no 15, yes/no 5, no/yes 10 -> p_o 0.7, p_e 0.5, kappa 0.4
    pairs = [(1, 1)] * 20 + [(0, 0)] * 15 + [(1, 0)] * 5 + [(0, 1)] * 10
    assert reviews.cohen_kappa(pairs) == 0.4
    assert reviews.cohen_kappa([(1, 1), (1, 1)]) is None  # one answer throughout: undefined
    assert reviews.cohen_kappa([]) is None


def test_calibration_takes_each_calls_first_two_reviews(db):
    rubric = reviews.load_rubric()
    for n, (a, b) in enumerate([(3, 3), (4, 2), (5, 5), (2, 2)]):
        _add(db, f"c{n}", "lee", 10.0 + n, empathy=a)
        _add(db, f"c{n}", "wong", 20.0 + n, empathy=b)
    _add(db, "c0", "chan", 30.0, empathy=1)  # a third review: not in the kappa
    _add(db, "single", "lee", 1.0)  # one review: not double-reviewed
    figures = reviews.calibration(db, rubric)
    assert figures["calls"] == 4
    empathy = figures["items"]["empathy"]
    assert empathy["calls"] == 4 and empathy["agreement"] == 0.75
    # p_o 3/4; first rater 3,4,5,2 and second 3,2,5,2: p_e = (1*1 + 0 + 1*1 + 1*2) / 16 = 0.25
    assert empathy["kappa"] == pytest.approx((0.75 - 0.25) / 0.75, abs=1e-4)
    assert figures["items"]["greeting"]["kappa"] is None  # all yes: chance agreement is 1
    assert figures["kappa"] == empathy["kappa"]  # the mean of the defined kappas
    assert reviews.calibration(db, rubric, "job_x")["calls"] == 0  # no audit tables yet


def test_spans_are_checked_naming_the_parameter():
    assert reviews.parse_span("1.5", "3") == (1.5, 3.0)
    assert reviews.parse_span(None, None) == (0.0, None)
    for start, end, name in [("x", None, "start"), ("-1", None, "start"), ("nan", None, "start"),
                             ("2", "1", "end"), ("0", "61", "end"), ("0", "y", "end")]:  # fmt: skip
        with pytest.raises(ClipError, match=f"^{name}: "):
            reviews.parse_span(start, end)


def test_who_may_review_a_call(db):
    db.execute("CREATE TABLE calls (id TEXT PRIMARY KEY)")
    db.executemany("INSERT INTO calls VALUES (?)", [("in",), ("out",)])
    auditor, supervisor = Principal("auditor", "lee"), Principal("supervisor", "chan")
    assert not reviews.may_review(db, auditor, "in")  # no sample drawn yet
    from voice.quality import sampling

    sampling.create(db)
    db.execute("INSERT INTO audit_samples VALUES ('job_1', 'in', 'all')")
    assert reviews.may_review(db, auditor, "in") and not reviews.may_review(db, auditor, "out")
    assert reviews.may_review(db, supervisor, "out") and not reviews.may_review(db, supervisor, "x")
    for role in ("agent", "admin"):
        assert not reviews.may_review(db, Principal(role, "agent-1"), "in")


# --- the API ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, demo_call):
    tmp = tmp_path_factory.mktemp("review")
    with start_server(tmp, tiny_model_dir) as server:
        stream_calls(server, demo_call, {SAMPLED: None, OTHER: 3.0})
        seed_sample(tmp / "calls.sqlite3", JOB, [SAMPLED, "AUD-gone"])
        yield server


def _get(server, path, token=AUDITOR, **params):
    return httpx.get(server.http + path, headers=_bearer(token), params=params, timeout=30)


def _post(server, path, body, token=AUDITOR):
    return httpx.post(server.http + path, headers=_bearer(token), json=body, timeout=30)


@pytest.mark.slow
def test_an_auditor_reviews_a_sampled_call(served):
    server = served
    jobs = _get(server, "/v1/audit/jobs").json()["jobs"]
    assert [(j["id"], j["sampled"], j["reviewed"]) for j in jobs] == [(JOB, 2, 0)]
    job = _get(server, f"/v1/audit/jobs/{JOB}").json()
    status = {c["call_id"]: c for c in job["calls"]}
    assert status[SAMPLED]["agent"] == "agent-1" and status[SAMPLED]["reviews"] == 0
    assert status["AUD-gone"]["status"] == "expired"
    assert _get(server, "/v1/audit/jobs/job_nope").status_code == 404

    sheet = _get(server, f"/v1/audit/calls/{SAMPLED}").json()
    assert sheet["recording"]["encoding"] == "mulaw" and sheet["lines"]
    line = sheet["lines"][0]
    assert {"seq", "start", "end", "text", "suggestion", "corrections"} <= set(line)
    # each line carries the suggestion that answered it (the tiny model's words match no entry)
    assert all(x["suggestion"] and "resolved" in x["suggestion"] for x in sheet["lines"])

    # audio of one utterance: a 16-bit PCM WAV of the span asked for
    r = _get(server, f"/v1/calls/{SAMPLED}/audio", start="0.5", end="2.0")
    assert r.status_code == 200 and r.headers["content-type"] == "audio/wav"
    info = sf.info(io.BytesIO(r.content))
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    assert info.frames == 12000
    end = _get(server, f"/v1/calls/{SAMPLED}/audio", start=str(line["start"]))
    assert end.status_code == 200
    assert sf.info(io.BytesIO(end.content)).duration <= reviews.MAX_CLIP_SECONDS
    bad = _get(server, f"/v1/calls/{SAMPLED}/audio", start="1", end="99")
    assert bad.status_code == 400 and bad.json()["error"].startswith("end: ")
    late = _get(server, f"/v1/calls/{SAMPLED}/audio", start="3000")
    assert late.status_code == 400 and late.json()["error"].startswith("start: after the end")

    # a correction of one line; a bad seq is refused naming seq
    r = _post(
        server, f"/v1/calls/{SAMPLED}/corrections", {"seq": line["seq"], "text": "我想查下張單"}
    )
    assert r.status_code == 201, r.text
    stored = r.json()
    assert (stored["seq"], stored["text"], stored["reviewer"]) == (line["seq"], "我想查下張單",
                                                                   "auditor-lee")  # fmt: skip
    r = _post(server, f"/v1/calls/{SAMPLED}/corrections", {"seq": 99999, "text": "x"})
    assert r.status_code == 400 and r.json()["error"].startswith("seq: ")
    r = _post(server, f"/v1/calls/{SAMPLED}/corrections", {"seq": line["seq"], "text": " "})
    assert r.status_code == 400 and r.json()["error"].startswith("text: ")
    listed = _get(server, f"/v1/calls/{SAMPLED}/corrections").json()["corrections"]
    assert [c["text"] for c in listed] == ["我想查下張單"]
    again = _get(server, f"/v1/audit/calls/{SAMPLED}").json()["lines"][0]["corrections"]
    assert again[0]["reviewer"] == "auditor-lee"

    # the review: a bad item is refused naming it; one review per reviewer
    r = _post(server, f"/v1/calls/{SAMPLED}/reviews", {"scores": {**GOOD, "empathy": 9}})
    assert r.status_code == 400 and r.json()["error"].startswith("scores.empathy: ")
    r = _post(server, f"/v1/calls/{SAMPLED}/reviews", {"scores": GOOD, "comment": "好"})
    assert r.status_code == 201, r.text
    assert r.json()["reviewer"] == "auditor-lee" and r.json()["scores"] == GOOD
    assert _post(server, f"/v1/calls/{SAMPLED}/reviews", {"scores": GOOD}).status_code == 409

    # the second auditor sees that a review exists, not its scores, until it has submitted
    blind = _get(server, f"/v1/calls/{SAMPLED}/reviews", AUDITOR2).json()
    assert blind["submitted"] is False and blind["agreement"] is None
    assert blind["reviews"] == [{"reviewer": "auditor-lee", "role": "auditor", "hidden": True,
                                 "created_at": blind["reviews"][0]["created_at"]}]  # fmt: skip
    r = _post(server, f"/v1/calls/{SAMPLED}/reviews", {"scores": {**GOOD, "empathy": 5}},
              AUDITOR2)  # fmt: skip
    assert r.status_code == 201
    both = _get(server, f"/v1/calls/{SAMPLED}/reviews", AUDITOR2).json()
    assert both["submitted"] and [r["reviewer"] for r in both["reviews"]] == [
        "auditor-lee",
        "auditor-wong",
    ]
    assert both["agreement"]["agreement"] == 0.75 and both["agreement"]["by_item"]["empathy"] == 0
    figures = _get(server, "/v1/audit/agreement", job=JOB).json()
    assert figures["calls"] == 1 and figures["agreement"] == 0.75
    calls = _get(server, f"/v1/audit/jobs/{JOB}").json()["calls"]
    assert [c["call_id"] for c in calls] == [SAMPLED, "AUD-gone"]  # expired calls last
    assert calls[0]["reviewers"] == ["auditor-lee", "auditor-wong"]
    assert calls[0]["corrected_lines"] == 1 and calls[0]["reviewed_by_me"]
    # the audit log names who read what, never the corrected text
    log = server.log.read_text()
    assert '"event.action": "correction.add"' in log and '"event.action": "call.audio"' in log
    assert "我想查下張單" not in log
    assert _get(server, "/v1/audit/rubric").json()["version"] == reviews.load_rubric().version


@pytest.mark.slow
def test_only_sampled_calls_for_auditors_and_nothing_for_agents_or_admins(served):
    server = served
    for path in (f"/v1/audit/calls/{OTHER}", f"/v1/calls/{OTHER}/audio",
                 f"/v1/calls/{OTHER}/corrections", f"/v1/calls/{OTHER}/reviews"):  # fmt: skip
        r = _get(server, path)
        assert r.status_code == 404, path  # not sampled: as if it did not exist
        assert _get(server, path, SUPERVISOR).status_code == 200, path  # any call
    assert (
        _post(server, f"/v1/calls/{OTHER}/corrections", {"seq": 1, "text": "x"}).status_code == 404
    )
    # the auditor reaches nothing else: not the calls, their streams or analytics
    for path in (f"/calls/{SAMPLED}", "/calls", "/events", "/v1/analytics/kpis"):
        assert _get(server, path).status_code == 403, path
    # agents and admins may not read reviews, corrections or audio, not even of their own calls
    for token in (AGENT, ADMIN):
        for path in ("/v1/audit/jobs", f"/v1/audit/calls/{SAMPLED}", f"/v1/calls/{SAMPLED}/audio",
                     f"/v1/calls/{SAMPLED}/corrections", f"/v1/calls/{SAMPLED}/reviews"):  # fmt: skip
            assert _get(server, path, token).status_code == 403, (token, path)
        r = _post(server, f"/v1/calls/{SAMPLED}/corrections", {"seq": 1, "text": "x"}, token)
        assert r.status_code == 403
    assert httpx.get(server.http + "/v1/audit/jobs", timeout=10).status_code == 401
