"""Zendesk two-way sync against the FakeZendesk double: one ticket per call, comments, agents' replies back on the call."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fakes import FakeZendesk
from websockets.sync.client import connect

from voice.integrations.config import IntegrationsConfig, parse
from voice.integrations.outbox import Outbox
from voice.integrations.service import Integrations
from voice.server.app import create_app
from voice.server.calls import CallHub, LiveCall
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.serializers import Start
from voice.server.store import Store
from voice.types import (
    AlertEvent,
    HandoffEvent,
    PriorityAlert,
    Suggestion,
    SuggestionEvent,
    TranscriptEvent,
)
from voice.vad import VadOptions

EMAIL, TOKEN, SECRET = "bot@acme.hk", "zd-api-token-0123456789", "zd-signing-secret-abcdef"
ENV = {"ZENDESK_TOKEN": TOKEN, "ZENDESK_WEBHOOK_SECRET": SECRET}


def _config(zendesk_url: str) -> IntegrationsConfig:
    """The integrations file as a deployment writes it; fast retries for the tests."""
    return parse({
        "allow_private_networks": True,  # the fake listens on loopback
        "zendesk": {"url": zendesk_url, "email": EMAIL, "token_env": "ZENDESK_TOKEN",
                    "webhook_secret_env": "ZENDESK_WEBHOOK_SECRET"},
        "delivery": {"backoff_seconds": 0.05, "max_backoff_seconds": 10, "timeout_seconds": 5,
                     "max_attempts": 6},
    }, ENV)  # fmt: skip


def _turn(hub: CallHub, call: LiveCall, start: float, text: str, resolved: bool) -> None:
    """One caller utterance and the answer engine's suggestion for it."""
    hub.publish(call, TranscriptEvent(call.call_id, start, start + 2, text, 120.0))
    suggestion = Suggestion("B001", "billing", "你好，你張單已經寄出。", 0.81)
    hub.publish(call, SuggestionEvent(call.call_id, start, start + 2, "yue-Hant-HK", resolved,
                                      (suggestion,)))  # fmt: skip


async def _until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what or check}")


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, zendesk_url: str) -> AsyncIterator[CallHub]:
    """A hub over a file store with the integrations started (worker in this loop), as the app
    builds them."""
    service = Integrations(_config(zendesk_url))
    db = tmp_path / "calls.sqlite3"
    store = Store(db, service.outbox)
    metrics = ServerMetrics()
    hub = CallHub(ServerConfig(insecure_no_auth=True, db_path=str(db)), store, metrics,
                  VadOptions(), None, None)  # fmt: skip
    service.start(hub, store, metrics)
    try:
        yield hub
    finally:
        await service.stop()
        await hub.shutdown()
        store.close()


def _posts(fake: FakeZendesk) -> list:
    return [r for r in fake.requests if r.method == "POST"]


# --- outbound: tickets and comments --------------------------------------------------------------


def test_handoff_creates_one_ticket_even_when_the_response_is_lost(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="voice.integrations.zendesk")

    async def run(fake: FakeZendesk) -> list[dict]:
        fake.drop_next_response()  # Zendesk creates the ticket, the answer never arrives
        async with _running(tmp_path, fake.url) as hub:
            call = hub.open(Start("C-100", meta={"customer": {"id": "C1001", "name": "陳大文",
                                                              "email": "tai.man@example.hk"}}),
                            "stream", "agent-1")  # fmt: skip
            _turn(hub, call, 1.0, "我張單點解未寄出", resolved=False)
            _turn(hub, call, 5.0, "我已經等咗兩個禮拜", resolved=False)
            hub.publish(call, HandoffEvent("C-100", "2 unresolved turns", 5.0, 7.0))
            await _until(lambda: len(_posts(fake)) >= 2 and fake.tickets, what="the retried create")
            deliveries = await _until(
                lambda: [d for d in Outbox.deliveries(hub.store.db, target="zendesk")
                         if d["status"] == "delivered"], what="the create delivered")  # fmt: skip
            await call.finish()
            await _until(lambda: any(r.method == "PUT" for r in fake.requests), what="end comment")
            return deliveries

    with FakeZendesk(EMAIL, TOKEN, SECRET) as fake:
        deliveries = asyncio.run(run(fake))
        tickets = list(fake.tickets.values())
        posts = _posts(fake)
        users = fake.users

    assert len(tickets) == 1, "a lost response must not make a second ticket"
    ticket = tickets[0]
    assert ticket["external_id"] == "C-100"
    assert ticket["tags"] == ["voice_call", "voice_handoff"]
    first = ticket["comments"][0]
    assert first["public"] is False  # callers' words stay an internal note
    assert "我張單點解未寄出" in first["body"] and "我已經等咗兩個禮拜" in first["body"]
    assert "billing/B001" in first["body"] and "未解決 Unresolved" in first["body"]
    assert "2 unresolved turns" in first["body"]
    assert users[ticket["requester_id"]]["email"] == "tai.man@example.hk"  # requester from meta
    # both attempts carried the same key and the same bytes; the second was Zendesk's cache
    assert [p.status for p in posts] == [0, 201]
    assert len({p.headers["idempotency-key"] for p in posts}) == 1
    assert posts[0].json == posts[1].json
    assert "(idempotency hit)" in caplog.text
    assert deliveries[0]["attempts"] == 2
    # the end of the call became a comment on the same ticket, not a new ticket
    assert [c["public"] for c in ticket["comments"]] == [False, False]
    assert "通話結束 Call ended" in ticket["comments"][1]["body"]
    assert TOKEN not in caplog.text and "我張單" not in caplog.text


def test_429_waits_retry_after_and_a_later_alert_is_a_comment(tmp_path):
    async def run(fake: FakeZendesk) -> None:
        fake.fail_next(429, times=1, retry_after=1)
        async with _running(tmp_path, fake.url) as hub:
            call = hub.open(Start("C-200"), "stream", "agent-1")
            _turn(hub, call, 1.0, "我想投訴你哋", resolved=False)
            hub.publish(call, HandoffEvent("C-200", "caller asked for a person", 1.0, 3.0))
            # queued while the create still waits: it must follow the create, onto its ticket
            hub.publish(call, TranscriptEvent("C-200", 4.0, 6.0, "有人盜用我張信用卡", 90.0))
            hub.publish(call, AlertEvent("C-200", PriorityAlert("高優先：信用卡盜用", id="F001",
                                                                category="fraud"), 4.0, 6.0))  # fmt: skip
            await _until(lambda: any(r.method == "PUT" for r in fake.requests), what="comment")
            await call.finish()

    with FakeZendesk(EMAIL, TOKEN, SECRET) as fake:
        asyncio.run(run(fake))
        requests = fake.requests
        tickets = list(fake.tickets.values())

    posts = [r for r in requests if r.method == "POST"]
    assert [p.status for p in posts] == [429, 201]
    waited = posts[1].at - posts[0].at
    assert 0.9 <= waited < 3.0, f"the retry came {waited:.2f} s after a Retry-After: 1"
    assert len(tickets) == 1
    ticket = tickets[0]
    put = next(r for r in requests if r.method == "PUT")
    assert put.path == f"/api/v2/tickets/{ticket['id']}.json" and put.status == 200
    assert put.at > posts[1].at
    alert = ticket["comments"][1]
    assert "高優先：信用卡盜用" in alert["body"] and "fraud F001" in alert["body"]
    assert "有人盜用我張信用卡" in alert["body"]  # the turn said since the ticket was made
    assert "有人盜用我張信用卡" not in ticket["comments"][0]["body"]
    assert alert["public"] is False


def test_a_call_ending_unresolved_gets_a_ticket_a_resolved_one_does_not(tmp_path):
    async def run(fake: FakeZendesk) -> None:
        async with _running(tmp_path, fake.url) as hub:
            resolved = hub.open(Start("C-301"), "stream", "agent-1")
            _turn(hub, resolved, 1.0, "我想問下點樣交費", resolved=False)
            _turn(hub, resolved, 5.0, "好，明白", resolved=True)
            await resolved.finish()
            unresolved = hub.open(Start("C-302"), "stream", "agent-1")
            _turn(hub, unresolved, 1.0, "我想問下點樣交費", resolved=True)
            _turn(hub, unresolved, 5.0, "咁我部電話點解冇網絡", resolved=False)
            await unresolved.finish()
            await _until(lambda: fake.tickets, what="a ticket")
            await asyncio.sleep(0.3)  # time enough for a wrong second ticket to show up

    with FakeZendesk(EMAIL, TOKEN, SECRET) as fake:
        asyncio.run(run(fake))
        tickets = list(fake.tickets.values())

    assert [t["external_id"] for t in tickets] == ["C-302"]
    assert tickets[0]["tags"] == ["voice_call", "voice_unresolved"]
    assert "咁我部電話點解冇網絡" in tickets[0]["comments"][0]["body"]


# --- inbound: the webhook on a real server ---------------------------------------------------------


class _Server:
    """The app under uvicorn in a thread; `call_soon` runs code in its event loop."""

    def __init__(self, tmp: Path, integrations: IntegrationsConfig):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = ServerConfig(insecure_no_auth=True, port=self.port, kb_watch_seconds=0,
                              db_path=str(tmp / "calls.sqlite3"))  # fmt: skip
        self.app = create_app(config, None, integrations=integrations)
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port,
                                                    log_config=None, lifespan="on"))  # fmt: skip
        self.http = f"http://127.0.0.1:{self.port}"
        self.ws = f"ws://127.0.0.1:{self.port}"
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread = threading.Thread(target=asyncio.run, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self.loop = asyncio.get_running_loop()
        await self.server.serve()

    def __enter__(self) -> _Server:
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "server did not start"
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(20)

    def call_soon(self, fn: Callable[[], None]) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    @property
    def hub(self) -> CallHub:
        return self.app.state.server.hub


def _events_until(ws, wanted: str, timeout: float = 10.0) -> list[dict]:
    """Messages from an events WebSocket up to the first of type `wanted`."""
    got, deadline = [], time.time() + timeout
    while time.time() < deadline:
        with contextlib.suppress(TimeoutError):
            got.append(json.loads(ws.recv(timeout=0.2)))
            if got[-1]["type"] == wanted:
                return got
    raise AssertionError(f"no {wanted} event; got {[g['type'] for g in got]}")


def _signed(body: bytes, timestamp: str, secret: str = SECRET) -> dict[str, str]:
    signature = base64.b64encode(hmac.new(secret.encode(), timestamp.encode() + body,
                                          hashlib.sha256).digest()).decode()  # fmt: skip
    return {"Content-Type": "application/json", "X-Zendesk-Webhook-Signature": signature,
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
            "X-Zendesk-Webhook-Invocation-Id": str(time.time_ns())}  # fmt: skip


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_agent_reply_in_zendesk_arrives_on_the_call_and_is_stored(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    with FakeZendesk(EMAIL, TOKEN, SECRET) as fake, _Server(tmp_path, _config(fake.url)) as srv:
        fake.webhook_url = f"{srv.http}/integrations/zendesk/webhook"
        with connect(f"{srv.ws}/stream") as carrier:
            carrier.send(json.dumps({"type": "start", "call_id": "C-900", "encoding": "pcm16",
                                     "sample_rate": 16000}))  # fmt: skip
            assert json.loads(carrier.recv(timeout=5))["type"] == "started"
            with connect(f"{srv.ws}/calls/C-900/events") as events:
                # the answer engine gives up: the sync opens a ticket for the live call
                def handoff() -> None:
                    call = srv.hub.calls["C-900"]
                    _turn(srv.hub, call, 1.0, "我要搵真人", resolved=False)
                    srv.hub.publish(call, HandoffEvent("C-900", "caller asked", 1.0, 3.0))

                srv.call_soon(handoff)
                _events_until(events, "handoff")
                deadline = time.time() + 10
                while not fake.tickets or not fake.users or not _ticket_known(srv, "C-900"):
                    assert time.time() < deadline, "no ticket"
                    time.sleep(0.05)
                ticket_id = next(iter(fake.tickets))

                invocation = fake.add_agent_comment(ticket_id, "陳生，我哋今日會處理你張單。",
                                                    author_name="Agent Wong")  # fmt: skip
                got = _events_until(events, "ticket_comment")[-1]
                assert fake.delivery(invocation).statuses == [200]
                assert got["ticket_id"] == ticket_id and got["author"] == "Agent Wong"
                assert got["body"] == "陳生，我哋今日會處理你張單。"

                # Zendesk's retry of the same invocation changes nothing
                assert fake.resend(invocation) == 200
                # our own API user's comment (what this server posted) is not echoed back
                echo = fake.add_agent_comment(ticket_id, "Bot note", author_id=fake.bot_user_id)
                # an end-user's emailed reply is not an agent's
                customer = fake.add_agent_comment(ticket_id, "thanks", author_id=900000000777,
                                                  is_staff=False)  # fmt: skip
                assert fake.delivery(echo).statuses == [200]
                assert fake.delivery(customer).statuses == [200]

                # forged, stale and unsigned requests are refused
                body = fake.delivery(invocation).body
                now = time.time()
                assert fake.send_raw(body, _signed(body, _iso(now), "wrong-secret")) == 401
                assert fake.send_raw(body, _signed(body, _iso(now - 600))) == 401
                assert fake.send_raw(body, _signed(body, _iso(now + 600))) == 401
                assert fake.send_raw(body, {"Content-Type": "application/json"}) == 401
                tampered = body.replace("今日".encode(), "聽日".encode())
                headers = dict(fake.delivery(invocation).headers)
                headers["X-Zendesk-Webhook-Invocation-Id"] = "1"
                assert fake.send_raw(tampered, headers) == 401
                # the same comment under another invocation id (a second webhook) is not re-added
                assert fake.send_raw(body, _signed(body, _iso(now))) == 200
                # a correctly signed body that is not JSON names the problem
                bad = httpx.post(fake.webhook_url, content=b"{nope",
                                 headers=_signed(b"{nope", _iso(now)))  # fmt: skip
                assert bad.status_code == 400 and "JSON" in bad.json()["error"]
                huge = b"{" + b" " * 300_000 + b"}"
                too_big = httpx.post(fake.webhook_url, content=huge,
                                     headers=_signed(huge, _iso(now)))  # fmt: skip
                assert too_big.status_code == 413
            carrier.send(json.dumps({"type": "stop"}))
            with contextlib.suppress(Exception):
                while True:
                    carrier.recv(timeout=5)

        record = httpx.get(f"{srv.http}/calls/C-900", timeout=5).json()
        comments = [e for e in record["events"] if e["type"] == "ticket_comment"]
        assert [(c["body"], c["author"]) for c in comments] == [
            ("陳生，我哋今日會處理你張單。", "Agent Wong")
        ]  # stored with the call, once
    # PDPO: logs name ids, never the reply's words or the signature
    assert "今日會處理" not in caplog.text
    assert fake.delivery(invocation).headers["X-Zendesk-Webhook-Signature"] not in caplog.text


def _ticket_known(srv: _Server, call_id: str) -> bool:
    row = srv.hub.store.db.execute(
        "SELECT ticket_id FROM zendesk_tickets WHERE call_id=?", (call_id,)
    ).fetchone()
    return bool(row and row[0])


def test_webhook_is_not_there_without_a_secret(tmp_path):
    config = parse({"allow_private_networks": True,
                    "zendesk": {"url": "http://127.0.0.1:9", "email": EMAIL,
                                "token_env": "ZENDESK_TOKEN"}}, ENV)  # fmt: skip
    with _Server(tmp_path, config) as srv:
        body = b'{"type": "zen:event-type:ticket.comment_added"}'
        answer = httpx.post(f"{srv.http}/integrations/zendesk/webhook", content=body,
                            headers=_signed(body, _iso(time.time())))  # fmt: skip
        assert answer.status_code == 404
        assert answer.json() == {"error": "not found"}
        big = httpx.post(f"{srv.http}/integrations/zendesk/webhook", content=b"x" * 300_000)
        assert big.status_code == 404  # nothing about the route leaks without a secret
