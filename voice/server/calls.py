"""Live calls and their subscribers: sessions fed from any carrier, events stored and fanned out.

Every event is stored first (SQLite, in order, with a per-call `seq`), then offered to the
call's subscribers and the all-calls (supervisor) subscribers. Subscriber queues are bounded:
a subscriber that falls `subscriber_queue` events behind is dropped (counted), never waited for.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from voice.audio import AudioError, StreamDecoder
from voice.pipeline import CallSession, StreamFormat
from voice.server.config import ServerConfig
from voice.server.logs import redact
from voice.server.metrics import ServerMetrics
from voice.server.scheduler import AsrScheduler
from voice.server.serializers import CLOSE_TRY_LATER, CLOSE_UNSUPPORTED, ProtocolError, Start
from voice.server.store import Store
from voice.types import Event, Segment, WarningEvent
from voice.vad import VadOptions

log = logging.getLogger("voice")

END = {"type": "_end"}  # sentinel: the stream is over
DROPPED = {"type": "_dropped"}  # sentinel: the subscriber was too slow and is cut off


class CallRefused(Exception):
    """A call that cannot start now (too many calls, duplicate id)."""

    def __init__(self, reason: str, message: str, close_code: int = CLOSE_TRY_LATER):
        super().__init__(message)
        self.reason = reason
        self.close_code = close_code


class Subscription:
    """A bounded queue of event dicts for one reader (WebSocket, SSE or the ingest socket)."""

    def __init__(self, maxsize: int, call_id: str | None = None):
        self.call_id = call_id  # None: every call
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize)
        self.dropped = asyncio.Event()

    def offer(self, data: dict[str, Any]) -> bool:
        """Queue without waiting; on overflow, empty the queue, mark dropped and return False."""
        if self.dropped.is_set():
            return False
        try:
            self.queue.put_nowait(data)
            return True
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(DROPPED)
            self.dropped.set()
            return False

    async def get(self) -> dict[str, Any]:
        return await self.queue.get()


class LiveCall:
    """One call in progress: audio in, segments to the scheduler, events out in order."""

    def __init__(self, hub: CallHub, start: Start, protocol: str, owner: str | None, seq: int):
        self.hub = hub
        self.call_id = start.call_id
        self.protocol = protocol
        self.agent = start.agent
        self.owner = owner
        self.next_seq = seq
        answer = hub.answer_engine.session(self.call_id) if hub.answer_engine else None
        stream = StreamFormat(start.encoding, start.sample_rate)
        self.session = CallSession(self.call_id, None, hub.vad_options, stream, answer)
        self.audio_bytes = 0
        self.dtmf_count = 0
        self._pending: asyncio.Queue[tuple[Segment, asyncio.Future] | None] = asyncio.Queue()
        self._drain = asyncio.get_running_loop().create_task(self._drain_results())
        self._finished = False

    def set_sample_rate(self, rate: int) -> None:
        """Change the stream's rate; allowed only before any audio (AudioSocket frames say it)."""
        if rate == self.session.decoder.sample_rate:
            return
        if self.audio_bytes:
            raise ProtocolError("bad_format", f"sample rate changed to {rate} Hz mid-call", True,
                                CLOSE_UNSUPPORTED)  # fmt: skip
        self.session.decoder = StreamDecoder(self.session.decoder.encoding, rate)

    def feed(self, data: bytes) -> None:
        """Audio bytes in the call's encoding; finished utterances go to the scheduler."""
        try:
            segments = self.session.feed(data)
        except AudioError as exc:
            raise ProtocolError("bad_audio", str(exc)) from None
        self.audio_bytes += len(data)
        for segment in segments:
            self._queue(segment)

    def dtmf(self, digit: str) -> None:
        # Keypad digits may be card numbers or PINs: counted, never stored or logged.
        self.dtmf_count += 1

    async def finish(self, status: str = "completed") -> None:
        """Hang-up (or disconnect): transcribe what is left, publish `end`, close the record."""
        if self._finished:
            return
        self._finished = True
        try:
            for segment in self.session.feed_end():
                self._queue(segment)
        except Exception:
            log.exception("flushing %s failed", self.call_id, extra={"call_id": self.call_id})
        self._pending.put_nowait(None)
        await self._drain
        self.hub.publish(self, self.session.end_event())
        self.hub.close(self, status)

    def _queue(self, segment: Segment) -> None:
        self._pending.put_nowait((segment, self.hub.scheduler.submit(self.call_id, segment)))

    async def _drain_results(self) -> None:
        while (item := await self._pending.get()) is not None:
            segment, future = item
            try:
                transcript = await future
                if transcript.dropped == "overload":
                    self.hub.publish(self, WarningEvent(self.call_id, (
                        f"server overloaded: audio {segment.start:.2f}-{segment.end:.2f} s was not "
                        "transcribed")))  # fmt: skip
                    continue
                events = self.session.complete(segment, transcript)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("segment of %s failed", self.call_id, extra={"call_id": self.call_id})
                self.hub.metrics.errors.inc(protocol=self.protocol, kind="segment_failed")
                self.hub.publish(self, WarningEvent(self.call_id, (
                    f"audio {segment.start:.2f}-{segment.end:.2f} s could not be transcribed")))  # fmt: skip
                continue
            for event in events:
                self.hub.publish(self, event)


class CallHub:
    """All live calls, their subscribers and the store."""

    def __init__(self, config: ServerConfig, store: Store, metrics: ServerMetrics,
                 vad_options: VadOptions, answer_engine=None, transcriber=None):  # fmt: skip
        self.config = config
        self.store = store
        self.metrics = metrics
        self.vad_options = vad_options
        self.answer_engine = answer_engine
        self.scheduler = AsrScheduler(transcriber, config, metrics, warn=self.warn)
        self.calls: dict[str, LiveCall] = {}
        self._call_subs: dict[str, set[Subscription]] = {}
        self._all_subs: set[Subscription] = set()
        metrics.active_calls.read = lambda: len(self.calls)
        metrics.subscribers.read = lambda: (
            len(self._all_subs) + sum(len(s) for s in self._call_subs.values())
        )

    def open(self, start: Start, protocol: str, owner: str | None) -> LiveCall:
        """Start a call; raises CallRefused when the server is full or the id is live."""
        if start.call_id in self.calls:
            self.metrics.calls_refused.inc(reason="duplicate")
            raise CallRefused("duplicate", f"call {start.call_id} is already live", 1008)
        if len(self.calls) >= self.config.max_calls:
            self.metrics.calls_refused.inc(reason="max_calls")
            raise CallRefused(
                "max_calls", f"server is at its limit of {self.config.max_calls} calls"
            )
        if self.scheduler.estimated_seconds() > self.config.max_queue_seconds:
            self.metrics.calls_refused.inc(reason="overloaded")
            raise CallRefused("overloaded", "server overloaded: try again later")
        meta = {**start.meta, "encoding": start.encoding, "sample_rate": start.sample_rate}
        seq = self.store.open_call(start.call_id, protocol, start.agent, owner, meta)
        call = LiveCall(self, start, protocol, owner, seq)
        self.calls[call.call_id] = call
        self.metrics.calls.inc(protocol=protocol)
        log.info("call started", extra={"call_id": call.call_id, "protocol": protocol})
        return call

    def publish(self, call: LiveCall, event: Event) -> None:
        """Store an event, then offer it to the call's and the all-calls subscribers."""
        data = {**event.to_dict(), "seq": call.next_seq}
        call.next_seq += 1
        self.store.add_event(call.call_id, data["seq"], data)
        self.metrics.events.inc(type=data["type"])
        if data["type"] == "transcript":
            self.metrics.transcripts.inc()
            self.metrics.latency.observe(data["latency_ms"] / 1000)
            log.debug("transcript %s", redact(data["text"]), extra={"call_id": call.call_id})
        for sub in [*self._call_subs.get(call.call_id, ()), *self._all_subs]:
            if not sub.offer(data):
                self._drop(sub)

    def warn(self, call_id: str, message: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self.publish(call, WarningEvent(call_id, message))

    def close(self, call: LiveCall, status: str) -> None:
        self.store.close_call(call.call_id, status)
        self.calls.pop(call.call_id, None)
        for sub in self._call_subs.pop(call.call_id, set()):
            sub.offer(END)
        log.info("call ended: %s", status, extra={"call_id": call.call_id, "status": status})

    def subscribe(self, call_id: str | None) -> Subscription:
        sub = Subscription(self.config.subscriber_queue, call_id)
        if call_id is None:
            self._all_subs.add(sub)
        else:
            self._call_subs.setdefault(call_id, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.call_id is None:
            self._all_subs.discard(sub)
        else:
            subs = self._call_subs.get(sub.call_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._call_subs[sub.call_id]

    def call_record(self, call_id: str) -> dict[str, Any] | None:
        """Who a call belongs to (live or stored), without its events."""
        live = self.calls.get(call_id)
        if live is not None:
            return {"id": call_id, "agent": live.agent, "owner": live.owner, "status": "live"}
        rows = self.store.db.execute(
            "SELECT agent, owner, status FROM calls WHERE id=?", (call_id,)
        ).fetchone()
        if rows is None:
            return None
        return {"id": call_id, "agent": rows[0], "owner": rows[1], "status": rows[2]}

    async def shutdown(self) -> None:
        for call in list(self.calls.values()):
            await call.finish("server_shutdown")
        await self.scheduler.stop()

    def _drop(self, sub: Subscription) -> None:
        self.metrics.subscribers_dropped.inc()
        self.unsubscribe(sub)
        log.warning("dropped a slow subscriber", extra={"call_id": sub.call_id})
