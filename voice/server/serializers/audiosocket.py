"""Asterisk AudioSocket (TCP): frames of 1-byte kind, 2-byte big-endian length, payload.

Kinds: 0x00 hang-up, 0x01 UUID (16 bytes: the call id), 0x03 DTMF (one ASCII digit), 0x10 audio
(signed 16-bit little-endian linear PCM, 8 kHz mono; newer Asterisk also sends 0x12 at 16 kHz),
0xff error (optional 1-byte code). A message is one whole frame (`Reader` cuts a byte stream into
them). The protocol has no place for events, so `encode` returns None for them; AudioSocket
calls are followed through the event subscriptions. A fatal rejection is answered with an error
frame (0xff, 1-byte code from ERROR_CODES); a limit that ends a live call, with a hang-up frame.
"""

from __future__ import annotations

import struct
import uuid

from voice.server.serializers import (
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    Audio,
    Dtmf,
    Inbound,
    Outbound,
    ProtocolError,
    Rejected,
    Start,
    Stop,
)

PROTOCOL = "audiosocket"
SENDS_EVENTS = False

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO = 0x10  # slin, 8 kHz
KIND_ERROR = 0xFF
AUDIO_RATES = {0x10: 8_000, 0x11: 12_000, 0x12: 16_000, 0x13: 24_000, 0x14: 32_000,
               0x15: 44_100, 0x16: 48_000, 0x17: 96_000, 0x18: 192_000}  # fmt: skip
SUPPORTED_RATES = (8_000, 16_000)
HEADER = struct.Struct(">BH")  # kind, payload length
ERROR_CODES = {"protocol": 1, "overloaded": 2, "format": 3, "server": 4}  # our error frame codes


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket frame."""
    return HEADER.pack(kind, len(payload)) + payload


def encode(event: Outbound) -> bytes | None:
    """A hang-up or error frame for a fatal rejection; None for the rest (no events on the wire)."""
    if not isinstance(event, Rejected) or not event.fatal:
        return None
    if event.hangup:
        return frame(KIND_HANGUP)
    code = "overloaded" if event.refused else "format" if event.kind == "bad_format" else "protocol"
    return frame(KIND_ERROR, bytes([ERROR_CODES[code]]))


def parse(message: bytes) -> Inbound:
    """One whole frame (header and payload) -> a typed inbound message."""
    if len(message) < HEADER.size:
        raise ProtocolError("bad_message", "frame shorter than its header")
    kind, length = HEADER.unpack_from(message)
    if len(message) != HEADER.size + length:
        raise ProtocolError("bad_message", "frame length does not match its header")
    return parse_frame(kind, bytes(message[HEADER.size :]))


class Reader:
    """Incremental framing: feed bytes as they arrive, get whole frames (or typed messages)."""

    def __init__(self, max_frame_bytes: int = 65_535):
        self.max_frame_bytes = max_frame_bytes
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Inbound | ProtocolError]:
        """Parse every complete frame; problems are returned in order, not raised."""
        out: list[Inbound | ProtocolError] = []
        for message in self.frames(data):
            try:
                out.append(message if isinstance(message, ProtocolError) else parse(message))
            except ProtocolError as exc:
                out.append(exc)
        return out

    def frames(self, data: bytes) -> list[bytes | ProtocolError]:
        """Every complete frame so far, whole; an oversized one is a fatal error, not raised."""
        self._buf += data
        out: list[bytes | ProtocolError] = []
        while len(self._buf) >= HEADER.size:
            kind, length = HEADER.unpack_from(self._buf)
            if length > self.max_frame_bytes:
                out.append(
                    ProtocolError("too_big", f"frame of {length} bytes", True, CLOSE_TOO_BIG)
                )
                self._buf.clear()
                break
            if len(self._buf) < HEADER.size + length:
                break
            out.append(bytes(self._buf[: HEADER.size + length]))
            del self._buf[: HEADER.size + length]
        return out


def parse_frame(kind: int, payload: bytes) -> Inbound:
    """One frame's kind and payload -> a typed inbound message."""
    if kind == KIND_HANGUP:
        return Stop("hangup")
    if kind == KIND_UUID:
        if len(payload) != 16:
            raise ProtocolError("bad_message", "UUID frame must carry 16 bytes", fatal=True)
        return Start(str(uuid.UUID(bytes=payload)), encoding="pcm16", sample_rate=8_000)
    if kind == KIND_DTMF:
        return Dtmf(payload[:1].decode("ascii", "replace"))
    if kind in AUDIO_RATES:
        rate = AUDIO_RATES[kind]
        if rate not in SUPPORTED_RATES:
            raise ProtocolError("bad_format", f"unsupported audio rate {rate} Hz", True,
                                CLOSE_UNSUPPORTED)  # fmt: skip
        return Audio(payload, sample_rate=rate)
    if kind == KIND_ERROR:
        code = payload[0] if payload else 0
        return Stop(f"error:{code}")
    raise ProtocolError("unknown_event", f"unknown AudioSocket frame kind 0x{kind:02x}")
