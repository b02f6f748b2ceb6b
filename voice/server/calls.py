"""Live calls and their subscribers: sessions fed from any carrier, events stored and fanned out.

Every event is stored first (SQLite, in order, with a per-call `seq`), then offered to the
call's subscribers and the all-calls (supervisor) subscribers. Store writes run on one store
thread in the order they are made, so the event loop never waits for the disk and a call's
events keep their order. Subscriber queues are bounded: a subscriber that falls
`subscriber_queue` events behind is dropped (counted), never waited for.

A call id is used once: a start naming an id that is live or stored is refused. A store failure
ends its call (status `store_failed`, logged once): the slot is freed at once, subscribers get the
end of the stream and the carrier's next audio is answered with `CallEnded`. Calls a crash left
live are closed as `interrupted` when the hub starts; with `retention_days`, calls older than
that are deleted at start and every `retention_check_s`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.audio import AudioError, StreamDecoder
from voice.files import private_dir
from voice.pipeline import CallSession, StreamFormat, same_audio
from voice.server import customers, recording
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.server.notify import Listener, Notice
from voice.server.pii import redact
from voice.server.scheduler import AsrScheduler
from voice.server.serializers import (
    CLOSE_POLICY,
    CLOSE_SERVER_ERROR,
    CLOSE_TRY_LATER,
    CLOSE_UNSUPPORTED,
    ProtocolError,
    Start,
)
from voice.server.store import DAY_S, Store
from voice.types import SAMPLE_RATE, Event, PartialEvent, Segment, WarningEvent

if TYPE_CHECKING:
    from voice.integrations.routing import Router
from voice.vad import VadOptions

log = logging.getLogger(__name__)

END = {"type": "_end"}  # sentinel: the stream is over
DROPPED = {"type": "_dropped"}  # sentinel: the subscriber was too slow and is cut off


class CallRefused(Exception):
    """A call that cannot start now (too many calls, an id already used)."""

    def __init__(self, reason: str, message: str, close_code: int = CLOSE_TRY_LATER):
        super().__init__(message)
        self.reason = reason
        self.close_code = close_code


class CallEnded(CallRefused):
    """A live call the server has ended (its events could not be stored): the transport answers
    the carrier's next message by closing with `close_code`, as for a refused start."""


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

    def __init__(self, hub: CallHub, start: Start, protocol: str, owner: str | None):
        self.hub = hub
        self.call_id = start.call_id
        self.protocol = protocol
        self.agent = start.agent
        self.owner = owner
        self.next_seq = 1
        self.store_error: Exception | None = None  # set when the store failed: the call is over
        customer_id = start.meta.get("customer_id")  # the bridge's, or the CRM's by number
        # started from the customer's context on any channel, saved back after each turn
        answer = customers.call_session(hub, self.call_id, customer_id, protocol)
        stream = StreamFormat(start.encoding, start.sample_rate)
        self.session = CallSession(self.call_id, None, hub.vad_options, stream, answer)
        self.audio_bytes = 0
        self.dtmf_count = 0
        self.recorder: recording.CallRecorder | None = (
            None  # opened at the first audio (rate is known)
        )
        self._pending: asyncio.Queue[tuple[Segment, asyncio.Future] | None] = asyncio.Queue()
        # turn-taking: the candidate being decoded ahead of the VAD's end of speech, its future
        self._speculation: tuple[Segment, asyncio.Future] | None = None
        self._partial_at = 0  # stream sample of the open utterance's last partial transcript
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
        if self.store_error is not None:
            raise CallEnded("store_failed", "the call could not be recorded and was ended",
                            CLOSE_SERVER_ERROR)  # fmt: skip
        try:
            segments = self.session.feed(data)
        except AudioError as exc:
            raise ProtocolError("bad_audio", str(exc)) from None
        if self.hub.config.record_dir and data:
            self._record(data)
        self.audio_bytes += len(data)
        for segment in segments:
            self._queue(segment)
        for candidate in self.session.candidates():
            self._speculate(candidate.segment, candidate)
        self._maybe_partial()

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
        if self.recorder is not None:
            seconds = self.recorder.close()
            recording = {**self.recording_meta(), "seconds": round(seconds, 3)}
            self.hub._write(self, self.hub.store.update_meta, self.call_id,
                            {"recording": recording})  # fmt: skip
        await self.hub.close(self, status, self.session.end_event())

    def recording_meta(self) -> dict[str, Any]:
        decoder = self.session.decoder
        return {"file": recording.file_name(self.call_id), "encoding": decoder.encoding,
                "sample_rate": decoder.sample_rate}  # fmt: skip

    def _record(self, data: bytes) -> None:
        """Append the call's audio to its recording, opening it at the first audio; a disk
        problem stops the recording (logged once), never the call."""
        try:
            if self.recorder is None and self.audio_bytes == 0:
                meta = self.recording_meta()
                folder = private_dir(self.hub.config.record_dir)
                self.recorder = recording.CallRecorder(
                    folder / meta["file"], meta["encoding"], meta["sample_rate"])  # fmt: skip
                self.hub._write(self, self.hub.store.update_meta, self.call_id,
                                {"recording": {**meta, "seconds": None}})  # fmt: skip
            if self.recorder is not None:
                self.recorder.write(data)
        except OSError as exc:
            log.error("recording %s stopped: %s", self.call_id, exc.strerror,
                      extra={"call_id": self.call_id})  # fmt: skip
            self.hub.metrics.errors.inc(protocol=self.protocol, kind="recording_failed")
            if self.recorder is not None:
                with contextlib.suppress(OSError):
                    self.recorder.close()
            self.recorder = None
            self.audio_bytes = max(self.audio_bytes, 1)  # do not try to open it again

    def _queue(self, segment: Segment) -> None:
        spec = self._speculation
        if spec is not None and same_audio(spec[0], segment):
            future = spec[1]  # decoded already, or being decoded: the candidate was this audio
            self.hub.metrics.speculation.inc(outcome="reused")
        else:
            future = self.hub.scheduler.submit(self.call_id, segment)
        self._speculation = None
        self._pending.put_nowait((segment, future))

    # --- turn-taking and partial transcripts ---------------------------------------------------

    def _speculate(self, segment: Segment, candidate=None) -> None:
        """Decode an utterance before the VAD has ended it, if the ASR worker is idle: a
        candidate (a short pause) may end the turn at once; anything else becomes a partial."""
        # a candidate may queue behind work in flight; a partial only runs on an idle worker
        if self._finished or not self.hub.scheduler.idle(in_flight=candidate is not None):
            return
        future = self.hub.scheduler.submit(self.call_id, segment, speculative=True)
        if candidate is not None:
            self._speculation = (segment, future)
        future.add_done_callback(lambda done: self._speculated(segment, candidate, done))

    def _speculated(self, segment: Segment, candidate, done: asyncio.Future) -> None:
        if self._finished or done.cancelled() or done.exception() is not None:
            return
        transcript = done.result()
        if candidate is not None:
            committed = self.session.turn_over(candidate, transcript)
            if committed:
                self.hub.metrics.speculation.inc(outcome="committed")
                self._speculation = None
                for final in committed:  # the candidate's audio: this decode is its transcript
                    self._pending.put_nowait((final, done))
                return
        still_open = self.session.segmenter.open_span()
        if transcript.text and still_open and still_open[0] == round(segment.start * SAMPLE_RATE):
            self.hub.metrics.speculation.inc(outcome="partial")
            self.hub.publish_partial(self, PartialEvent(
                self.call_id, round(segment.start, 3), round(segment.end, 3), transcript.text))  # fmt: skip

    def _maybe_partial(self) -> None:
        """Every `partial_ms` of an utterance still going on, decode it so far (worker idle)."""
        every = self.hub.config.partial_ms * SAMPLE_RATE // 1000
        span = self.session.segmenter.open_span()
        if not every or span is None:
            self._partial_at = 0
            return
        start, reached = span
        if reached - max(self._partial_at, start) >= every and self.hub.scheduler.idle():
            self._partial_at = reached
            self._speculate(self.session.segmenter.open_segment())

    async def _drain_results(self) -> None:
        while (item := await self._pending.get()) is not None:
            segment, future = item
            span = f"{segment.start:.2f}-{segment.end:.2f} s"
            try:
                transcript = await future
                if transcript.dropped == "overload":
                    self.hub.publish(self, WarningEvent(self.call_id, (
                        f"server overloaded: audio {span} was not transcribed")))  # fmt: skip
                    continue
                event = self.session.transcript_event(segment, transcript)
            except asyncio.CancelledError:
                raise
            except Exception:
                self._failed("segment_failed", f"audio {span} could not be transcribed")
                continue
            if event is None:
                continue
            # the agent sees the words before the answer engine (pitch, search) has run, and the
            # engine runs in a thread so other calls' audio and events keep flowing meanwhile
            self.hub.publish(self, event)
            # an overloaded server skips the voice's pitch analysis (about a quarter of an utterance's
            # CPU beside the ASR), as it stops speculating: the words still set the tone
            voice = not self.hub.scheduler.overloaded
            try:
                events = await asyncio.to_thread(self.session.answer_events, event, segment, voice)
            except Exception:
                self._failed("answer_failed", f"no suggestion for {span}: the answer engine failed")
                continue
            for answer_event in events:
                self.hub.publish(self, answer_event)
            for referral in self.hub.route(self, events):
                self.hub.publish(self, referral)

    def _failed(self, kind: str, message: str) -> None:
        log.exception("%s: %s", self.call_id, message, extra={"call_id": self.call_id})
        self.hub.metrics.errors.inc(protocol=self.protocol, kind=kind)
        self.hub.publish(self, WarningEvent(self.call_id, message))


class CallHub:
    """All live calls, their subscribers and the store."""

    def __init__(self, config: ServerConfig, store: Store, metrics: ServerMetrics,
                 vad_options: VadOptions, answer_engine=None, transcriber=None,
                 router: Router | None = None):  # fmt: skip
        self.config = config
        self.router = router  # referral rules (integrations), or None
        self.on_stored: Callable[[str], None] | None = None  # told each stored event's type
        self.store = store
        self.metrics = metrics
        self.vad_options = vad_options
        self.answer_engine = answer_engine
        self.scheduler = AsrScheduler(transcriber, config, metrics, warn=self.warn)
        self.calls: dict[str, LiveCall] = {}
        self._call_subs: dict[str, set[Subscription]] = {}
        self._all_subs: set[Subscription] = set()
        # Calls live on other servers sharing the store (PostgreSQL): the last seq offered here.
        self._remote_seqs: dict[str, int] = {}
        self._listener: Listener | None = None
        # One thread does every store write, first in first out: a call's events keep their order.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._expiry: asyncio.Task | None = None
        metrics.active_calls.read = lambda: len(self.calls)
        metrics.subscribers.read = lambda: (
            len(self._all_subs) + sum(len(s) for s in self._call_subs.values())
        )
        self._tidy_store()
        if store.shared:
            self._listener = Listener(store.engine, store.instance, self._remote_notice,
                                      asyncio.get_running_loop())  # fmt: skip
            self._listener.start()

    def open(self, start: Start, protocol: str, owner: str | None) -> LiveCall:
        """Start a call; raises CallRefused when the server is full or the id was ever used."""
        if start.call_id in self.calls or self.store.summary(start.call_id) is not None:
            # Never reopened, whoever asks: a reused id would be shown the earlier call's events.
            self.metrics.calls_refused.inc(reason="duplicate")
            raise CallRefused("duplicate", f"call id {start.call_id} is already in use; call ids "
                              "are never reused", CLOSE_POLICY)  # fmt: skip
        audio_calls = sum(isinstance(c, LiveCall) for c in self.calls.values())  # not chats
        if audio_calls >= self.config.max_calls:
            self.metrics.calls_refused.inc(reason="max_calls")
            raise CallRefused(
                "max_calls", f"server is at its limit of {self.config.max_calls} calls"
            )
        if self.scheduler.estimated_seconds() > self.config.max_queue_seconds:
            self.metrics.calls_refused.inc(reason="overloaded")
            raise CallRefused("overloaded", "server overloaded: try again later")
        start = customers.identified(start, getattr(self.answer_engine, "crm", None),
                                     self.store.db)  # fmt: skip
        meta = {**start.meta, "encoding": start.encoding, "sample_rate": start.sample_rate}
        if customer := self._customer(start.meta.get("customer_id")):
            meta["customer"] = customer  # for people reading the record (a ticket's requester)
        call = LiveCall(self, start, protocol, owner)
        # Stays in `calls` until its end is stored, so the id is taken in memory or in the store.
        self.calls[call.call_id] = call
        self._write(call, self.store.open_call, call.call_id, protocol, start.agent, owner, meta)
        if customer_id := start.meta.get("customer_id"):  # the customer's timeline
            self._write(call, self.store.transact, customers.link, customer_id, call.call_id,
                        protocol, time.time())  # fmt: skip
        self.metrics.calls.inc(protocol=protocol)
        log.info("call started", extra={"call_id": call.call_id, "protocol": protocol})
        return call

    def _customer(self, customer_id: str | None) -> dict[str, str] | None:
        """Who the CRM says the caller is, by the id the bridge sent; None if unknown."""
        crm = getattr(self.answer_engine, "crm", None)
        found = crm.customer(customer_id) if crm is not None and customer_id else None
        return None if found is None else {"id": found.id, "name": found.name}

    def publish_partial(self, call: LiveCall, event: PartialEvent) -> None:
        """Offer a partial transcript to the call's and the all-calls subscribers; not stored
        (the utterance's transcript replaces it) and without a `seq`."""
        if call.store_error is not None:
            return
        data = event.to_dict()
        self.metrics.events.inc(type=data["type"])
        self._offer(call.call_id, data)

    def publish(self, call: LiveCall, event: Event) -> None:
        """Store an event, then offer it to the call's and the all-calls subscribers."""
        if call.store_error is not None:
            return  # the call is over: nothing more is recorded or sent
        data, stored = self._store_event(call, event)
        stored.add_done_callback(lambda _: self._fan_out(call, data))

    def route(self, call: LiveCall, events: list[Event]) -> list[Event]:
        """The referral events a turn's answer events call for (none without routing rules)."""
        if self.router is None or not events:
            return []
        return self.router.after_turn(call.call_id, events)

    async def inject(self, call_id: str, event: Event) -> bool:
        """Add an event from outside the audio (a ticket reply, a referral's breach) to a call:
        published to a live call's subscribers, appended to a finished call's record. False if
        the call is unknown."""
        live = self.calls.get(call_id)
        if live is not None:
            self.publish(live, event)
            return True
        if self.store.summary(call_id) is None:
            return False
        data = event.to_dict()
        await self.run_write(self.store.append_event, call_id, data)
        self.metrics.events.inc(type=data["type"])
        if self.on_stored is not None:
            self.on_stored(data["type"])
        for sub in self._all_subs:  # supervisors see it; the call's own streams have ended
            if not sub.offer(data):
                self._drop(sub)
        return True

    def run_write(self, write: Callable[..., Any], *args) -> asyncio.Future:
        """Run a store write on the store thread, after those queued before it."""
        return asyncio.get_running_loop().run_in_executor(self._writer, write, *args)

    def warn(self, call_id: str, message: str) -> None:
        call = self.calls.get(call_id)
        if call is not None:
            self.publish(call, WarningEvent(call_id, message))

    async def close(self, call: LiveCall, status: str, last: Event) -> None:
        """Store the last event and the call's status, free its slot, then send the last event:
        a client that reads it may start its next call at once."""
        if call.store_error is not None:
            return  # _store_failed has released it
        data, _ = self._store_event(call, last)
        await asyncio.wait([self._write(call, self.store.close_call, call.call_id, status)])
        if call.store_error is not None:
            return  # one of these writes failed: _store_failed has released it
        self._release(call, data)
        log.info("call ended: %s", status, extra={"call_id": call.call_id, "status": status})

    def follow(self, call_id: str) -> Subscription | None:
        """Subscribe to a call live here or, on a shared store, on another server; None if the
        call is not live. Read its stored events after this, with no await in between."""
        if call_id in self.calls:
            return self.subscribe(call_id)
        if not self.store.shared:
            return None
        # Live in the store now, so its end is committed later and that notice comes after this.
        summary = self.store.summary(call_id)
        if summary is None or summary["status"] != "live":
            return None
        return self.subscribe(call_id)

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
        return self.store.summary(call_id)

    async def shutdown(self) -> None:
        for call in list(self.calls.values()):
            await call.finish("server_shutdown")
        await self.scheduler.stop()
        if self._expiry is not None:
            self._expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._expiry
        self._writer.shutdown(wait=True)  # the store is closed next: let the last write finish
        if self._listener is not None:
            await asyncio.to_thread(self._listener.stop)

    # --- store --------------------------------------------------------------------------------

    def _write(self, call: LiveCall, write: Callable[..., None], *args) -> asyncio.Future:
        """Run a store write on the store thread after those queued before it. If it fails, the
        call ends; callbacks added to the returned future run after that."""

        def check(done: asyncio.Future) -> None:
            if not done.cancelled() and done.exception() is not None:
                self._store_failed(call, done.exception())

        future = self.run_write(write, *args)
        future.add_done_callback(check)
        return future

    def _store_failed(self, call: LiveCall, error: BaseException) -> None:
        """End a call whose write failed: free its slot now, log once, try to mark it ended."""
        if call.store_error is not None:
            return  # already ended; its later writes fail or are moot
        call.store_error = error
        self.metrics.errors.inc(protocol=call.protocol, kind="store_failed")
        log.error("storing call %s failed, call ended: %s", call.call_id, error, exc_info=error,
                  extra={"call_id": call.call_id, "status": "store_failed"})  # fmt: skip
        self._release(call)
        # If this fails too, the row stays `live` and the next start marks it `interrupted`.
        self._write(call, self.store.close_call, call.call_id, "store_failed")

    def _release(self, call: LiveCall, last: dict[str, Any] | None = None) -> None:
        """Free the call's slot, send its last event (if stored) and end its subscribers' streams."""
        if self.calls.get(call.call_id) is call:
            del self.calls[call.call_id]
        if last is not None:
            self._fan_out(call, last)
        for sub in self._call_subs.pop(call.call_id, set()):
            sub.offer(END)

    def _store_event(self, call: LiveCall, event: Event) -> tuple[dict[str, Any], asyncio.Future]:
        """Number the call's next event and queue its write."""
        data = {**event.to_dict(), "seq": call.next_seq}
        call.next_seq += 1
        return data, self._write(call, self.store.add_event, call.call_id, data["seq"], data)

    def _fan_out(self, call: LiveCall, data: dict[str, Any]) -> None:
        """Offer a stored event to the call's and the all-calls subscribers."""
        if call.store_error is not None:
            return  # not stored, or the call failed before: its subscribers were sent the end
        self.metrics.events.inc(type=data["type"])
        if self.on_stored is not None:
            self.on_stored(data["type"])
        if data["type"] == "transcript":
            self.metrics.transcripts.inc()
            self.metrics.latency.observe(data["latency_ms"] / 1000)
            log.debug("transcript %s", redact(data["text"]), extra={"call_id": call.call_id})
        self._offer(call.call_id, data)

    def _tidy_store(self) -> None:
        """At start, before any call: close calls an earlier run left live, delete expired ones
        and schedule the next expiry."""
        if self.config.record_dir:  # recordings of calls a crash cut off: fix their headers
            for _, name in self.store.recordings("status='live'"):
                path = Path(self.config.record_dir) / name
                if path.exists() and recording.repair(path):
                    log.warning("repaired the recording of a call cut off by a crash: %s", name)
        if interrupted := self.store.interrupt_live():
            log.warning("%d calls left live by an earlier run closed as interrupted", interrupted,
                        extra={"status": "interrupted"})  # fmt: skip
        if self.config.retention_days:
            self._expire()
            self._expiry = asyncio.get_running_loop().create_task(self._expire_every())

    async def _expire_every(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.config.retention_check_s)
            try:
                await loop.run_in_executor(self._writer, self._expire)
            except Exception:  # a locked or full disk now: try again next time
                log.exception("deleting expired calls failed")

    def _expire(self) -> None:
        now = time.time()
        cutoff = now - self.config.retention_days * DAY_S
        files = self.store.recordings(f"id IN ({Store.EXPIRED})", (cutoff,))
        if deleted := self.store.expire(self.config.retention_days, now):
            log.info("deleted %d calls older than %s days", deleted, self.config.retention_days)
        if files and self.config.record_dir:
            folder = Path(self.config.record_dir)
            for _, name in files:
                (folder / name).unlink(missing_ok=True)
            log.info("deleted %d recordings with their calls", len(files))

    def _remote_notice(self, notice: Notice | None) -> None:
        """Another server stored an event of a call or ended it (shared store): offer the event
        to this server's subscribers, end the call's streams. None: the listener (re)connected
        and may have missed notices, so the calls followed here catch up from the store."""
        if notice is None:
            for call_id in list(self._remote_seqs):
                self._offer_remote(call_id)
                if (self.store.summary(call_id) or {}).get("status") != "live":
                    self._end_remote(call_id)
            return
        if notice.seq is not None:
            self._offer_remote(notice.call_id, notice.seq - 1)
        if notice.ended:
            self._offer_remote(notice.call_id)
            self._end_remote(notice.call_id)

    def _offer(self, call_id: str, data: dict[str, Any]) -> None:
        """Offer an event to the call's and the all-calls subscribers; drop any that overflow."""
        for sub in [*self._call_subs.get(call_id, ()), *self._all_subs]:
            if not sub.dropped.is_set() and not sub.offer(data):
                self._drop(sub)

    def _offer_remote(self, call_id: str, before: int | None = None) -> None:
        """Offer another server's stored events of a call, from the first not offered here yet
        (from after `before` for a call not followed yet), in order, to this server's call and
        all-calls subscribers."""
        last = self._remote_seqs.get(call_id, before)
        if last is None or not (self._all_subs or self._call_subs.get(call_id)):
            return
        for data in self.store.events(call_id, after_seq=last):
            last = data["seq"]
            self._offer(call_id, data)
        self._remote_seqs[call_id] = last

    def _end_remote(self, call_id: str) -> None:
        self._remote_seqs.pop(call_id, None)
        for sub in self._call_subs.pop(call_id, set()):
            sub.offer(END)

    def _drop(self, sub: Subscription) -> None:
        self.metrics.subscribers_dropped.inc()
        self.unsubscribe(sub)
        log.warning("dropped a slow subscriber", extra={"call_id": sub.call_id})
