"""Referral rules (issue 15 part 3): turns refer calls to departments with an SLA, breaches fire
once when nobody acknowledges in time, supervisors list and acknowledge, the console shows them."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from voice.integrations.config import DeliveryPolicy, IntegrationsConfig, RoutingRule
from voice.integrations.outbox import Outbox
from voice.integrations.routing import Referrals, forget
from voice.server.app import create_app
from voice.server.calls import CallHub, LiveCall
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.serializers import Start
from voice.server.store import Store
from voice.types import Event, HandoffEvent, ReferralEvent, Suggestion, SuggestionEvent
from voice.vad import VadOptions

pytestmark = pytest.mark.timeout(60)

TOKENS = {
    "agent-token-aaaaaaaaaaaa": {"role": "agent", "name": "agent-1"},
    "supervisor-token-cccccccc": {"role": "supervisor", "name": "sup-1"},
    "admin-token-dddddddddddd": {"role": "admin", "name": "admin-1"},
}
AGENT, SUPERVISOR, ADMIN = list(TOKENS)
REFUND = "退款"


def _config(*rules: RoutingRule, check: float = 15.0) -> IntegrationsConfig:
    return IntegrationsConfig(routing=rules, delivery=DeliveryPolicy(sla_check_seconds=check))


def _hub(path: Path, config: IntegrationsConfig) -> tuple[CallHub, Referrals]:
    """A hub as `voice serve --integrations` builds it: the store's outbox with the referrals
    extension, the referrals as the hub's router (inside a running loop)."""
    referrals = Referrals(config)
    store = Store(path, Outbox(config, [referrals]))
    server = ServerConfig(insecure_no_auth=True, db_path=str(path))
    return CallHub(server, store, ServerMetrics(), VadOptions(), None, None, referrals), referrals


def _turn(call_id: str, start: float, category: str | None, resolved: bool,
          handoff: bool = False) -> list[Event]:  # fmt: skip
    """A turn's answer events as the engine gives them: suggestion (then a handoff)."""
    best = (Suggestion("kb-1", category, "...", 0.4),) if category else ()
    events: list[Event] = [SuggestionEvent(call_id, start, start + 2, "yue-Hant-HK", resolved,
                                           best)]  # fmt: skip
    if handoff:
        events.append(HandoffEvent(call_id, "two unresolved turns", start, start + 2))
    return events


def _answer(hub: CallHub, call: LiveCall, events: list[Event]) -> list[Event]:
    """Publish a turn's events and route it, as LiveCall._drain_results does."""
    for event in events:
        hub.publish(call, event)
    referrals = hub.route(call, events)
    for referral in referrals:
        hub.publish(call, referral)
    return referrals


def _rows(path: Path, sql: str, *args) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def _events(path: Path, call_id: str, kind: str) -> list[dict]:
    rows = _rows(path, "SELECT data FROM events WHERE call_id=? AND type=? ORDER BY seq", call_id,
                 kind)  # fmt: skip
    return [json.loads(r[0]) for r in rows]


async def _until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


# --- rules, in process ----------------------------------------------------------------------------


def test_an_unresolved_refund_turn_refers_the_call_once_with_its_deadline(tmp_path):
    db = tmp_path / "calls.sqlite3"
    rule = RoutingRule(REFUND, "unresolved", "finance", 30)

    async def run():
        hub, _ = _hub(db, _config(rule))
        call = hub.open(Start("C-1"), "stream", "agent-1")
        before = time.time()
        first = _answer(hub, call, _turn("C-1", 0.0, REFUND, resolved=False))
        again = _answer(hub, call, _turn("C-1", 5.0, REFUND, resolved=False))  # same department
        await call.finish()
        await hub.shutdown()
        hub.store.close()
        return before, first, again

    before, first, again = asyncio.run(run())
    assert again == []
    [referral] = first
    assert isinstance(referral, ReferralEvent)
    assert (referral.department, referral.category, referral.outcome) == ("finance", REFUND,
                                                                           "unresolved")  # fmt: skip
    assert referral.referral_id.startswith("ref_")
    assert before + 30 * 60 <= referral.deadline <= time.time() + 30 * 60
    [stored] = _events(db, "C-1", "referral")
    assert stored["referral_id"] == referral.referral_id and stored["deadline"] == referral.deadline
    [(kind, data)] = _rows(db, "SELECT type, data FROM outbox_events WHERE type LIKE 'referral%'")
    assert kind == "referral.created"
    assert json.loads(data)["department"] == "finance"
    [row] = _rows(db, "SELECT id, call_id, department, outcome, deadline, acked_at, breached_at "
                      "FROM referrals")  # fmt: skip
    assert row == (referral.referral_id, "C-1", "finance", "unresolved", referral.deadline, None,
                   None)  # fmt: skip


def test_handoff_rules_and_categories_that_do_not_match(tmp_path):
    db = tmp_path / "calls.sqlite3"
    rules = (
        RoutingRule(REFUND, "handoff", "finance", 30),
        RoutingRule("*", "unresolved", "quality", 60),
        RoutingRule("帳單", "any", "billing", 10),
    )

    async def run():
        hub, _ = _hub(db, _config(*rules))
        call = hub.open(Start("C-2"), "stream", "agent-1")
        got = {
            # resolved, no handoff: nothing to refer, whatever the category
            "resolved": _answer(hub, call, _turn("C-2", 0.0, REFUND, resolved=True)),
            # unresolved refund: only the catch-all unresolved rule
            "unresolved": _answer(hub, call, _turn("C-2", 3.0, REFUND, resolved=False)),
            # handed off: finance now; quality was referred already
            "handoff": _answer(hub, call, _turn("C-2", 6.0, REFUND, False, handoff=True)),
        }
        await call.finish()
        other = hub.open(Start("C-3"), "stream", "agent-1")
        # no KB entry came close: 未分類, which only the "*" rule takes
        got["none"] = _answer(hub, other, _turn("C-3", 0.0, None, resolved=False))
        await other.finish()
        await hub.shutdown()
        hub.store.close()
        return got

    got = asyncio.run(run())
    assert got["resolved"] == []
    assert [(r.department, r.outcome) for r in got["unresolved"]] == [("quality", "unresolved")]
    assert [(r.department, r.outcome) for r in got["handoff"]] == [("finance", "handoff")]
    assert [(r.department, r.category) for r in got["none"]] == [("quality", "未分類")]
    stored = _rows(db, "SELECT call_id, department FROM referrals ORDER BY call_id, department")
    assert stored == [("C-2", "finance"), ("C-2", "quality"), ("C-3", "quality")]


def test_a_category_no_rule_names_refers_nothing(tmp_path):
    db = tmp_path / "calls.sqlite3"

    async def run():
        hub, _ = _hub(db, _config(RoutingRule(REFUND, "any", "finance", 30)))
        call = hub.open(Start("C-4"), "stream", "agent-1")
        got = _answer(hub, call, _turn("C-4", 0.0, "網絡", False, handoff=True))
        await call.finish()
        await hub.shutdown()
        hub.store.close()
        return got

    assert asyncio.run(run()) == []
    assert _rows(db, "SELECT count(*) FROM referrals") == [(0,)]
    assert _rows(db, "SELECT count(*) FROM outbox_events WHERE type LIKE 'referral%'") == [(0,)]


def test_a_missed_deadline_breaches_once_even_after_the_call_ended(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule(REFUND, "unresolved", "finance", 0.005), check=0.1)  # 0.3 s

    async def run():
        hub, referrals = _hub(db, config)
        call = hub.open(Start("C-5"), "stream", "agent-1")
        [referral] = _answer(hub, call, _turn("C-5", 0.0, REFUND, resolved=False))
        await call.finish()  # the call is over long before the deadline
        watch = asyncio.get_running_loop().create_task(referrals.watch(hub))
        await _until(lambda: _events(db, "C-5", "referral_breached"))
        await asyncio.sleep(0.5)  # five more checks: none fires again
        watch.cancel()
        await hub.shutdown()
        hub.store.close()
        return referral

    referral = asyncio.run(run())
    [breach] = _events(db, "C-5", "referral_breached")
    assert breach["referral_id"] == referral.referral_id and breach["department"] == "finance"
    assert breach["seq"] > _events(db, "C-5", "end")[0]["seq"]  # appended to the finished call
    [(data,)] = _rows(db, "SELECT data FROM outbox_events WHERE type='referral.sla_breached'")
    assert json.loads(data)["referral_id"] == referral.referral_id
    [(breached_at, acked_at)] = _rows(db, "SELECT breached_at, acked_at FROM referrals")
    assert breached_at >= referral.deadline and acked_at is None


def test_a_live_call_sees_its_breach_on_its_stream(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule("*", "any", "finance", 0.002), check=0.05)

    async def run():
        hub, referrals = _hub(db, config)
        call = hub.open(Start("C-6"), "stream", "agent-1")
        sub = hub.subscribe("C-6")
        _answer(hub, call, _turn("C-6", 0.0, REFUND, resolved=False))
        watch = asyncio.get_running_loop().create_task(referrals.watch(hub))
        seen = []
        while not seen or seen[-1]["type"] != "referral_breached":
            seen.append(await asyncio.wait_for(sub.get(), 5))
        watch.cancel()
        await call.finish()
        await hub.shutdown()
        hub.store.close()
        return [e["type"] for e in seen]

    assert asyncio.run(run()) == ["suggestion", "referral", "referral_breached"]


# --- the HTTP API and the console -----------------------------------------------------------------


def _seed(path: Path, config: IntegrationsConfig, call_id: str, *deadlines: float) -> list[str]:
    """A finished call referred to one department per deadline (seconds from now), stored as the
    server stores referral events; returns the referral ids."""
    store = Store(path, Outbox(config, [Referrals(config)]))
    store.open_call(call_id, "stream", "agent-1", "agent-1", {})
    ids = []
    for seq, seconds in enumerate(deadlines, 1):
        referral = ReferralEvent(call_id, f"ref_{call_id}_{seq}", f"dept-{seq}", REFUND,
                                 "unresolved", seconds / 60, time.time() + seconds)  # fmt: skip
        store.add_event(call_id, seq, {**referral.to_dict(), "seq": seq})
        ids.append(referral.referral_id)
    store.close_call(call_id, "completed")
    store.close()
    return ids


def _client(path: Path, integrations: IntegrationsConfig | None) -> TestClient:
    config = ServerConfig(tokens=TOKENS, db_path=str(path))
    app = create_app(config, transcriber=None, integrations=integrations)
    return TestClient(app, follow_redirects=False)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_supervisors_list_and_acknowledge_agents_may_not(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule(REFUND, "unresolved", "finance", 30))
    ref, _ = _seed(db, config, "C-7", 1800, 3600)
    with _client(db, config) as client:
        r = client.get("/v1/referrals?status=open", headers=_bearer(SUPERVISOR))
        assert r.status_code == 200
        listed = r.json()["referrals"]
        assert [x["id"] for x in listed] == [ref, "ref_C-7_2"]  # earliest deadline first
        assert listed[0]["status"] == "open" and listed[0]["department"] == "dept-1"
        assert set(listed[0]) >= {"id", "call_id", "department", "category", "outcome",
                                  "sla_minutes", "created_at", "deadline", "acked_at",
                                  "acked_by", "breached_at", "status"}  # fmt: skip

        assert client.get("/v1/referrals", headers=_bearer(AGENT)).status_code == 403
        assert client.post(f"/v1/referrals/{ref}/ack", headers=_bearer(AGENT)).status_code == 403
        assert client.post(f"/v1/referrals/{ref}/ack").status_code == 401
        r = client.post("/v1/referrals/ref_nope/ack", headers=_bearer(SUPERVISOR))
        assert r.status_code == 404

        first = client.post(f"/v1/referrals/{ref}/ack", headers=_bearer(SUPERVISOR))
        assert first.status_code == 200
        assert first.json()["status"] == "acked" and first.json()["acked_by"] == "sup-1"
        again = client.post(f"/v1/referrals/{ref}/ack", headers=_bearer(ADMIN))  # idempotent
        assert again.status_code == 200
        assert (again.json()["acked_by"], again.json()["acked_at"]) == ("sup-1",
                                                                        first.json()["acked_at"])  # fmt: skip
        acked = client.get("/v1/referrals?status=acked", headers=_bearer(ADMIN)).json()
        assert [x["id"] for x in acked["referrals"]] == [ref]
        assert client.get("/v1/referrals?status=late", headers=_bearer(ADMIN)).status_code == 400
        record = client.get("/calls/C-7", headers=_bearer(SUPERVISOR)).json()
        acks = [e for e in record["events"] if e["type"] == "referral_acked"]
        assert [(e["referral_id"], e["acked_by"]) for e in acks] == [(ref, "sup-1")]  # once


def test_an_ack_before_the_deadline_prevents_the_breach(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule(REFUND, "unresolved", "finance", 30), check=0.1)
    acked, missed = _seed(db, config, "C-8", 3.0, 3.0)
    with _client(db, config) as client:
        assert client.post(f"/v1/referrals/{acked}/ack",
                           headers=_bearer(SUPERVISOR)).status_code == 200  # fmt: skip
        deadline = time.monotonic() + 10
        while True:
            rows = client.get("/v1/referrals", headers=_bearer(SUPERVISOR)).json()["referrals"]
            status = {r["id"]: r["status"] for r in rows}
            if status[missed] == "breached" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        time.sleep(0.3)  # a few more checks
        events = client.get("/calls/C-8", headers=_bearer(SUPERVISOR)).json()["events"]
    assert status == {acked: "acked", missed: "breached"}
    assert [e["referral_id"] for e in events if e["type"] == "referral_breached"] == [missed]
    assert _rows(db, "SELECT breached_at FROM referrals WHERE id=?", acked) == [(None,)]


def test_referrals_are_served_without_an_integrations_file(tmp_path):
    with _client(tmp_path / "calls.sqlite3", None) as client:
        r = client.get("/v1/referrals", headers=_bearer(SUPERVISOR))
        assert r.status_code == 200 and r.json() == {"referrals": []}


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_the_console_acknowledges_with_its_session_and_csrf_token(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule(REFUND, "unresolved", "finance", 30))
    ref, _ = _seed(db, config, "C-9", 1800, 1800)
    with _client(db, config) as client:
        form = client.get("/console/login")
        client.post("/console/login", data={"token": SUPERVISOR, "csrf": _csrf(form.text)})
        page = client.get("/console/calls/C-9")
        assert page.status_code == 200 and 'id="referrals"' in page.text
        assert 'id="referrals"' in client.get("/console").text  # the wallboard's panel
        # the cookie lists on a same-origin GET, as every console read does
        assert client.get("/v1/referrals?call_id=C-9").json()["referrals"][0]["id"] == ref
        url = f"/v1/referrals/{ref}/ack"
        assert client.post(url).status_code == 403  # the cookie alone is not enough
        assert client.post(url, headers={"X-CSRF-Token": "forged"}).status_code == 403
        csrf = _csrf(page.text)
        cross = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"}
        assert client.post(url, headers=cross).status_code == 403
        r = client.post(url, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"})
        assert r.status_code == 200 and r.json()["acked_by"] == "sup-1"


def test_retention_forgets_the_referrals_of_expired_calls(tmp_path):
    db = tmp_path / "calls.sqlite3"
    config = _config(RoutingRule(REFUND, "unresolved", "finance", 30))
    _seed(db, config, "C-old", 1800)
    _seed(db, config, "C-new", 1800)
    store = Store(db)
    store.db.execute("UPDATE calls SET started_at=0 WHERE id='C-old'")
    old = "SELECT id FROM calls WHERE started_at < ? AND status != 'live'"
    store.transact(forget, old, (time.time() - 86_400,))  # what Store.expire runs
    store.close()
    assert _rows(db, "SELECT call_id FROM referrals") == [("C-new",)]
