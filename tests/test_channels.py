"""Text channels and context per customer (issue 18 items 1 and 2): POST /v1/messages, the
WhatsApp Cloud API webhook, the customer's context carried across channels for a window, and the
done-when walk: a WhatsApp message, then a phone call (espeak audio) from the same customer.

Real HTTP requests against the app (Starlette's TestClient); the call's audio goes through the
real /stream WebSocket, VAD and hub; a stand-in transcriber gives each utterance the words that
were synthesised for it, as tests/test_eval_report.py's call mode does."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from starlette.testclient import TestClient

from voice.answer import SAMPLE_KB, AnswerEngine, AnswerOptions, SqliteCustomerProvider
from voice.answer.context import CustomerContext, Topic, is_back_reference
from voice.answer.crm import create_sample_db, customer_by_phone, phone_keys
from voice.asr import Transcript
from voice.integrations import whatsapp
from voice.server import customers
from voice.server.app import create_app
from voice.server.config import ServerConfig
from voice.server.store import Store

pytestmark = pytest.mark.timeout(180)

AGENT = "agent-token-aaaaaaaaaaaa"
AGENT2 = "agent-token-bbbbbbbbbbbb"
SUPERVISOR = "supervisor-token-cccccccc"
AUDITOR = "auditor-token-eeeeeeeeeee"
TOKENS = {
    AGENT: {"role": "agent", "name": "agent-1"},
    AGENT2: {"role": "agent", "name": "agent-2"},
    SUPERVISOR: {"role": "supervisor", "name": "sup-1"},
    AUDITOR: {"role": "auditor", "name": "aud-1"},
}
VERIFY, SECRET = "verify-me-0123456789", "app-secret-abcdefabcdef"
WA_ID = "85291234567"  # C1001 in the sample CRM has phone 91234567
# Unresolved on its own (DEV-001 scores ~0.3 < threshold 0.4 on words and sounds alone) ...
QUESTION = "我部手機啲相傳唔到去新電話"
# ... and the call's first utterance, which names no topic of its own.
BACK_REFERENCE = "我頭先喺WhatsApp問過"


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory) -> AnswerEngine:
    crm = create_sample_db(tmp_path_factory.mktemp("crm") / "crm.db")
    # words and sounds only: no sentence-embedding model, so the scores above are fixed
    return AnswerEngine.from_file(SAMPLE_KB, AnswerOptions(semantic=False),
                                  crm=SqliteCustomerProvider(crm))  # fmt: skip


def _client(tmp: Path, engine, transcriber=None, **config) -> TestClient:
    settings = ServerConfig(tokens=TOKENS, db_path=str(tmp / "calls.sqlite3"), **config)
    app = create_app(settings, transcriber, answer_engine=engine)
    return TestClient(app, follow_redirects=False)


def _wa_body(*messages: dict, statuses: tuple = ()) -> bytes:
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "85230001234", "phone_number_id": "1234567"},
             "contacts": [{"profile": {"name": "陳大文"}, "wa_id": WA_ID}]}  # fmt: skip
    if messages:
        value["messages"] = list(messages)
    if statuses:
        value["statuses"] = list(statuses)
    payload = {"object": "whatsapp_business_account",
               "entry": [{"id": "WABA-1", "changes": [{"field": "messages", "value": value}]}]}  # fmt: skip
    return json.dumps(payload, ensure_ascii=False).encode()


def _wa_text(text: str, wamid: str, sender: str = WA_ID) -> dict:
    return {"from": sender, "id": wamid, "timestamp": str(int(time.time())), "type": "text",
            "text": {"body": text}}  # fmt: skip


def _post_wa(client: TestClient, body: bytes, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json"}
    if signature == "sign":
        headers["X-Hub-Signature-256"] = whatsapp.sign(SECRET, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    return client.post("/integrations/whatsapp", content=body, headers=headers)


def _until(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def _timeline(client: TestClient, customer_id: str) -> dict:
    r = client.get(f"/v1/customers/{customer_id}", headers=_bearer(SUPERVISOR))
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def wa_env(monkeypatch):
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", VERIFY)
    monkeypatch.setenv("WHATSAPP_APP_SECRET", SECRET)


# --- pieces ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("我頭先喺WhatsApp問過", True),
    ("我條先係 WhatsApp 問過", True),  # the fine-tuned model's hearing of the line above
    ("我喺微信問咗", True),
    ("頭先問過你哋", True),
    ("我之前問過呢樣嘢", True),
    ("I asked earlier on WhatsApp", True),
    ("I already messaged you about this", True),
    ("我想查下張單", False),
    ("頭先個師傅冇嚟", False),
    ("how much is my bill", False),
])  # fmt: skip
def test_back_references(text, expected):
    assert is_back_reference(text) is expected


@pytest.mark.parametrize(("number", "customer"), [
    ("91234567", "C1001"), ("+852 9123 4567", "C1001"), ("85291234567", "C1001"),
    ("852-6234-5678", "C1002"), ("99999999", None), ("", None), ("abc", None),
])  # fmt: skip
def test_crm_finds_customers_by_phone_number(engine, number, customer):
    found = customer_by_phone(engine.crm, number)
    assert (found.id if found else None) == customer
    assert customer_by_phone(None, number) is None  # a provider without numbers: nobody


def test_phone_keys():
    assert phone_keys("+852 9123 4567") == ("85291234567", "91234567")
    assert phone_keys("9123 4567") == ("91234567", "85291234567")
    assert phone_keys("+44 20 7946 0958") == ("442079460958",)
    assert phone_keys("n/a") == ()


def test_the_session_carries_context_and_answers_a_back_reference(engine):
    chat = engine.session("wa-1", "C1001", channel="whatsapp")
    first = chat.answer(QUESTION)
    assert not first.resolved and first.suggestions[0].id == "DEV-001"
    context = chat.context()
    assert context.unresolved == 1 and [t.entry_id for t in context.topics] == ["DEV-001"]
    assert context.topics[0].channel == "whatsapp" and context.topics[0].conversation_id == "wa-1"

    call = engine.session("call-1", "C1001", context=context, channel="stream")
    again = call.answer(BACK_REFERENCE)
    assert again.suggestions[0].id == "DEV-001"  # the earlier question
    assert again.handoff is not None  # one unresolved message + one unresolved utterance
    alone = engine.session("call-2", "C1001").answer(BACK_REFERENCE)
    assert alone.handoff is None and all(s.id != "DEV-001" for s in alone.suggestions)


def test_a_back_reference_means_the_last_unresolved_topic():
    def topic(entry: str, resolved: bool) -> Topic:
        return Topic(entry, "c", "q", 0.5, resolved)

    context = CustomerContext("C1", topics=(topic("A", False), topic("B", True)))
    assert context.referred_topic().entry_id == "A"
    assert CustomerContext("C1", topics=(topic("A", True), topic("B", True))).referred_topic(
    ).entry_id == "B"  # fmt: skip
    assert CustomerContext("C1").referred_topic() is None
    many = CustomerContext("C1")
    for i in range(8):
        many = many.with_topic(topic(str(i), True))
    assert [t.entry_id for t in many.topics] == ["3", "4", "5", "6", "7"]  # the newest kept


def test_context_is_kept_for_the_window_then_gone(tmp_path):
    store = Store(tmp_path / "calls.sqlite3")
    try:
        context = CustomerContext("C1", "en", 1, "85321",
                                  (Topic("DEV-001", "手機維修", "q", 0.3, False, "web", "w1", 10.0),),
                                  updated_at=1000.0)  # fmt: skip
        store.transact(customers.save, context, 3600.0)
        assert customers.load(store.db, "C1", 3600.0, now=1000.0 + 3599) == context
        assert customers.load(store.db, "C1", 3600.0, now=1000.0 + 3601) is None  # expired
        later = CustomerContext("C2", updated_at=1000.0 + 3601)
        store.transact(customers.save, later, 3600.0)  # a write deletes expired contexts
        rows = store.db.execute("SELECT customer_id FROM customer_context").fetchall()
        assert [r[0] for r in rows] == ["C2"]
    finally:
        store.close()


def test_retention_forgets_the_timeline_of_expired_calls(tmp_path):
    store = Store(tmp_path / "calls.sqlite3")
    try:
        old = time.time() - 3 * 86400
        for call_id, started in (("old-call", old), ("new-call", time.time())):
            store.open_call(call_id, "whatsapp", None, None, {"customer_id": "C1"}, now=started)
            store.close_call(call_id, "completed")
            store.transact(customers.link, "C1", call_id, "whatsapp", started)
        assert customers.conversations(store.db, "C1") == ["old-call", "new-call"]
        assert store.expire(1) == 1
        assert customers.conversations(store.db, "C1") == ["new-call"]
    finally:
        store.close()


def test_whatsapp_payloads_parse_or_name_the_bad_field():
    body = _wa_body(_wa_text("hi", "wamid.1"), {"from": WA_ID, "id": "wamid.2", "type": "image"},
                    statuses=({"id": "wamid.0", "status": "delivered"},))  # fmt: skip
    parsed = whatsapp.parse(body)
    assert [(m.wa_id, m.message_id, m.text) for m in parsed.messages] == [(WA_ID, "wamid.1", "hi")]
    assert sorted(parsed.ignored) == ["image", "status"]
    bad = {"entry": [{"changes": [{"value": {"messages": [{"type": "text", "id": "w",
                                                           "from": WA_ID}]}}]}]}  # fmt: skip
    with pytest.raises(whatsapp.BadPayload) as err:
        whatsapp.parse(json.dumps(bad).encode())
    assert err.value.field == "entry[0].changes[0].value.messages[0].text"
    with pytest.raises(whatsapp.BadPayload) as err:
        whatsapp.parse(b'{"entry": {}}')
    assert err.value.field == "entry"
    assert whatsapp.verify_signature(SECRET, whatsapp.sign(SECRET, b"x"), b"x") is None
    assert whatsapp.verify_signature(SECRET, whatsapp.sign(SECRET, b"x"), b"y") == "mismatch"
    assert whatsapp.verify_signature(SECRET, None, b"x") == "missing"
    assert whatsapp.verify_signature(SECRET, "md5=00", b"x") == "malformed"


# --- POST /v1/messages ----------------------------------------------------------------------------


def test_a_message_is_answered_stored_and_continued(tmp_path, engine):
    with _client(tmp_path, engine) as client:
        r = client.post("/v1/messages", headers=_bearer(AGENT),
                        json={"channel": "web", "customer_id": "C1002", "text": "我想查下我張單去到邊"})  # fmt: skip
        assert r.status_code == 200, r.text
        reply = r.json()
        conversation = reply["conversation_id"]
        assert conversation.startswith("web-") and len(conversation) > 20  # unguessable
        kinds = [e["type"] for e in reply["events"]]
        assert kinds[0] == "suggestion"
        first = reply["events"][0]
        assert first["resolved"] and first["suggestions"][0]["id"] == "ORD-001"
        assert first["call_id"] == conversation and first["language"] == "yue-Hant-HK"

        again = client.post("/v1/messages", headers=_bearer(AGENT), json={
            "channel": "web", "customer_id": "C1002", "conversation_id": conversation,
            "text": "I want a refund please"})  # fmt: skip
        assert again.status_code == 200 and again.json()["conversation_id"] == conversation
        assert again.json()["events"][0]["language"] == "en"

        record = client.get(f"/calls/{conversation}", headers=_bearer(AGENT)).json()
        assert record["protocol"] == "web" and record["status"] == "live"
        assert record["meta"]["customer_id"] == "C1002" and record["meta"]["channel"] == "web"
        assert record["meta"]["customer"] == {"id": "C1002", "name": "李嘉欣"}
        messages = [e for e in record["events"] if e["type"] == "message"]
        assert [m["text"] for m in messages] == ["我想查下我張單去到邊", "I want a refund please"]
        assert messages[0]["channel"] == "web" and messages[1]["language"] == "en"
        assert [e["type"] for e in record["events"]][:2] == ["message", "suggestion"]
        # another agent's token may not read it; a supervisor may
        assert client.get(f"/calls/{conversation}", headers=_bearer(AGENT2)).status_code == 404
        assert _timeline(client, "C1002")["conversations"][0]["id"] == conversation

        # the conversation belongs to C1002: another customer may not write into it
        r = client.post("/v1/messages", headers=_bearer(AGENT), json={
            "channel": "web", "customer_id": "C1003", "conversation_id": conversation,
            "text": "hello"})  # fmt: skip
        assert r.status_code == 409 and r.json()["field"] == "conversation_id"
        r = client.post("/v1/messages", headers=_bearer(AGENT), json={
            "channel": "wechat", "customer_id": "C1002", "conversation_id": conversation,
            "text": "hello"})  # fmt: skip
        assert r.status_code == 409
    with _client(tmp_path, engine) as client:  # stored as ended by the shutdown
        record = client.get(f"/calls/{conversation}", headers=_bearer(SUPERVISOR)).json()
        assert record["status"] == "server_shutdown" and record["events"][-1]["type"] == "end"
        r = client.post("/v1/messages", headers=_bearer(AGENT), json={
            "channel": "web", "customer_id": "C1002", "conversation_id": conversation,
            "text": "still there?"})  # fmt: skip
        assert r.status_code == 409  # ended: never reopened


GOOD = {"channel": "whatsapp", "customer_id": "C1001", "text": "我想查下張單"}


@pytest.mark.parametrize(("change", "field"), [
    ({"channel": "sms"}, "channel"),
    ({"channel": None}, "channel"),
    ({"customer_id": None}, "customer_id"),
    ({"customer_id": ""}, "customer_id"),
    ({"customer_id": "x" * 65}, "customer_id"),
    ({"customer_id": 1001}, "customer_id"),
    ({"text": ""}, "text"),
    ({"text": "   "}, "text"),
    ({"text": None}, "text"),
    ({"text": 42}, "text"),
    ({"text": "長" * 2001}, "text"),
    ({"conversation_id": "not an id!"}, "conversation_id"),
    ({"conversation_id": 7}, "conversation_id"),
])  # fmt: skip
def test_each_bad_field_is_named(tmp_path, engine, change, field):
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    with _client(tmp_path, engine) as client:
        r = client.post("/v1/messages", headers=_bearer(AGENT), json=body)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and field.split("_")[0] in r.json()["error"]


def test_bad_bodies_and_credentials(tmp_path, engine):
    with _client(tmp_path, engine) as client:
        post = client.post
        assert post("/v1/messages", json=GOOD).status_code == 401
        assert post("/v1/messages", json=GOOD, headers=_bearer("x" * 24)).status_code == 401
        assert post("/v1/messages", json=GOOD, headers=_bearer(AUDITOR)).status_code == 403
        r = post("/v1/messages", content=b"{not json", headers=_bearer(AGENT))
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = post("/v1/messages", json=["text"], headers=_bearer(AGENT))
        assert r.status_code == 400 and r.json()["field"] == "body"
        r = post("/v1/messages", content=b"x" * 40_000, headers=_bearer(AGENT))
        assert r.status_code == 413
        assert client.get("/v1/messages", headers=_bearer(AGENT)).status_code == 405
        assert client.get("/v1/customers/C1001").status_code == 401
        # an agent sees a customer only through its own conversations
        assert client.get("/v1/customers/C1001", headers=_bearer(AGENT)).status_code == 404
        assert post("/v1/messages", json=GOOD, headers=_bearer(AGENT)).status_code == 200
        assert client.get("/v1/customers/C1001", headers=_bearer(AGENT)).status_code == 200
        assert client.get("/v1/customers/C1001", headers=_bearer(AGENT2)).status_code == 404


def test_a_quiet_conversation_ends_and_the_next_message_starts_another(tmp_path, engine):
    with _client(tmp_path, engine, conversation_idle_s=0.3) as client:
        first = client.post("/v1/messages", headers=_bearer(AGENT), json=GOOD).json()
        conversation = first["conversation_id"]

        def ended():
            r = client.get(f"/calls/{conversation}", headers=_bearer(SUPERVISOR)).json()
            return r if r["status"] != "live" else None

        record = _until(ended, 10)
        assert record["status"] == "completed" and record["events"][-1]["type"] == "end"
        assert record["events"][-1]["utterances"] == 1
        second = client.post("/v1/messages", headers=_bearer(AGENT), json=GOOD).json()
        assert second["conversation_id"] != conversation


def test_context_expires_after_the_window(tmp_path, engine):
    db = tmp_path / "calls.sqlite3"
    first = {"channel": "web", "customer_id": "C1004", "text": QUESTION}
    second = {"channel": "wechat", "customer_id": "C1004", "text": BACK_REFERENCE}
    with _client(tmp_path, engine) as client:
        assert client.post("/v1/messages", headers=_bearer(AGENT), json=first).status_code == 200
    with sqlite3.connect(db) as conn:  # the customer last wrote 25 hours ago
        conn.execute("UPDATE customer_context SET updated_at = updated_at - 25 * 3600")
    conn.close()
    with _client(tmp_path, engine) as client:
        events = client.post("/v1/messages", headers=_bearer(AGENT), json=second).json()["events"]
        assert [e["type"] for e in events] == ["suggestion"]  # no carried unresolved turn
        assert all(s["id"] != "DEV-001" for s in events[0]["suggestions"])
        assert _timeline(client, "C1004")["context"]["unresolved"] == 1  # this message alone
    with _client(tmp_path, engine, context_hours=0) as client:  # carry-over switched off
        assert client.post("/v1/messages", headers=_bearer(AGENT), json=first).status_code == 200
        events = client.post("/v1/messages", headers=_bearer(AGENT), json=second).json()["events"]
        assert all(s["id"] != "DEV-001" for s in events[0]["suggestions"])


# --- the WhatsApp webhook -------------------------------------------------------------------------


def test_whatsapp_handshake(tmp_path, engine, wa_env, monkeypatch):
    with _client(tmp_path, engine) as client:
        query = {"hub.mode": "subscribe", "hub.verify_token": VERIFY, "hub.challenge": "1158201444"}
        r = client.get("/integrations/whatsapp", params=query)
        assert r.status_code == 200 and r.text == "1158201444"
        assert r.headers["content-type"].startswith("text/plain")
        bad = client.get("/integrations/whatsapp", params={**query, "hub.verify_token": "nope"})
        assert bad.status_code == 403 and "1158201444" not in bad.text
        assert client.get("/integrations/whatsapp",
                          params={**query, "hub.mode": "unsubscribe"}).status_code == 403  # fmt: skip
        assert client.get("/integrations/whatsapp").status_code == 403
        monkeypatch.delenv("WHATSAPP_VERIFY_TOKEN")
        assert client.get("/integrations/whatsapp", params=query).status_code == 503
        monkeypatch.delenv("WHATSAPP_APP_SECRET")
        assert _post_wa(client, _wa_body(_wa_text("hi", "w1"))).status_code == 503


def test_whatsapp_messages_signed_deduplicated_and_answered(tmp_path, engine, wa_env, caplog):
    with _client(tmp_path, engine) as client:
        body = _wa_body(_wa_text("我想查下張單幾多錢", "wamid.HBgLODUyOTEyMzQ1NjcVAgASGBQ"))
        assert _post_wa(client, body, signature=None).status_code == 401
        assert _post_wa(client, body, signature="sha256=" + "0" * 64).status_code == 403
        assert _post_wa(client, body, signature=whatsapp.sign("other", body)).status_code == 403
        assert _timeline(client, "C1001")["conversations"] == []  # nothing unsigned got in

        statuses = _wa_body(statuses=({"id": "wamid.X", "status": "read", "recipient_id": WA_ID},))
        r = _post_wa(client, statuses)
        assert r.status_code == 200 and r.json()["messages"] == 0

        bad = json.dumps({"entry": [{"changes": [{"value": {"messages": "x"}}]}]}).encode()
        r = _post_wa(client, bad)
        assert r.status_code == 400 and r.json()["field"] == "entry[0].changes[0].value.messages"
        assert _post_wa(client, b"not json").status_code == 400

        for _ in range(2):  # Meta redelivers: answered once
            r = _post_wa(client, body)
            assert r.status_code == 200 and r.json()["messages"] == 1
        conversations = _until(lambda: _timeline(client, "C1001")["conversations"])
        assert len(conversations) == 1
        record = conversations[0]
        assert record["protocol"] == "whatsapp" and record["meta"]["wa_id"] == WA_ID
        time.sleep(0.5)  # the duplicate's task has run by now
        record = client.get(f"/calls/{record['id']}", headers=_bearer(SUPERVISOR)).json()
        messages = [e for e in record["events"] if e["type"] == "message"]
        assert len(messages) == 1 and messages[0]["message_id"].startswith("wamid.")
        suggestion = next(e for e in record["events"] if e["type"] == "suggestion")
        assert suggestion["suggestions"][0]["id"] == "BILL-001"

        unknown = _wa_body(_wa_text("hello", "wamid.other", sender="447700900123"))
        assert _post_wa(client, unknown).status_code == 200
        _until(lambda: _timeline(client, "whatsapp:447700900123")["conversations"])
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for secret in ("我想查下張單幾多錢", WA_ID, "447700900123", SECRET, VERIFY):
        assert secret not in logged


# --- done when: WhatsApp, then a phone call -------------------------------------------------------


class LineTranscriber:
    """Stands in for Whisper: a segment is transcribed as the synthesised line it overlaps most."""

    def __init__(self, lines: list[tuple[float, float, str]]):
        self.lines = lines

    def transcribe_batch(self, segments):
        return [self.transcribe(s) for s in segments]

    def transcribe(self, segment):
        start, end, text = max(self.lines, key=lambda x: min(segment.end, x[1])
                               - max(segment.start, x[0]))  # fmt: skip
        return Transcript(text, language="zh", asr_ms=1.0)


def _call_audio(text: str) -> tuple[bytes, list[tuple[float, float, str]]]:
    """16 kHz PCM16: silence, the espeak-ng line, silence (so the VAD closes the utterance)."""
    from voice.tts import Voice, synthesize

    speech = synthesize(text, Voice("yue")) * 0.5
    lead = np.zeros(8000, np.float32)
    audio = np.concatenate([lead, speech, np.zeros(24000, np.float32)])
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm, [(0.5, 0.5 + speech.size / 16000, text)]


def _phone_call(client: TestClient, call_id: str, caller: str, pcm: bytes) -> list[dict]:
    events = []
    with client.websocket_connect("/stream", headers=_bearer(SUPERVISOR)) as ws:
        ws.send_text(json.dumps({"type": "start", "call_id": call_id, "encoding": "pcm16",
                                 "sample_rate": 16000, "caller": caller}))  # fmt: skip
        for i in range(0, len(pcm), 3200):
            ws.send_bytes(pcm[i : i + 3200])
        ws.send_text(json.dumps({"type": "stop"}))
        while True:
            event = json.loads(ws.receive_text())
            events.append(event)
            if event["type"] == "end":
                return events


def test_whatsapp_then_a_phone_call_continues_the_customer(tmp_path, engine, wa_env):
    pcm, lines = _call_audio(BACK_REFERENCE)
    with _client(tmp_path, engine, LineTranscriber(lines)) as client:
        # 1. The customer (C1001 by their number) asks on WhatsApp; no entry answers it.
        r = _post_wa(client, _wa_body(_wa_text(QUESTION, "wamid.first")))
        assert r.status_code == 200
        context = _until(lambda: _timeline(client, "C1001")["context"])
        assert context["unresolved"] == 1 and context["topics"][0]["entry_id"] == "DEV-001"

        # 2. They phone in (number only: the CRM names them) and say "I asked on WhatsApp".
        events = _phone_call(client, "call-after-wa", "+852 9123 4567", pcm)
        transcripts = [e for e in events if e["type"] == "transcript"]
        assert [e["text"] for e in transcripts] == [BACK_REFERENCE]
        first = next(e for e in events if e["type"] == "suggestion")
        assert first["suggestions"][0]["id"] == "DEV-001"  # the WhatsApp question's entry
        handoffs = [e for e in events if e["type"] == "handoff"]
        assert len(handoffs) == 1 and handoffs[0]["start"] == first["start"]  # escalated at once

        # The same call from a caller without history gets neither.
        control = _phone_call(client, "call-no-history", "+852 5999 0000", pcm)
        suggestion = next(e for e in control if e["type"] == "suggestion")
        assert all(s["id"] != "DEV-001" for s in suggestion["suggestions"])
        assert not [e for e in control if e["type"] == "handoff"]

        # 3. The console's timeline: the WhatsApp conversation, then the call.
        timeline = _timeline(client, "C1001")
        assert timeline["customer"] == {"id": "C1001", "name": "陳大文"}
        assert [c["protocol"] for c in timeline["conversations"]] == ["whatsapp", "stream"]
        call = timeline["conversations"][1]
        assert call["meta"]["customer_id"] == "C1001" and call["meta"]["caller"] == "+852 9123 4567"
        assert timeline["context"]["unresolved"] == 0  # the handoff started a new run
        page = client.get("/console/customers/C1001")
        assert page.status_code == 303  # the console needs a sign-in first


def test_serve_flags_set_the_window_and_the_idle_time():
    from voice.cli import build_parser
    from voice.server.cli import config_from_args

    args = build_parser().parse_args(["serve", "--insecure-no-auth", "--context-hours", "2",
                                      "--conversation-idle", "60"])  # fmt: skip
    config = config_from_args(args)
    assert (config.context_hours, config.conversation_idle_s) == (2.0, 60.0)
    defaults = config_from_args(build_parser().parse_args(["serve", "--insecure-no-auth"]))
    assert (defaults.context_hours, defaults.conversation_idle_s) == (24.0, 1800.0)


def test_a_whatsapp_customer_not_in_the_crm_is_known_by_number_on_the_phone(tmp_path, engine,
                                                                             wa_env):  # fmt: skip
    pcm, lines = _call_audio(BACK_REFERENCE)
    with _client(tmp_path, engine, LineTranscriber(lines)) as client:
        body = _wa_body(_wa_text(QUESTION, "wamid.stranger", sender="85255550000"))
        assert _post_wa(client, body).status_code == 200
        _until(lambda: _timeline(client, "whatsapp:85255550000")["context"])
        events = _phone_call(client, "call-stranger", "5555 0000", pcm)
        first = next(e for e in events if e["type"] == "suggestion")
        assert first["suggestions"][0]["id"] == "DEV-001"
        assert [e["type"] for e in events].count("handoff") == 1
        timeline = _timeline(client, "whatsapp:85255550000")
        assert [c["protocol"] for c in timeline["conversations"]] == ["whatsapp", "stream"]
        assert timeline["customer"] is None


def test_too_many_messages_from_one_customer_are_refused_for_a_while(tmp_path, engine):
    with _client(tmp_path, engine, max_messages_per_minute=2) as client:
        for _ in range(2):
            assert client.post("/v1/messages", headers=_bearer(AGENT), json=GOOD).status_code == 200
        r = client.post("/v1/messages", headers=_bearer(AGENT), json=GOOD)
        assert r.status_code == 429 and 0 < int(r.headers["retry-after"]) <= 60
        other = {**GOOD, "customer_id": "C1002"}  # another customer is not held up
        assert client.post("/v1/messages", headers=_bearer(AGENT), json=other).status_code == 200


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("CHANNELS_MODEL"),
                    reason="CHANNELS_MODEL=models/NAME: a model that hears espeak Cantonese")  # fmt: skip
def test_the_walk_with_a_real_model_hearing_the_call(tmp_path, engine, wa_env):
    """The done-when walk with real decoding instead of the stand-in transcriber (the packaged
    base model does not hear espeak-ng Cantonese; a model fine-tuned on synthetic calls does)."""
    from voice.asr import Transcriber

    pcm, _ = _call_audio(BACK_REFERENCE)
    with _client(tmp_path, engine, Transcriber.load(os.environ["CHANNELS_MODEL"]),
                 max_queue_seconds=120) as client:  # fmt: skip
        assert _post_wa(client, _wa_body(_wa_text(QUESTION, "wamid.real"))).status_code == 200
        _until(lambda: _timeline(client, "C1001")["context"])
        events = _phone_call(client, "call-real-asr", "91234567", pcm)
        heard = [e["text"] for e in events if e["type"] == "transcript"]
        assert heard and is_back_reference(heard[0]), heard
        first = next(e for e in events if e["type"] == "suggestion")
        assert first["suggestions"][0]["id"] == "DEV-001"
        assert [e["type"] for e in events].count("handoff") == 1


@pytest.mark.slow
def test_context_timeline_and_message_ids_on_postgresql(postgres):
    """The same SQL on PostgreSQL (the store's other database): upsert, window, links, dedupe."""
    from voice.server import conversations

    store = Store(postgres())
    try:
        topic = Topic("DEV-001", "手機維修", QUESTION, 0.296, False, "whatsapp", "wa-1", 1000.0)
        first = CustomerContext("C1", "yue-Hant-HK", 1, None, (topic,), updated_at=1000.0)
        store.transact(customers.save, first, 3600.0)
        second = CustomerContext("C1", "en", 0, "85321", (topic,), updated_at=2000.0)
        store.transact(customers.save, second, 3600.0)  # the upsert replaces the row
        assert customers.load(store.db, "C1", 3600.0, now=2500.0) == second
        assert customers.load(store.db, "C1", 3600.0, now=2000.0 + 3601) is None
        store.open_call("wa-1", "whatsapp", None, None, {"customer_id": "C1"})
        store.transact(customers.link, "C1", "wa-1", "whatsapp", 1000.0)
        store.transact(customers.link, "C1", "wa-1", "whatsapp", 1000.0)  # once only
        assert customers.conversations(store.db, "C1") == ["wa-1"]
        assert customers.customer_of(store.db, "wa-1") == "C1" and customers.known(store.db, "C1")
        claim = conversations._claim
        assert store.transact(claim, "whatsapp", "wamid.1", "wa-1", 1000.0) is True
        assert store.transact(claim, "whatsapp", "wamid.1", "wa-1", 1001.0) is False
        assert conversations._seen(store.db, "whatsapp", "wamid.1") == "wa-1"
        store.close_call("wa-1", "completed")
        assert store.expire(0, now=time.time() + 10) == 1
        assert customers.conversations(store.db, "C1") == []
        assert conversations._seen(store.db, "whatsapp", "wamid.1") is None
    finally:
        store.close()
