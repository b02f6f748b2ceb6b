"""One ingest stream, whichever carrier brings it: start -> audio/dtmf -> stop, with its limits.

A `StreamSession` owns the state machine every carrier shares; a `Transport` only moves a
carrier's messages (WebSocket messages, AudioSocket frames) and a `Serializer` only knows their
format. The rules, the same for Twilio, the raw stream and AudioSocket:

- before the start only `start_timeout_s` runs; after it, `idle_timeout_s` and `max_call_seconds`
  (limits.py). A limit before the start is fatal; after it, the call is ended as at a hang-up
  (its audio is still transcribed) and then closed with the limit's code;
- audio before the start, a second start and fatal protocol errors end the stream with their close
  code; other malformed messages are counted and ignored, up to `max_bad_messages`;
- a client that has not authenticated is read no further than its start message (carriers with
  no credentials, AudioSocket, are trusted by where they connect from);
- a refused call (server full, id used, store failed) ends the stream with the refusal's code.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from voice.server.audit import audit
from voice.server.auth import Authenticator, Principal
from voice.server.calls import DROPPED, END, CallHub, CallRefused, LiveCall
from voice.server.limits import StreamLimits
from voice.server.serializers import (
    CLOSE_BAD_DATA,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_SERVER_ERROR,
    Audio,
    Dtmf,
    Ignored,
    Inbound,
    ProtocolError,
    Rejected,
    Serializer,
    Start,
    Started,
    Stop,
)

log = logging.getLogger(__name__)

END_WAIT_S = 30.0  # after hang-up, how long the stream waits for the last events to be sent
STOPPED = ("stop", "hangup")  # Stop reasons that mean a normal end ("completed")


class Transport(Protocol):
    """One connection as the session sees it: it moves messages and knows nothing else."""

    close_codes: bool  # whether `close` sends the code (WebSocket) or the carrier has none (TCP)
    disconnects: tuple[type[BaseException], ...]  # what the peer going away raises
    failure: str  # the log message for an unexpected error

    async def receive(self) -> list[str | bytes | ProtocolError] | None:
        """The next messages (whole ones; a framing problem as a ProtocolError); None: gone."""
        ...

    async def send(self, wire: str | bytes) -> bool:
        """Send if the connection is open; False if it is gone or too slow."""
        ...

    async def close(self, code: int, reason: str = "") -> None:
        """End the connection now (WebSocket); a carrier without close codes may wait."""
        ...


class StreamSession:
    """Drives one stream's call: parse, authenticate, open, feed, finish, close."""

    def __init__(self, hub: CallHub, serializer: Serializer, transport: Transport,
                 auth: Authenticator | None = None, principal: Principal | None = None):  # fmt: skip
        """`auth` None: the carrier carries no credentials and its calls are owned by no one."""
        self.hub = hub
        self.config = hub.config
        self.serializer = serializer
        self.transport = transport
        self.protocol = serializer.PROTOCOL
        self.auth = auth
        self.principal = principal
        self.limits = StreamLimits(hub.config)
        self.call: LiveCall | None = None
        self.sender: asyncio.Task | None = None
        self.status = "disconnected"  # the call's stored status when the stream ends
        self.closing = (CLOSE_NORMAL, "")  # the close once the call has ended and its events sent
        self.bad = 0

    @property
    def authenticated(self) -> bool:
        return self.auth is None or self.principal is not None

    async def run(self) -> None:
        """Read until the stream ends; the call is finished and the connection closed after."""
        try:
            await self._loop()
        except self.transport.disconnects:
            pass
        except Exception:
            self.status = "error"
            log.exception(self.transport.failure, extra={"protocol": self.protocol})
            self.hub.metrics.errors.inc(protocol=self.protocol, kind="server_error")
            await self.transport.close(CLOSE_SERVER_ERROR)
        finally:
            if self.call is not None:
                await self.call.finish(self.status)
            if self.sender is not None:
                try:
                    await asyncio.wait_for(self.sender, END_WAIT_S)
                except (TimeoutError, Exception):
                    self.sender.cancel()
            await self.transport.close(*self.closing)

    async def _loop(self) -> None:
        while True:
            if (limit := self.limits.expired()) is not None:
                if self.call is None:
                    await self.reject(Rejected(limit.kind, limit.message, limit.close_code))
                    return
                # ended as at a hang-up: the audio received is transcribed and sent first
                await self.report(Rejected(limit.kind, limit.message, limit.close_code,
                                           hangup=True))  # fmt: skip
                self.status, self.closing = limit.kind, (limit.close_code, limit.message)
                return
            try:
                messages = await asyncio.wait_for(self.transport.receive(), self.limits.wait())
            except TimeoutError:
                continue  # the check above says which limit it was
            if messages is None:
                return
            for message in messages:
                if not await self.handle(message):
                    return

    async def handle(self, message: str | bytes | ProtocolError) -> bool:
        """One message; False when the stream is over."""
        try:
            if isinstance(message, ProtocolError):
                raise message
            return await self.accept(self.serializer.parse(message))
        except ProtocolError as exc:
            if exc.fatal or not self.authenticated:  # no second chances before authentication
                await self.reject(Rejected(exc.kind, str(exc), exc.close_code or CLOSE_PROTOCOL))
                return False
            self.bad += 1
            self.hub.metrics.errors.inc(protocol=self.protocol, kind=exc.kind)
            if (
                wire := self.serializer.encode(Rejected(exc.kind, str(exc), fatal=False))
            ) is not None:
                await self.transport.send(wire)
            if self.bad > self.config.max_bad_messages:
                await self.reject(Rejected("too_many_bad_messages", f"more than "
                                  f"{self.config.max_bad_messages} bad messages", CLOSE_BAD_DATA))  # fmt: skip
                return False
            return True
        except CallRefused as exc:
            await self.reject(Rejected(exc.reason, str(exc), exc.close_code, refused=True))
            return False

    async def accept(self, item: Inbound) -> bool:
        """One parsed message through the state machine; False when the stream is over."""
        if not self.authenticated and not isinstance(item, Start | Ignored):
            # a client that has not authenticated is read no further than its start
            raise ProtocolError("unauthenticated", "send the start message, with its token, first",
                                True, CLOSE_POLICY)  # fmt: skip
        if isinstance(item, Start):
            return await self.start(item)
        if isinstance(item, Audio):
            if self.call is None:
                raise ProtocolError("audio_before_start", "audio before start", True)
            if item.sample_rate is not None:  # the frame names its rate (AudioSocket)
                self.call.set_sample_rate(item.sample_rate)
            if self.limits.audio(item.data):
                self.call.feed(item.data)
        elif isinstance(item, Dtmf) and self.call is not None:
            self.call.dtmf(item.digit)
        elif isinstance(item, Stop):
            self.status = "completed" if item.reason in STOPPED else item.reason
            return False
        return True

    async def start(self, item: Start) -> bool:
        if self.call is not None:
            raise ProtocolError("start_twice", "start sent twice", fatal=True)
        owner = None
        if self.auth is not None:
            if self.principal is None:
                self.principal = self.auth.check(item.token)
            if self.principal is None or not self.principal.can("ingest"):
                if self.principal is None and not item.token:  # bad ones: by auth.check
                    audit("authenticate", "failure", reason="no_token")
                self.hub.metrics.auth_failures.inc(reason="ingest")
                await self.reject(
                    Rejected("unauthorized", "missing or invalid token", CLOSE_POLICY)
                )
                return False
            owner = self.principal.name
        self.call = self.hub.open(item, self.protocol, owner)
        self.limits.start()
        if self.serializer.SENDS_EVENTS:
            sub = self.hub.subscribe(self.call.call_id)
            self.sender = asyncio.create_task(self._send_events(sub))
            await self.transport.send(self.serializer.encode(Started(self.call.call_id)))
        return True

    async def report(self, rejected: Rejected) -> None:
        """Count, log and tell the client (if its carrier has a way) what was rejected."""
        self.hub.metrics.errors.inc(protocol=self.protocol, kind=rejected.kind)
        extra = {"call_id": self.call.call_id if self.call else None, "protocol": self.protocol}
        if self.transport.close_codes:
            extra["code"] = rejected.close_code
        log.warning("%s: %s", rejected.kind, rejected.message, extra=extra)
        if (wire := self.serializer.encode(rejected)) is not None:
            await self.transport.send(wire)

    async def reject(self, rejected: Rejected) -> None:
        """Report, then close with the rejection's code."""
        await self.report(rejected)
        await self.transport.close(rejected.close_code, rejected.message)

    async def _send_events(self, sub) -> None:
        try:
            while True:
                data = await sub.get()
                if data is END or data is DROPPED:
                    return
                wire = self.serializer.encode(data)
                if wire is not None and not await self.transport.send(wire):
                    return
        finally:
            self.hub.unsubscribe(sub)
