"""Batched ASR for all calls: one worker, one model, segments from many calls per encoder call.

Whisper's encoder costs the same for a 2 s and a 30 s window, so decoding the segments of
several calls together keeps latency flat as calls are added. Segments wait in a queue; the
worker takes everything waiting (up to `batch_max`) and decodes it in one `transcribe_batch`
call in a worker thread, so the event loop keeps reading audio.

Back-pressure. The backlog is estimated as (queued + in-flight segments) x the measured
seconds per segment (a moving average over batches). Above half of `max_queue_seconds` the server is
*overloaded*: each call with queued audio gets one warning and `voice_overloaded` is 1. Above
`max_queue_seconds` (or `max_queue_segments`) the server *sheds*: it drops the oldest queued
segment of the call with the most queued audio, repeatedly, until back under the bound. A shed
segment resolves to an empty transcript with `dropped="overload"`; its call reports the
untranscribed span in a warning event (and in the store). Latency therefore stays bounded and
the loss falls on the calls causing the load. Background work (file uploads) is decoded only
when no live segment is waiting and is never shed.

Speculative work (an utterance at a short pause, or still going on, for turn-taking and partial
transcripts) is accepted only while the worker is idle (`idle()`), is decoded after live
segments, and never counts towards the back-pressure: under load, speculation simply stops.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from voice.asr import Transcript
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics
from voice.types import Segment

log = logging.getLogger(__name__)

INITIAL_SECONDS_PER_SEGMENT = 0.5  # cost estimate before the first batch is measured
EMA_WEIGHT = 0.3  # weight of the newest batch in the moving average
OVERLOAD_CLEAR_FRACTION = 0.25  # overload ends when the estimate falls below this x the bound
SHED = Transcript("", dropped="overload")


@dataclass(eq=False)
class Job:
    """One segment waiting for ASR."""

    call_id: str
    segment: Segment
    future: asyncio.Future
    queued_at: float = field(default_factory=time.perf_counter)


class AsrScheduler:
    """Queue + single batching worker in front of a shared Transcriber."""

    def __init__(
        self,
        transcriber,
        config: ServerConfig,
        metrics: ServerMetrics,
        warn: Callable[[str, str], None] = lambda call_id, message: None,
    ):
        self.transcriber = transcriber
        self.config = config
        self.metrics = metrics
        self.warn = warn  # called as warn(call_id, message) when a call is affected by overload
        self.seconds_per_segment = INITIAL_SECONDS_PER_SEGMENT
        self.overloaded = False
        self._in_flight = 0  # live segments in the batch being decoded
        self._live: deque[Job] = deque()
        self._speculative: deque[Job] = deque()
        self._background: deque[Job] = deque()
        self._warned: set[str] = set()
        self._wakeup = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="asr")
        self._task: asyncio.Task | None = None

    # --- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="asr-scheduler")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for job in [*self._live, *self._speculative, *self._background]:
            if not job.future.done():
                job.future.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)

    # --- public -------------------------------------------------------------------------------

    def submit(self, call_id: str, segment: Segment, background: bool = False,
               speculative: bool = False) -> asyncio.Future:  # fmt: skip
        """Queue a segment; the future resolves to its Transcript (SHED if dropped). A
        speculative segment is queued only if `idle()`; check first."""
        job = Job(call_id, segment, asyncio.get_running_loop().create_future())
        queue = self._speculative if speculative else self._background if background else self._live
        queue.append(job)
        self._wakeup.set()
        if not background and not speculative:
            self._apply_back_pressure()
        self._update_gauges()
        return job.future

    @property
    def depth(self) -> int:
        return len(self._live) + len(self._speculative) + len(self._background)

    def idle(self, in_flight: bool = False) -> bool:
        """Nothing queued (and, unless `in_flight`, nothing being decoded): speculative work
        then delays no live segment by more than the batch in flight."""
        return (in_flight or self._in_flight == 0) and not self._live and not self._speculative

    def estimated_seconds(self) -> float:
        """Estimated time to decode the live backlog (queued and in flight) at the measured rate."""
        return (len(self._live) + self._in_flight) * self.seconds_per_segment

    # --- back-pressure ------------------------------------------------------------------------

    def _apply_back_pressure(self) -> None:
        bound = self.config.max_queue_seconds
        estimate = self.estimated_seconds()
        if estimate > bound / 2 and not self.overloaded:
            self.overloaded = True
            log.warning("ASR queue overloaded: %d segments, ~%.1f s", len(self._live), estimate)
        if self.overloaded:
            for job in self._live:
                if job.call_id not in self._warned:
                    self._warned.add(job.call_id)
                    self.warn(job.call_id, "server overloaded: transcripts are delayed")
        while self._live and (
            self.estimated_seconds() > bound or len(self._live) > self.config.max_queue_segments
        ):
            self._shed_one()

    def _shed_one(self) -> None:
        load: dict[str, float] = {}
        for job in self._live:
            load[job.call_id] = load.get(job.call_id, 0.0) + job.segment.duration
        heaviest = max(load, key=load.__getitem__)
        job = next(j for j in self._live if j.call_id == heaviest)
        self._live.remove(job)
        self.metrics.segments_shed.inc()
        log.warning(
            "shed segment %.2f-%.2f of %s (ASR queue over its bound)",
            job.segment.start, job.segment.end, job.call_id, extra={"call_id": job.call_id},
        )  # fmt: skip
        if not job.future.done():
            job.future.set_result(SHED)

    def _update_gauges(self) -> None:
        estimate = self.estimated_seconds()
        if self.overloaded and estimate < self.config.max_queue_seconds * OVERLOAD_CLEAR_FRACTION:
            self.overloaded = False
            self._warned.clear()
            log.info("ASR queue back to normal")
        self.metrics.queue_depth.set(self.depth)
        self.metrics.queue_seconds.set(round(estimate, 3))
        self.metrics.overloaded.set(1 if self.overloaded else 0)

    # --- worker -------------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            if not self.depth:
                self._wakeup.clear()
                continue
            if self.config.batch_wait_ms and len(self._live) < self.config.batch_max:
                await asyncio.sleep(self.config.batch_wait_ms / 1000)
            batch = self._take_batch()
            if not batch:
                continue
            started = time.perf_counter()
            self._in_flight = len(batch)
            for job in batch:
                self.metrics.queue_wait.observe(started - job.queued_at)
            try:
                results = await loop.run_in_executor(
                    self._executor, self.transcriber.transcribe_batch, [j.segment for j in batch]
                )
            except Exception as exc:  # one bad batch must not stop the worker
                self._in_flight = 0
                log.exception("ASR batch of %d failed", len(batch))
                self.metrics.errors.inc(protocol="asr", kind="batch_failed")
                for job in batch:
                    if not job.future.done():
                        job.future.set_exception(exc)
                continue
            elapsed = time.perf_counter() - started
            self._in_flight = 0
            self.metrics.asr_batch_seconds.observe(elapsed)
            self.metrics.batch_size.observe(len(batch))
            per_segment = elapsed / len(batch)
            self.seconds_per_segment += EMA_WEIGHT * (per_segment - self.seconds_per_segment)
            for job, result in zip(batch, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
            self._update_gauges()

    def _take_batch(self) -> list[Job]:
        batch: list[Job] = []
        for queue in (self._live, self._speculative, self._background):
            while queue and len(batch) < self.config.batch_max:
                job = queue.popleft()
                if not job.future.done():  # cancelled by a call that went away
                    batch.append(job)
        if not self.depth:
            self._wakeup.clear()
        self._update_gauges()
        return batch
