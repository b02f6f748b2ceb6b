"""Webhooks from the outbox (issue 15 part 1): the file's checks, signed deliveries a Standard
Webhooks verifier accepts, retries, Retry-After, 410, dead letters, a restart in between, the CLI."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from fakes.receiver import WebhookReceiver
from standardwebhooks.webhooks import Webhook

from voice.errors import ConfigError
from voice.integrations import config as cfg
from voice.integrations.outbox import Outbox
from voice.integrations.service import Integrations
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.serializers import Start
from voice.server.store import Store
from voice.types import TranscriptEvent
from voice.vad import VadOptions

REPO = Path(__file__).parents[1]
KB = REPO / "voice" / "answer" / "data" / "sample_kb.csv"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
FAST = {"max_attempts": 4, "backoff_seconds": 0.05, "max_backoff_seconds": 5.0,
        "timeout_seconds": 5.0}  # fmt: skip


def _config(url: str, events: list[str], fmt: str = "standard", secret: str = SECRET,
            **delivery) -> cfg.IntegrationsConfig:  # fmt: skip
    hook = {"name": "admin-group", "url": url, "events": events, "format": fmt}
    if secret:
        hook["secret"] = secret
    return cfg.parse({"webhooks": [hook], "allow_private_networks": True,
                      "public_url": "https://voice.example.hk",
                      "delivery": {**FAST, **delivery}}, {})  # fmt: skip


# --- the file ---------------------------------------------------------------------------------

ISSUE_EXAMPLE = """
webhooks:
  - name: admin-group
    url: https://hooks.example.com/voice
    secret: whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw   # or secret_env: NAME
    events: [alert.high_priority, handoff, call.ended]
    format: standard            # standard | dingtalk | slack
allow_private_networks: false
zendesk:
  url: https://acme.zendesk.com
  email: bot@acme.hk
  token_env: ZENDESK_TOKEN
  webhook_secret_env: ZENDESK_WEBHOOK_SECRET
routing:
  - when: {category: 退款, outcome: unresolved}
    department: finance
    sla_minutes: 30
"""


def test_the_documented_example_loads(tmp_path):
    path = tmp_path / "integrations.yaml"
    path.write_text(ISSUE_EXAMPLE, encoding="utf-8")
    env = {"ZENDESK_TOKEN": "t" * 20, "ZENDESK_WEBHOOK_SECRET": "s" * 20}
    config = cfg.load(path, env)
    assert config.webhooks[0].events == ("alert.high_priority", "handoff", "call.ended")
    assert config.zendesk.token == "t" * 20 and config.zendesk.url == "https://acme.zendesk.com"
    assert config.routing[0] == cfg.RoutingRule("退款", "unresolved", "finance", 30.0)
    assert "t" * 20 not in repr(config)  # secrets stay out of reprs (and so of logs)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"webhook": []}, "webhook: unknown key"),
        ({"webhooks": [{"url": "https://a.example/x", "events": ["handoff"],
                        "secret": SECRET}]}, "webhooks[0].name: required"),
        ({"webhooks": [{"name": "a", "url": "ftp://a.example/x", "events": ["handoff"],
                        "secret": SECRET}]}, "webhooks[0].url"),
        ({"webhooks": [{"name": "a", "url": "http://127.0.0.1:9/x", "events": ["handoff"],
                        "secret": SECRET}]}, "allow_private_networks"),
        ({"webhooks": [{"name": "a", "url": "http://10.1.2.3/x", "events": ["handoff"],
                        "secret": SECRET}]}, "webhooks[0].url"),
        ({"webhooks": [{"name": "a", "url": "http://localhost/x", "events": ["handoff"],
                        "secret": SECRET}]}, "webhooks[0].url"),
        ({"webhooks": [{"name": "a", "url": "https://a.example/x", "events": ["hangup"],
                        "secret": SECRET}]}, "webhooks[0].events[0]"),
        ({"webhooks": [{"name": "a", "url": "https://a.example/x", "events": ["handoff"]}]},
         "webhooks[0].secret: required"),
        ({"webhooks": [{"name": "a", "url": "https://a.example/x", "events": ["handoff"],
                        "secret": "hunter2"}]}, "whsec_"),
        ({"webhooks": [{"name": "a", "url": "https://a.example/x", "events": ["handoff"],
                        "secret_env": "NOT_SET_ANYWHERE"}]}, "NOT_SET_ANYWHERE"),
        ({"webhooks": [{"name": "a", "url": "https://a.example/x", "events": ["handoff"],
                        "secret": SECRET, "format": "teams"}]}, "webhooks[0].format"),
        ({"zendesk": {"url": "https://a.zendesk.com", "email": "b@a", "token_env": "NOPE"}},
         "zendesk.token_env"),
        ({"routing": [{"when": {"category": "退款", "outcome": "later"}, "department": "f",
                       "sla_minutes": 5}]}, "routing[0].when.outcome"),
        ({"routing": [{"when": {"category": "退款"}, "department": "f", "sla_minutes": -1}]},
         "routing[0].sla_minutes"),
        ({"delivery": {"max_attempts": 0}}, "delivery.max_attempts"),
    ],
)  # fmt: skip
def test_bad_files_are_refused_naming_the_key(change, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        cfg.parse(change, {})


def test_a_name_resolving_to_this_machine_is_refused_at_send_time():
    with pytest.raises(ConfigError, match="allow_private_networks"):
        cfg.resolve_public("localhost", 80)


# --- deliveries through a hub ---------------------------------------------------------------


@contextlib.asynccontextmanager
async def _running(tmp: Path, config: cfg.IntegrationsConfig, engine=None):
    """A call hub whose store writes the outbox, with the delivery worker running."""
    service = Integrations(config)
    store = Store(tmp / "calls.sqlite3", service.outbox)
    metrics = ServerMetrics()
    server = ServerConfig(insecure_no_auth=True, db_path=str(tmp / "calls.sqlite3"))
    hub = CallHub(server, store, metrics, VadOptions(), engine, None, service.referrals)
    service.start(hub, store, metrics)
    try:
        yield hub, store, metrics
    finally:
        await hub.shutdown()
        await service.stop()
        store.close()


async def _turn(hub: CallHub, call, text: str, start: float) -> list:
    """What the server publishes for one caller utterance: its transcript, then the answer
    engine's events (suggestion, alerts, handoff), as LiveCall does after ASR."""
    transcript = TranscriptEvent(call.call_id, start, start + 2.0, text, latency_ms=300.0)
    hub.publish(call, transcript)
    events = call.session.answer_events(transcript, _silence(call.call_id))
    for event in events:
        hub.publish(call, event)
    return events


def _silence(call_id: str):
    from voice.types import Segment

    return Segment(call_id, 0.0, 2.0, np.zeros(32_000, dtype=np.float32))


async def _wait(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


@pytest.fixture(scope="module")
def engine():
    from voice.answer import AnswerEngine

    return AnswerEngine.from_file(KB)


def test_each_high_priority_event_is_one_signed_delivery_a_verifier_accepts(tmp_path, engine):
    with WebhookReceiver(secret=SECRET) as receiver:
        config = _config(receiver.url + "/voice", ["alert.high_priority"])

        async def run() -> list:
            async with _running(tmp_path, config, engine) as (hub, store, metrics):
                call = hub.open(Start("C-1", agent="agent-1"), "stream", "agent-1")
                first = await _turn(hub, call, "你哋服務咁差，我要投訴", 0.0)
                await _turn(hub, call, "我想查下我張單", 3.0)  # not high priority
                second = await _turn(hub, call, "我要投訴你哋", 6.0)
                await call.finish()
                priority = [e for e in first + second
                            if e.type == "alert" and e.alert.kind == "priority"]  # fmt: skip
                await _wait(lambda: len(receiver.received) >= len(priority))
                # the counter moves just after each delivery's row commits
                await _wait(
                    lambda: (
                        metrics.deliveries.get(target="admin-group", outcome="delivered")
                        >= len(priority)
                    )
                )
                await asyncio.sleep(0.3)  # nothing more arrives
                assert metrics.deliveries.get(target="admin-group", outcome="delivered") == len(
                    priority
                )
                return priority

        priority = asyncio.run(run())
        assert len(priority) >= 2
        got = receiver.received
        assert len(got) == len(priority) and len(receiver.unique_ids()) == len(priority)
        wh = Webhook(SECRET)
        for request in got:
            assert request.verified
            payload = wh.verify(request.body, request.headers)  # the package's own check
            assert payload["type"] == "alert.high_priority"
            assert payload["timestamp"].endswith("Z")
            data = payload["data"]
            assert data["call_id"] == "C-1" and data["kb_id"].startswith("CMP-")
            assert data["category"] == "投訴" and "投訴" in data["text"]
            assert data["console_url"] == "https://voice.example.hk/console/calls/C-1"
            assert set(data) >= {"call_id", "start", "end", "text", "kb_id", "category"}
        # one delivery per alert, in the call's order, each naming its own KB entry
        assert [(r.json["data"]["start"], r.json["data"]["kb_id"]) for r in got] == [
            (e.start, e.alert.id) for e in priority
        ]


def test_retry_after_is_honoured_and_the_webhook_id_stays_the_same(tmp_path):
    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.respond_with([(503, {"Retry-After": "1"}), (429, {"Retry-After": "1"})])
        config = _config(receiver.url, ["call.ended"])

        async def run() -> list[dict]:
            async with _running(tmp_path, config) as (hub, store, _):
                call = hub.open(Start("C-2"), "stream", None)
                await call.finish()
                await _wait(lambda: len(receiver.received) >= 3)
                await _wait(lambda: Outbox.deliveries(store.db)[0]["status"] == "delivered")
                return Outbox.deliveries(store.db)

        rows = asyncio.run(run())
        times = [r.at for r in receiver.received]
        assert times[1] - times[0] >= 0.9 and times[2] - times[1] >= 0.9  # waited as asked
        assert len(receiver.unique_ids()) == 1  # one event, three attempts, one id
        assert rows[0]["attempts"] == 3 and rows[0]["type"] == "call.ended"
        assert receiver.received[-1].json["data"]["utterances"] == 0


def test_410_disables_the_endpoint_until_enabled_and_the_rest_waits(tmp_path):
    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.respond_with([(410, {})])
        config = _config(receiver.url, ["call.ended"])
        db = tmp_path / "calls.sqlite3"

        async def run() -> None:
            async with _running(tmp_path, config) as (hub, store, _):
                await hub.open(Start("C-3"), "stream", None).finish()
                await _wait(lambda: Outbox.disabled(store.db))
                await hub.open(Start("C-4"), "stream", None).finish()
                await asyncio.sleep(0.5)
                assert len(receiver.received) == 1  # C-4's waits while disabled
                assert _voice("integrations", "enable", "admin-group", "--db", str(db)) == 0
                await _wait(lambda: len(receiver.received) == 2)

        asyncio.run(run())
        assert receiver.received[1].json["data"]["call_id"] == "C-4"


def test_a_dead_letter_is_replayed_by_retry(tmp_path):
    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.respond_with([(500, {}), (500, {})])
        config = _config(receiver.url, ["call.ended"], max_attempts=2)
        db = tmp_path / "calls.sqlite3"

        async def run() -> None:
            async with _running(tmp_path, config) as (hub, store, metrics):
                await hub.open(Start("C-5"), "stream", None).finish()
                await _wait(lambda: Outbox.deliveries(store.db)[0]["status"] == "dead")
                # the counter moves once the write has committed, a moment after the row does
                await _wait(
                    lambda: metrics.deliveries.get(target="admin-group", outcome="dead") == 1
                )
                listed = subprocess.run(
                    [sys.executable, "-m", "voice", "integrations", "deliveries", "--db", str(db),
                     "--status", "dead", "--json"], capture_output=True, text=True, check=True)  # fmt: skip
                row = json.loads(listed.stdout.splitlines()[0])
                assert (row["type"], row["last_code"], row["attempts"]) == ("call.ended", 500, 2)
                assert _voice("integrations", "retry", str(row["id"]), "--db", str(db)) == 0
                await _wait(lambda: Outbox.deliveries(store.db)[0]["status"] == "delivered")

        asyncio.run(run())
        assert len(receiver.received) == 3 and len(receiver.unique_ids()) == 1


def test_dingtalk_and_slack_get_messages_for_people(tmp_path, engine):
    dingtalk_secret = "SEC" + "a1b2" * 16
    with WebhookReceiver(secret=dingtalk_secret, format="dingtalk") as ding, \
            WebhookReceiver(format="slack") as slack:  # fmt: skip
        config = cfg.parse({
            "allow_private_networks": True, "public_url": "https://voice.example.hk",
            "delivery": FAST,
            "webhooks": [
                {"name": "ding", "url": ding.url + "/robot/send?access_token=abc",
                 "secret": dingtalk_secret, "events": ["handoff"], "format": "dingtalk"},
                {"name": "slack", "url": slack.url + "/services/T0/B0/x", "events": ["handoff"],
                 "format": "slack"},
            ]}, {})  # fmt: skip

        async def run() -> None:
            async with _running(tmp_path, config, engine) as (hub, store, _):
                call = hub.open(Start("C-6"), "stream", None)
                for i, text in enumerate(["今日天氣點呀", "我阿媽個貓叫咩名", "你識唔識唱歌"]):
                    await _turn(hub, call, text, 3.0 * i)
                await _wait(lambda: ding.received and slack.received)

        asyncio.run(run())
        request = ding.received[0]
        assert request.verified and request.query["access_token"] == "abc"
        assert request.json["msgtype"] == "markdown"
        assert "C-6" in request.json["markdown"]["text"]
        assert "https://voice.example.hk/console/calls/C-6" in request.json["markdown"]["text"]
        assert "C-6" in slack.received[0].json["text"]


def test_dingtalk_signature_is_the_documented_one():
    """sign = urlencode(base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}"))), recomputed here
    from DingTalk's documentation rather than from our code."""
    from voice.integrations import formats
    from voice.integrations.outbox import Delivery

    secret = "SECabc"
    endpoint = cfg.Endpoint("d", "https://oapi.dingtalk.com/robot/send?access_token=T",
                            ("handoff",), "dingtalk", secret)  # fmt: skip
    delivery = Delivery(1, "msg_1", "handoff", "d", "C", 0, 0.0, {"call_id": "C"}, None)
    request = formats.build(endpoint, delivery, 1700000000.123)
    query = parse_qs(urlsplit(request.url).query)
    expected = base64.b64encode(
        hmac.new(secret.encode(), b"1700000000123\nSECabc", hashlib.sha256).digest()
    ).decode()
    assert query["timestamp"] == ["1700000000123"] and query["sign"] == [expected]


# --- a receiver down across a server restart (real `voice serve`) ---------------------------


def test_a_receiver_down_across_a_server_restart_gets_every_event_once(tmp_path, tiny_model_dir):
    from test_server import _serve

    with WebhookReceiver(secret=SECRET) as receiver:
        receiver.stop()  # down: connection refused
        (tmp_path / "integrations.yaml").write_text(json.dumps({
            "webhooks": [{"name": "ops", "url": receiver.url + "/hook", "secret": SECRET,
                          "events": ["call.ended"]}],
            "allow_private_networks": True,
            "delivery": {"backoff_seconds": 0.2, "max_backoff_seconds": 1.0, "max_attempts": 50},
        }))  # fmt: skip
        args = ("--model", str(tiny_model_dir), "--insecure-no-auth",
                "--integrations", str(tmp_path / "integrations.yaml"))  # fmt: skip
        db = tmp_path / "calls.sqlite3"
        with _serve(tmp_path, *args) as server:
            for call_id in ("R-1", "R-2", "R-3"):
                asyncio.run(_short_call(server.ws, call_id))
            deadline = time.time() + 30
            while time.time() < deadline:  # each has been tried and is waiting to retry
                rows = _deliveries(db)
                if len(rows) == 3 and all(r["attempts"] >= 1 for r in rows):
                    break
                time.sleep(0.2)
            assert {r["status"] for r in rows} == {"pending"}
            metrics = subprocess.run(["curl", "-s", server.http + "/metrics"],
                                     capture_output=True, text=True).stdout  # fmt: skip
            assert 'voice_integration_deliveries_total{outcome="retry",target="ops"}' in metrics
        receiver.start()  # back, while the server is down
        time.sleep(1.0)
        assert receiver.received == []
        with _serve(tmp_path, *args):
            deadline = time.time() + 30
            while len(receiver.unique_ids()) < 3 and time.time() < deadline:
                time.sleep(0.1)
            time.sleep(0.5)
        ids = receiver.unique_ids()
        calls = sorted(r.json["data"]["call_id"] for r in receiver.received)
        assert len(ids) == 3 and calls == ["R-1", "R-2", "R-3"]  # every event, once each
        assert all(r.verified for r in receiver.received)
        assert {r["status"] for r in _deliveries(db)} == {"delivered"}


async def _short_call(ws_base: str, call_id: str) -> None:
    from websockets.asyncio.client import connect

    async with connect(ws_base + "/stream") as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "pcm16",
                                  "sample_rate": 8000}))  # fmt: skip
        await ws.send(np.zeros(1600, dtype=np.int16).tobytes())
        await ws.send(json.dumps({"type": "stop"}))
        with contextlib.suppress(Exception):
            while True:
                message = json.loads(await asyncio.wait_for(ws.recv(), 10))
                if message.get("type") == "end":
                    break


def _deliveries(db: Path) -> list[dict]:
    store = Store(db)
    try:
        return Outbox.deliveries(store.db)
    finally:
        store.close()


# --- the CLI ----------------------------------------------------------------------------------


def _voice(*args: str) -> int:
    return subprocess.run([sys.executable, "-m", "voice", *args], capture_output=True).returncode


def test_cli_lists_endpoints_and_tests_one(tmp_path):
    with WebhookReceiver(secret=SECRET) as receiver:
        path = tmp_path / "integrations.yaml"
        path.write_text(json.dumps({
            "webhooks": [{"name": "ops", "url": receiver.url + "/hook?token=abc", "secret": SECRET,
                          "events": ["handoff"]}],
            "allow_private_networks": True}))  # fmt: skip
        listed = subprocess.run([sys.executable, "-m", "voice", "integrations", "list",
                                 "--integrations", str(path), "--db", str(tmp_path / "none")],
                                capture_output=True, text=True)  # fmt: skip
        assert listed.returncode == 0 and "ops" in listed.stdout
        assert "abc" not in listed.stdout  # a credential in the URL is not printed
        tested = subprocess.run([sys.executable, "-m", "voice", "integrations", "test", "ops",
                                 "--integrations", str(path)], capture_output=True, text=True)  # fmt: skip
        assert tested.returncode == 0, tested.stderr
        assert "delivered (HTTP 204)" in tested.stdout
        assert receiver.received[0].verified
        assert receiver.received[0].json["type"] == "integration.test"
        missing = subprocess.run([sys.executable, "-m", "voice", "integrations", "test", "nope",
                                  "--integrations", str(path)], capture_output=True, text=True)  # fmt: skip
        assert missing.returncode == 2 and "no webhook named nope" in missing.stderr
        bad = tmp_path / "bad.yaml"
        bad.write_text("webhooks:\n  - name: x\n    url: gopher://x\n    events: [handoff]\n")
        refused = subprocess.run([sys.executable, "-m", "voice", "integrations", "list",
                                  "--integrations", str(bad)], capture_output=True, text=True)  # fmt: skip
        assert refused.returncode == 2 and "webhooks[0].url" in refused.stderr


def test_a_caller_the_crm_knows_is_named_in_the_call_record(tmp_path):
    from voice.answer import AnswerEngine
    from voice.answer.crm import SqliteCustomerProvider, create_sample_db

    crm = SqliteCustomerProvider(create_sample_db(tmp_path / "crm.sqlite3"))
    engine = AnswerEngine.from_file(KB, crm=crm)
    config = cfg.parse({}, {})

    async def run() -> tuple[dict, dict, list]:
        async with _running(tmp_path, config, engine) as (hub, store, _):
            known = hub.open(Start("K-1", meta={"customer_id": "C1001", "caller": "91234567"}),
                             "stream", None)  # fmt: skip
            hub.open(Start("K-2", meta={"customer_id": "NOBODY"}), "stream", None)
            events = await _turn(hub, known, "我想查下我張單", 0.0)
            await asyncio.sleep(0.2)
            return store.call("K-1")["meta"], store.call("K-2")["meta"], events

    known, unknown, events = asyncio.run(run())
    assert known["customer"] == {"id": "C1001", "name": "陳大文"} and known["caller"] == "91234567"
    assert "customer" not in unknown
    assert "陳先生" in events[0].suggestions[0].reply  # the answer session knows the caller too
