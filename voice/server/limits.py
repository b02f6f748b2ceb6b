"""Time limits every transport applies to its streams: start, idle and total call length."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from voice.server.config import ServerConfig
from voice.server.serializers import CLOSE_CALL_TOO_LONG, CLOSE_IDLE, CLOSE_PROTOCOL


@dataclass(frozen=True)
class Expired:
    """A limit a stream reached: what to count and log, and the WebSocket close code to end with."""

    kind: str  # metrics/log kind; also the call's stored status when a call was live
    message: str
    close_code: int


class StreamLimits:
    """The deadlines of one stream, whichever carrier brings it.

    Before the start message only `start_timeout_s` runs; after it, `idle_timeout_s` (since the
    last audio) and `max_call_seconds` (since the start). A transport reads with `wait()` as its
    timeout and asks `expired()` before each read. Audio counts only when it carries bytes: empty
    frames neither feed the call nor keep it alive.
    """

    def __init__(self, config: ServerConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.clock = clock
        self.opened = clock()
        self.started: float | None = None
        self.last_audio = self.opened

    def start(self) -> None:
        self.started = self.last_audio = self.clock()

    def audio(self, data: bytes) -> bool:
        """Note audio arriving; False for an empty frame, which the call must not be fed."""
        if not data:
            return False
        self.last_audio = self.clock()
        return True

    def wait(self) -> float:
        """Seconds the next read may block before a limit is due."""
        return max(0.0, self._next()[0] - self.clock())

    def expired(self) -> Expired | None:
        due, limit = self._next()
        return limit if self.clock() >= due else None

    def _next(self) -> tuple[float, Expired]:
        c = self.config
        if self.started is None:
            return self.opened + c.start_timeout_s, Expired(
                "start_timeout", "no start message in time", CLOSE_PROTOCOL
            )
        idle = (self.last_audio + c.idle_timeout_s, Expired(
            "idle_timeout", f"no audio for {c.idle_timeout_s:g} s", CLOSE_IDLE))  # fmt: skip
        too_long = (self.started + c.max_call_seconds, Expired(
            "max_call_length", f"call reached the {c.max_call_seconds:g} s limit",
            CLOSE_CALL_TOO_LONG))  # fmt: skip
        return min(idle, too_long, key=lambda x: x[0])
