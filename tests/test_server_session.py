"""One state machine for every carrier: the same inputs end the same way over Twilio, the raw
stream and AudioSocket (issue 13, "one transport handler"); serializers share one shape."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid

import pytest

from voice.server.auth import Authenticator
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.serializers import (
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    Rejected,
    Started,
    audiosocket,
    rawstream,
    twilio,
)
from voice.server.session import StreamSession
from voice.server.store import Store
from voice.vad import VadOptions

CARRIERS = (twilio, rawstream, audiosocket)
AGENT = {"agent-token": {"role": "agent", "name": "agent-1"}}


class FakeTransport:
    """Hands the session prepared messages, then reports the peer gone; records what it sent."""

    close_codes = True
    disconnects = (ConnectionError,)
    failure = "test transport failed"

    def __init__(self, messages):
        self.messages = list(messages)
        self.sent: list = []
        self.closes: list[int] = []

    async def receive(self):
        return [self.messages.pop(0)] if self.messages else None

    async def send(self, wire) -> bool:
        self.sent.append(wire)
        return True

    async def close(self, code: int, reason: str = "") -> None:
        self.closes.append(code)


def _messages(carrier, call_id: str, token: str | None) -> dict:
    """start, audio, dtmf and stop in the carrier's own wire format."""
    pcm = b"\0\0" * 160
    if carrier is twilio:
        params = {"token": token} if token else {}
        start = {"event": "start", "start": {"callSid": call_id, "customParameters": params}}
        return {
            "start": json.dumps(start),
            "audio": json.dumps(
                {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
            ),  # fmt: skip
            "dtmf": json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}),
            "stop": json.dumps({"event": "stop"}),
        }
    if carrier is rawstream:
        start = {"type": "start", "call_id": call_id, "encoding": "pcm16", "sample_rate": 8000}
        return {
            "start": json.dumps({**start, **({"token": token} if token else {})}),
            "audio": pcm,
            "dtmf": json.dumps({"type": "dtmf", "digit": "5"}),
            "stop": json.dumps({"type": "stop"}),
        }
    return {
        "start": audiosocket.frame(audiosocket.KIND_UUID, uuid.UUID(call_id).bytes),
        "audio": audiosocket.frame(audiosocket.KIND_AUDIO, pcm),
        "dtmf": audiosocket.frame(audiosocket.KIND_DTMF, b"5"),
        "stop": audiosocket.frame(audiosocket.KIND_HANGUP),
    }


def _run(tmp_path, carrier, names, token="agent-token"):
    """Run one session over the named messages; (transport, hub's record of the call)."""
    call_id = str(uuid.UUID(int=7))

    async def go():
        config = ServerConfig(tokens=AGENT, db_path=str(tmp_path / "c.sqlite3"))
        hub = CallHub(config, Store(config.db_path), ServerMetrics(), VadOptions(), None, None)
        wire = _messages(carrier, call_id, token if carrier is not audiosocket else None)
        transport = FakeTransport(wire[n] for n in names)
        auth = None if carrier is audiosocket else Authenticator(config.tokens)
        await StreamSession(hub, carrier, transport, auth).run()
        record = hub.store.summary(call_id)
        await hub.shutdown()
        return transport, record

    return asyncio.run(go())


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.PROTOCOL)
def test_every_carrier_runs_the_same_call_to_completed(tmp_path, carrier):
    transport, record = _run(tmp_path, carrier, ["start", "audio", "dtmf", "audio", "stop"])
    assert record is not None and record["status"] == "completed"
    assert transport.closes[-1] == CLOSE_NORMAL
    started = [w for w in transport.sent if isinstance(w, str) and '"started"' in w]
    assert len(started) == (1 if carrier.SENDS_EVENTS else 0)


@pytest.mark.parametrize("carrier", CARRIERS, ids=lambda c: c.PROTOCOL)
def test_every_carrier_refuses_audio_before_start(tmp_path, carrier):
    transport, record = _run(tmp_path, carrier, ["audio", "start"])
    assert record is None  # never opened
    # unauthenticated WebSocket clients are closed as a policy matter; AudioSocket is trusted
    assert transport.closes[0] == (CLOSE_PROTOCOL if carrier is audiosocket else CLOSE_POLICY)
    if carrier is audiosocket:
        assert transport.sent == [audiosocket.frame(audiosocket.KIND_ERROR, b"\x01")]


@pytest.mark.parametrize("carrier", (twilio, rawstream), ids=lambda c: c.PROTOCOL)
def test_a_websocket_start_without_a_valid_token_is_refused(tmp_path, carrier):
    transport, record = _run(tmp_path, carrier, ["start", "audio"], token="wrong")
    assert record is None and transport.closes[0] == CLOSE_POLICY


def test_serializers_share_one_shape():
    for carrier in CARRIERS:
        assert isinstance(carrier.PROTOCOL, str) and isinstance(carrier.SENDS_EVENTS, bool)
        assert callable(carrier.parse) and callable(carrier.encode)
        assert (
            carrier.encode(Rejected("bad_json", "x", fatal=False)) is None or carrier is rawstream
        )
    assert json.loads(rawstream.encode(Started("C-1"))) == {"type": "started", "call_id": "C-1"}
    assert audiosocket.encode(
        Rejected("idle_timeout", "x", 4408, hangup=True)
    ) == audiosocket.frame(audiosocket.KIND_HANGUP)
    assert audiosocket.encode(Rejected("overloaded", "x", refused=True))[-1] == 2
    assert audiosocket.encode(Rejected("bad_format", "x"))[-1] == 3
    assert audiosocket.encode({"type": "transcript"}) is None
    frame = audiosocket.frame(audiosocket.KIND_DTMF, b"9")
    assert audiosocket.parse(frame).digit == "9"
    assert audiosocket.Reader().frames(frame + frame[:2]) == [frame]
