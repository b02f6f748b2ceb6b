"""The loopback test doubles enforce the outside services' documented behaviour."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime
from urllib.parse import quote_plus

import httpx
import pytest
from fakes import FakeZendesk, WebhookReceiver, zendesk_signature
from fakes.receiver import dingtalk_sign
from standardwebhooks.webhooks import Webhook

EMAIL, TOKEN, ZD_SECRET = "bot@example.com", "tok123", "zd-signing-secret"
WHSEC = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


@pytest.fixture
def receiver():
    with WebhookReceiver() as r:
        yield r


@pytest.fixture
def zendesk(receiver):
    with FakeZendesk(EMAIL, TOKEN, ZD_SECRET, webhook_url=receiver.url + "/zendesk") as z:
        yield z


@pytest.fixture
def api(zendesk):
    with httpx.Client(base_url=zendesk.url, auth=(f"{EMAIL}/token", TOKEN), timeout=5) as client:
        yield client


def ticket_body(text: str = "客人要求回電 please call back", external_id: str = "call-1") -> dict:
    return {"ticket": {"subject": "Callback", "external_id": external_id,
                       "comment": {"body": text, "public": False},
                       "requester": {"name": "陳生", "phone": "+85291234567"}}}  # fmt: skip


# -- Zendesk API ----------------------------------------------------------------------------------


def test_basic_token_auth_required(zendesk):
    for auth in [None, (f"{EMAIL}/token", "wrong"), (EMAIL, TOKEN)]:
        r = httpx.post(zendesk.url + "/api/v2/tickets.json", json=ticket_body(), auth=auth)
        assert r.status_code == 401 and r.json()["error"] == "Couldn't authenticate you"
    assert zendesk.tickets == {}


def test_create_ticket_shape_and_validation(api, zendesk):
    r = api.post("/api/v2/tickets", json=ticket_body())
    assert r.status_code == 201 and "x-idempotency-lookup" not in r.headers
    ticket = r.json()["ticket"]
    assert ticket["status"] == "new" and ticket["external_id"] == "call-1"
    assert ticket["submitter_id"] == zendesk.bot_user_id != ticket["requester_id"]
    assert ticket["url"].endswith(f"/api/v2/tickets/{ticket['id']}.json")
    assert zendesk.users[ticket["requester_id"]]["phone"] == "+85291234567"
    assert zendesk.tickets[ticket["id"]]["comments"][0]["public"] is False

    bad = api.post("/api/v2/tickets.json", json={"ticket": {"subject": "no comment"}})
    assert bad.status_code == 422 and bad.json()["error"] == "RecordInvalid"
    assert api.get("/api/v2/tickets/999").json() == {
        "error": "RecordNotFound",
        "description": "Not found",
    }


def test_idempotency_miss_hit_and_mismatch(api, zendesk):
    key = {"Idempotency-Key": "call-1:ticket"}
    first = api.post("/api/v2/tickets.json", json=ticket_body(), headers=key)
    again = api.post("/api/v2/tickets.json", json=ticket_body(), headers=key)
    assert (first.status_code, first.headers["x-idempotency-lookup"]) == (201, "miss")
    assert (again.status_code, again.headers["x-idempotency-lookup"]) == (201, "hit")
    assert again.json() == first.json() and len(zendesk.tickets) == 1

    other = api.post("/api/v2/tickets.json", json=ticket_body("different"), headers=key)
    assert other.status_code == 400
    assert other.json() == {
        "error": "IdempotentRequestError",
        "description": "Request parameters don't match the given idempotency key",
    }

    zendesk.clock = lambda: time.time() + 2 * 3600 + 1  # keys last two hours
    late = api.post("/api/v2/tickets.json", json=ticket_body(), headers=key)
    assert late.headers["x-idempotency-lookup"] == "miss" and len(zendesk.tickets) == 2


def test_dropped_response_then_retry_hits(api, zendesk):
    zendesk.drop_next_response()
    key = {"Idempotency-Key": "call-2:ticket"}
    with pytest.raises(httpx.TransportError):
        api.post("/api/v2/tickets.json", json=ticket_body(external_id="call-2"), headers=key)
    assert len(zendesk.tickets) == 1  # created even though the client never heard
    retry = api.post("/api/v2/tickets.json", json=ticket_body(external_id="call-2"), headers=key)
    assert retry.status_code == 201 and retry.headers["x-idempotency-lookup"] == "hit"
    assert len(zendesk.tickets) == 1


def test_rate_limit_injection(api, zendesk):
    zendesk.fail_next(429, times=2, retry_after=3)
    answers = [api.post("/api/v2/tickets.json", json=ticket_body()) for _ in range(3)]
    assert [a.status_code for a in answers] == [429, 429, 201]
    assert answers[0].headers["Retry-After"] == "3"
    zendesk.fail_next(503, retry_after=1)
    assert api.get("/api/v2/tickets/1").status_code == 503
    assert [r.status for r in zendesk.requests] == [429, 429, 201, 503]


def test_update_appends_comment(api, zendesk):
    tid = api.post("/api/v2/tickets.json", json=ticket_body()).json()["ticket"]["id"]
    r = api.put(
        f"/api/v2/tickets/{tid}.json",
        json={"ticket": {"status": "open", "comment": {"body": "更新 update", "public": False}}},
    )
    assert r.status_code == 200 and {e["type"] for e in r.json()["audit"]["events"]} == {
        "Comment",
        "Change",
    }
    comments = api.get(f"/api/v2/tickets/{tid}/comments.json").json()["comments"]
    assert [c["body"] for c in comments][-1] == "更新 update"
    assert (
        api.put("/api/v2/tickets/999", json={"ticket": {"comment": {"body": "x"}}}).status_code
        == 404
    )


def test_signed_comment_webhook(api, zendesk, receiver):
    tid = api.post("/api/v2/tickets.json", json=ticket_body()).json()["ticket"]["id"]
    invocation = zendesk.add_agent_comment(tid, "我哋已經安排 arranged", author_name="Mandy")
    assert zendesk.delivery(invocation).statuses == [204]
    got = receiver.wait_for(1)[0]
    ts = got.headers["x-zendesk-webhook-signature-timestamp"]
    assert datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)  # ISO-8601 UTC
    expected = base64.b64encode(hmac.new(ZD_SECRET.encode(), ts.encode() + got.body,
                                         hashlib.sha256).digest()).decode()  # fmt: skip
    assert got.headers["x-zendesk-webhook-signature"] == expected
    assert got.headers["x-zendesk-webhook-invocation-id"] == invocation
    event = got.json
    assert event["type"] == "zen:event-type:ticket.comment_added"
    assert event["detail"]["id"] == str(tid) and event["detail"]["external_id"] == "call-1"
    assert event["event"]["comment"]["author"] == {
        "id": str(zendesk.agent_user_id),
        "is_staff": True,
        "name": "Mandy",
    }
    assert event["subject"] == f"zen:ticket:{tid}"

    assert zendesk.resend(invocation) == 204
    again = receiver.wait_for(2)[1]
    assert (again.body, again.headers) == (got.body, got.headers)

    forged = zendesk.send_raw(got.body, {**got.headers, "x-zendesk-webhook-signature": "AAAA"})
    assert (
        forged == 204 and receiver.wait_for(3)[2].headers["x-zendesk-webhook-signature"] == "AAAA"
    )
    assert zendesk_signature(ZD_SECRET, ts, got.body) == expected


# -- webhook receiver -----------------------------------------------------------------------------


def signed(secret: str, msg_id: str, body: dict, at: datetime | None = None) -> tuple[bytes, dict]:
    content = json.dumps(body).encode()
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(msg_id, at, content.decode())
    return content, {"webhook-id": msg_id, "webhook-timestamp": str(int(at.timestamp())),
                     "webhook-signature": signature, "content-type": "application/json"}  # fmt: skip


def test_standard_receiver_verifies():
    with WebhookReceiver(WHSEC) as receiver:
        content, headers = signed(WHSEC, "msg_1", {"type": "call.ended"})
        assert httpx.post(receiver.url, content=content, headers=headers).status_code == 204
        assert httpx.post(receiver.url, content=content, headers=headers).status_code == 204
        other = "whsec_" + base64.b64encode(b"x" * 32).decode()
        content2, headers2 = signed(other, "msg_2", {"type": "call.ended"})
        assert httpx.post(receiver.url, content=content2, headers=headers2).status_code == 401
        tampered = httpx.post(receiver.url, content=content + b" ", headers=headers)
        assert tampered.status_code == 401
        stale = signed(WHSEC, "msg_3", {}, at=datetime.fromtimestamp(time.time() - 600, UTC))
        assert httpx.post(receiver.url, content=stale[0], headers=stale[1]).status_code == 401
        assert [r.verified for r in receiver.received] == [True, True, False, False, False]
        assert receiver.received[-1].error == "Message timestamp too old"
        assert receiver.unique_ids() == {"msg_1", "msg_2", "msg_3"}
        assert receiver.delivered_ids() == ["msg_1", "msg_1"]


def test_scripted_answers_then_success():
    with WebhookReceiver() as receiver:
        receiver.respond_with([(503, {"Retry-After": "1"}), (429, {"Retry-After": "2"}), (410, {})])
        codes = [httpx.post(receiver.url, json={}).status_code for _ in range(4)]
        assert codes == [503, 429, 410, 204]
        assert [r.status for r in receiver.received] == codes


def test_stop_refuses_then_start_same_port():
    with WebhookReceiver() as receiver, httpx.Client(timeout=2) as client:
        url = receiver.url
        assert client.post(url, json={}).status_code == 204  # leaves a keep-alive connection
        receiver.stop()
        with pytest.raises(httpx.TransportError):
            client.post(url, json={})
        with pytest.raises(httpx.ConnectError):
            httpx.post(url, json={})
        receiver.start()
        assert receiver.url == url and client.post(url, json={}).status_code == 204


def test_dingtalk_and_slack():
    secret = "SEC0123abcd"
    with WebhookReceiver(secret, format="dingtalk") as ding:
        ts = str(int(time.time() * 1000))
        good = f"{ding.url}/robot/send?access_token=t&timestamp={ts}&sign={quote_plus(dingtalk_sign(secret, ts))}"
        r = httpx.post(good, json={"msgtype": "markdown", "markdown": {"title": "t", "text": "x"}})
        assert (r.status_code, r.json()) == (200, {"errcode": 0, "errmsg": "ok"})
        bad = httpx.post(
            f"{ding.url}/robot/send?timestamp={ts}&sign=nope", json={"msgtype": "text"}
        )
        assert bad.status_code == 200 and bad.json()["errcode"] == 310000
        assert [r.verified for r in ding.received] == [True, False]
    with WebhookReceiver(format="slack") as slack:
        r = httpx.post(slack.url, json={"text": "hi"})
        assert (r.status_code, r.text) == (200, "ok")
        assert httpx.post(slack.url, json={}).text == "no_text"
