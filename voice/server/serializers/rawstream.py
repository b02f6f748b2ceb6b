"""Raw WebSocket stream (FreeSWITCH audio fork, SDKs): a JSON start, then binary audio frames.

In: `{"type": "start", "call_id": "...", "encoding": "pcm16|mulaw|alaw", "sample_rate": 8000|16000}`
(optional `token`, `agent`), binary frames of audio, optional `{"type": "dtmf", "digit": "5"}`,
and `{"type": "stop"}` (or closing the socket). Out: each event's JSON (`Event.to_dict()`), and
`{"type": "error", "code": ..., "message": ...}` for rejected input.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from voice.audio import ENCODINGS
from voice.server.serializers import (
    CLOSE_UNSUPPORTED,
    Audio,
    Dtmf,
    Inbound,
    Outbound,
    ProtocolError,
    Rejected,
    Start,
    Started,
    Stop,
    call_id_of,
    caller_meta,
    json_object,
    shown,
)

PROTOCOL = "stream"
SENDS_EVENTS = True  # events, the start and every rejection go back to the client as JSON
RATES = (8_000, 16_000)


def parse(message: str | bytes) -> Inbound:
    """One WebSocket message (text JSON or binary audio) -> a typed inbound message."""
    if isinstance(message, bytes):
        return Audio(message)
    data = json_object(message)
    kind = data.get("type") or data.get("event")
    if kind == "start":
        return _start(data)
    if kind == "stop":
        return Stop("stop")
    if kind == "dtmf":
        return Dtmf(str(data.get("digit", ""))[:1])
    raise ProtocolError("unknown_event", f"unknown message type {shown(kind)}")


def _start(data: dict) -> Start:
    encoding = data.get("encoding", "pcm16")
    rate = data.get("sample_rate", 16_000)
    if encoding not in ENCODINGS:
        raise ProtocolError(
            "bad_format",
            f"unsupported encoding {shown(encoding)}; expected one of {', '.join(ENCODINGS)}",
            fatal=True,
            close_code=CLOSE_UNSUPPORTED,
        )
    if rate not in RATES:
        raise ProtocolError(
            "bad_format",
            f"unsupported sample_rate {shown(rate)}; expected 8000 or 16000",
            fatal=True,
            close_code=CLOSE_UNSUPPORTED,
        )
    call_id = call_id_of(data.get("call_id") or uuid.uuid4().hex)
    token, agent = data.get("token"), data.get("agent")
    return Start(
        call_id=call_id,
        encoding=encoding,
        sample_rate=rate,
        token=str(token) if token else None,
        agent=str(agent) if agent else None,
        meta=caller_meta(data),
    )


def encode(event: Outbound | dict[str, Any]) -> str:
    """An event (its `to_dict()` form), the start or a rejection as the JSON text message."""
    if isinstance(event, Started):
        return json.dumps({"type": "started", "call_id": event.call_id})
    if isinstance(event, Rejected):
        return error(event.kind, event.message)
    return json.dumps(event, ensure_ascii=False)


def error(code: str, message: str) -> str:
    """The JSON text message reporting rejected input."""
    return json.dumps({"type": "error", "code": code, "message": message}, ensure_ascii=False)
