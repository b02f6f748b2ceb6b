"""Twilio Media Streams (WebSocket JSON): connected, start, media, mark, dtmf, stop.

Inbound messages follow https://www.twilio.com/docs/voice/media-streams/websocket-messages.
Twilio accepts only `media`, `mark` and `clear` messages back, so call events are not sent on
the stream (`encode` returns None); they reach agents through the event subscriptions.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from voice.server.serializers import (
    CLOSE_UNSUPPORTED,
    MAX_CALL_ID,
    Audio,
    Dtmf,
    Ignored,
    Inbound,
    Mark,
    Outbound,
    ProtocolError,
    Start,
    Stop,
    call_id_of,
    caller_meta,
    json_object,
    shown,
)

PROTOCOL = "twilio"
SENDS_EVENTS = False
MEDIA_ENCODING = "audio/x-mulaw"  # the only encoding Twilio streams
MEDIA_RATE = 8_000
INBOUND_TRACK = "inbound"  # the caller; "outbound" is what Twilio plays to them


def parse(message: str | bytes) -> Inbound:
    """One WebSocket text message from Twilio -> a typed inbound message."""
    if isinstance(message, bytes):
        raise ProtocolError("binary_frame", "Twilio sends JSON text messages only")
    data = json_object(message)
    event = data.get("event")
    if event == "connected":
        return Ignored("connected")
    if event == "start":
        return _start(data)
    if event == "media":
        return _media(data)
    if event == "mark":
        return Mark(str(_obj(data, "mark").get("name", "")))
    if event == "dtmf":
        return Dtmf(str(_obj(data, "dtmf").get("digit", ""))[:1])
    if event == "stop":
        return Stop("stop")
    raise ProtocolError("unknown_event", f"unknown Twilio event {shown(event)}")


def encode(event: Outbound) -> str | None:
    """Twilio streams carry no application events or errors: always None."""
    return None


def _obj(data: dict, key: str) -> dict[str, Any]:
    value = data.get(key)
    if not isinstance(value, dict):
        raise ProtocolError("bad_message", f"`{key}` must be an object")
    return value


def _start(data: dict) -> Start:
    # Every field is checked for its type: the start may come from a client not yet authenticated.
    start = data.get("start")
    if not isinstance(start, dict):
        raise ProtocolError("bad_message", "`start` must be an object", fatal=True)
    call_id = call_id_of(start.get("callSid") or data.get("streamSid") or start.get("streamSid"))
    fmt = start.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise ProtocolError("bad_message", "`mediaFormat` must be an object", fatal=True)
    encoding = fmt.get("encoding", MEDIA_ENCODING)
    rate = fmt.get("sampleRate", MEDIA_RATE)
    if encoding != MEDIA_ENCODING or rate != MEDIA_RATE or fmt.get("channels", 1) != 1:
        raise ProtocolError(
            "bad_format",
            f"unsupported media format {shown(encoding)} {shown(rate)} Hz; Twilio streams "
            "audio/x-mulaw 8000 Hz",
            fatal=True,
            close_code=CLOSE_UNSUPPORTED,
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        params = {}
    tracks = start.get("tracks")
    meta = {
        **caller_meta(params),
        "streamSid": _short(data.get("streamSid") or start.get("streamSid")),
        "accountSid": _short(start.get("accountSid")),
        "tracks": [t for t in tracks if _short(t)] if isinstance(tracks, list) else None,
    }
    token = params.get("token")
    agent = params.get("agent")
    return Start(
        call_id=call_id,
        encoding="mulaw",
        sample_rate=MEDIA_RATE,
        token=str(token) if token else None,
        agent=str(agent) if agent else None,
        meta={k: v for k, v in meta.items() if v},
    )


def _short(value: Any) -> str | None:
    """A Twilio id kept in the call's metadata: short strings only (ids are 34 characters)."""
    return value if isinstance(value, str) and len(value) <= MAX_CALL_ID else None


def _media(data: dict) -> Audio | Ignored:
    media = _obj(data, "media")
    if media.get("track", INBOUND_TRACK) != INBOUND_TRACK:
        return Ignored("outbound_track")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise ProtocolError("bad_message", "media has no payload")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("bad_base64", "media payload is not valid base64") from None
    seq = data.get("sequenceNumber")
    try:
        sequence = int(seq) if seq is not None else None
    except (TypeError, ValueError):
        sequence = None
    return Audio(audio, sequence=sequence)
