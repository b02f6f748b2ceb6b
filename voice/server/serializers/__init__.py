"""Carrier wire formats: bytes/JSON in -> typed inbound messages; events out -> wire or None.

Each module knows one carrier's format and nothing else (no sessions, no sockets), and each has
the shape of `Serializer`: `parse(message)` -> Start | Audio | Dtmf | Mark | Stop | Ignored (or
raises ProtocolError), `encode(outbound)` -> the wire message or None when the carrier has no
place for it. voice/server/session.py drives every carrier's calls through that shape.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

# WebSocket close codes (RFC 6455) used for each kind of protocol failure
CLOSE_NORMAL = 1000
CLOSE_PROTOCOL = 1002  # audio before start, start twice
CLOSE_UNSUPPORTED = 1003  # wrong encoding or sample rate
CLOSE_BAD_DATA = 1007  # too many malformed messages
CLOSE_POLICY = 1008  # missing or invalid token, role not allowed
CLOSE_TOO_BIG = 1009  # oversized frame
CLOSE_SERVER_ERROR = 1011
CLOSE_TRY_LATER = 1013  # overloaded: too many calls or ASR queue full
# Private-use codes (RFC 6455 4000-4999) for limits the server sets, numbered after the HTTP status
# that means the same, so clients can tell them apart from errors
CLOSE_IDLE = 4408  # no audio for `idle_timeout_s` after the start (HTTP 408 Request Timeout)
CLOSE_CALL_TOO_LONG = 4413  # the call reached `max_call_seconds` (HTTP 413 Content Too Large)
MAX_CALL_ID = 128  # characters: ids are stored, logged and shown, a carrier's are far shorter


class ProtocolError(ValueError):
    """A message the carrier's format does not allow.

    `fatal` errors end the call with `close_code`; the others are counted under `kind` and the
    message is ignored, except from a client that has not authenticated yet, which is closed with
    `close_code` (1002 unless set).
    """

    def __init__(self, kind: str, message: str, fatal: bool = False, close_code: int = 0):
        super().__init__(message)
        self.kind = kind
        self.fatal = fatal
        self.close_code = close_code or (CLOSE_PROTOCOL if fatal else 0)


@dataclass(frozen=True)
class Start:
    """A call begins: who it is and what its audio is."""

    call_id: str
    encoding: str = "mulaw"
    sample_rate: int = 8_000
    # a credential carried inside the protocol (Twilio customParameters); kept out of repr() so
    # no log line or traceback that prints a Start can show it
    token: str | None = field(default=None, repr=False)
    agent: str | None = None  # the agent the call is assigned to, if the bridge says
    meta: dict[str, Any] = field(default_factory=dict)


MAX_CALLER = 64  # characters of a caller number or customer id kept


def caller_meta(fields: dict) -> dict[str, str]:
    """Who is calling, as the bridge says (`caller`: the number, `customer_id`: the CRM's id), for
    the call's record: short strings only, anything else dropped. Personal data: stored with the
    call (access-controlled), never logged."""
    meta = {}
    for key in ("caller", "customer_id"):
        value = fields.get(key)
        if isinstance(value, str | int) and not isinstance(value, bool):
            text = str(value).strip()
            if 0 < len(text) <= MAX_CALLER:
                meta[key] = text
    return meta


@dataclass(frozen=True)
class Audio:
    """Raw audio bytes in the call's encoding."""

    data: bytes
    sequence: int | None = None
    sample_rate: int | None = None  # set when the frame itself names its rate (AudioSocket)


@dataclass(frozen=True)
class Dtmf:
    """A key the caller pressed."""

    digit: str


@dataclass(frozen=True)
class Mark:
    """A named marker echoed by the carrier (Twilio)."""

    name: str


@dataclass(frozen=True)
class Stop:
    """The caller hung up or the carrier ended the stream."""

    reason: str = "stop"


@dataclass(frozen=True)
class Ignored:
    """A well-formed message with nothing for us (Twilio `connected`, outbound track audio)."""

    kind: str


Inbound = Start | Audio | Dtmf | Mark | Stop | Ignored


@dataclass(frozen=True)
class Started:
    """Outbound: the call was opened under `call_id`."""

    call_id: str


@dataclass(frozen=True)
class Rejected:
    """Outbound: input the server refused, or a limit that ended the stream.

    `fatal` ends the stream with `close_code` (WebSocket); the others were counted and ignored.
    `refused`: the server would not take or keep the call (full, id used, store failed).
    `hangup`: a limit ended a live call, which is hung up rather than failed (its audio is still
    transcribed).
    """

    kind: str
    message: str
    close_code: int = CLOSE_PROTOCOL
    fatal: bool = True
    refused: bool = False
    hangup: bool = False


Outbound = dict[str, Any] | Started | Rejected  # a dict is an event's `to_dict()` form


class Serializer(Protocol):
    """One carrier's wire format (each serializer module has this shape)."""

    PROTOCOL: str  # the carrier's name in metrics, logs and call records
    SENDS_EVENTS: bool  # whether call events are sent back on the stream

    def parse(self, message: str | bytes) -> Inbound:
        """One message (WebSocket message, AudioSocket frame) -> a typed inbound message."""
        ...

    def encode(self, outbound: Outbound) -> str | bytes | None:
        """What to send back for an event, a start or a rejection; None: nothing."""
        ...


__all__ = [
    "Audio", "Dtmf", "Ignored", "Inbound", "Mark", "ProtocolError", "Start", "Stop",
    "Outbound", "Rejected", "Serializer", "Started",
    "CLOSE_NORMAL", "CLOSE_PROTOCOL", "CLOSE_UNSUPPORTED", "CLOSE_BAD_DATA", "CLOSE_POLICY",
    "CLOSE_TOO_BIG", "CLOSE_SERVER_ERROR", "CLOSE_TRY_LATER", "CLOSE_IDLE", "CLOSE_CALL_TOO_LONG",
    "MAX_CALL_ID",
]  # fmt: skip


def json_object(message: str) -> dict[str, Any]:
    """A text message that must be one JSON object, or ProtocolError("bad_json")."""
    try:
        data = json.loads(message)
    except json.JSONDecodeError as exc:
        raise ProtocolError(
            "bad_json", f"malformed JSON: {exc.msg}", close_code=CLOSE_BAD_DATA
        ) from None
    except RecursionError:  # `[[[[...` a few thousand deep: the decoder recurses per level
        raise ProtocolError(
            "bad_json", "JSON nested too deeply", close_code=CLOSE_BAD_DATA
        ) from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "message is not a JSON object", close_code=CLOSE_BAD_DATA)
    return data


def call_id_of(value: Any) -> str:
    """A start message's call id, or a fatal ProtocolError when it is not a short string."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CALL_ID:
        raise ProtocolError("bad_message", f"call id must be a string of 1-{MAX_CALL_ID} "
                            "characters", fatal=True)  # fmt: skip
    return value


def shown(value: Any) -> str:
    """A client's value quoted in an error message: short, since errors are logged and sent back."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
