"""A call session: audio chunks in (any supported encoding and rate), typed events out."""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from voice.asr import Transcriber, Transcript
from voice.audio import StreamDecoder, float_to_pcm16, probe, read_audio
from voice.turns import ends_turn
from voice.types import (
    SAMPLE_RATE,
    EndEvent,
    Event,
    Segment,
    SegmentEvent,
    TranscriptEvent,
    language_tag,
)
from voice.vad import Candidate, Segmenter, VadOptions

log = logging.getLogger(__name__)

CHUNK_MS = 20  # how `transcribe_file` slices a file: the frame size telephony bridges send


class AnswerHook(Protocol):
    """What the session needs from the answer engine (voice.answer's session satisfies it).

    `audio` is the utterance's samples, for its tone of voice; a hook must accept it, may ignore it.
    """

    def events(
        self,
        transcript: TranscriptEvent,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> list[Event]: ...


@dataclass(frozen=True)
class StreamFormat:
    """What the bytes pushed into a session are."""

    encoding: str = "pcm16"  # pcm16 (little-endian), mulaw or alaw
    sample_rate: int = 16_000  # 8000 or 16000


class CallSession:
    """One call: push audio as it arrives, get events back; `flush()` at hang-up.

    Two ways to drive it: `push()` transcribes finished utterances at once (CLI, eval); a server
    that batches ASR across calls uses `feed()` to get segments and `complete()` with each
    segment's transcript. Both produce the same events.

    Turn-taking (`VadOptions.candidate_ms`): `feed()` also collects Candidates (`candidates()`
    hands them out); `turn_over(candidate, transcript)` ends the utterance at the candidate when
    its words read as a finished turn. `push()` does this itself, decoding each candidate at
    once, so offline runs cut utterances as a server with instant ASR would.
    """

    def __init__(
        self,
        call_id: str,
        transcriber: Transcriber | None,
        vad_options: VadOptions = VadOptions(),
        stream: StreamFormat = StreamFormat(),
        answer: AnswerHook | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ):
        self.call_id = call_id
        self.transcriber = transcriber
        self.answer = answer
        self.decoder = StreamDecoder(stream.encoding, stream.sample_rate)
        self.segmenter = Segmenter(call_id, vad_options)
        self.clock = clock
        self.utterances = 0
        # (stream sample reached, wall time it arrived): to time latency from the audio's arrival
        self._arrivals_at: list[int] = []
        self._arrivals_time: list[float] = []
        self._candidates: list[Candidate] = []
        self._decoded: tuple[Segment, Transcript] | None = None  # push(): the last candidate's
        self._closed = False

    # --- push-style API -----------------------------------------------------------------------

    def push(self, chunk: bytes) -> list[Event]:
        """Feed bytes in the session's stream format; returns events that became final."""
        events = self._transcribe_all(self.feed(chunk))
        for candidate in self.candidates():
            if self.transcriber is None or candidate is not self.segmenter.candidate:
                continue
            transcript = self.transcriber.transcribe(candidate.segment)
            self._decoded = (candidate.segment, transcript)
            for seg in self.turn_over(candidate, transcript):
                events.append(SegmentEvent(self.call_id, round(seg.start, 3), round(seg.end, 3)))
                events.extend(self.complete(seg, transcript))
        return events

    def flush(self) -> list[Event]:
        """The call ended: transcribe what is left and close with an `end` event."""
        events = self._transcribe_all(self.feed_end())
        return events + [self.end_event()]

    # --- split API for batching servers -------------------------------------------------------

    def feed(self, chunk: bytes) -> list[Segment]:
        samples = self.decoder.push(chunk)
        return self._segments(samples, final=False)

    def feed_samples(self, samples: np.ndarray) -> list[Segment]:
        """Feed 16 kHz float32 audio directly (already decoded)."""
        return self._segments(np.asarray(samples, dtype=np.float32), final=False)

    def feed_end(self) -> list[Segment]:
        return self._segments(self.decoder.flush(), final=True)

    def candidates(self) -> list[Candidate]:
        """The Candidates `feed()` met since the last call (oldest first)."""
        found, self._candidates = self._candidates, []
        return found

    def turn_over(self, candidate: Candidate, transcript: Transcript) -> list[Segment]:
        """End the utterance at `candidate` if its decoded words end a turn and the caller has
        not spoken since; returns the final Segment (the candidate's audio, so `transcript` is
        its transcript) or nothing."""
        if not self.segmenter.options.end_on_words:
            return []
        if candidate is not self.segmenter.candidate or not ends_turn(transcript.text):
            return []
        return [s for s in self.segmenter.commit(candidate) if isinstance(s, Segment)]

    def complete(self, segment: Segment, transcript: Transcript) -> list[Event]:
        """Events for one transcribed segment: transcript, then the answer engine's."""
        event = self.transcript_event(segment, transcript)
        return [] if event is None else [event, *self.answer_events(event, segment)]

    def transcript_event(self, segment: Segment, transcript: Transcript) -> TranscriptEvent | None:
        """The transcript event for one transcribed segment (None when a guard dropped it)."""
        latency_ms = 1000 * (self.clock() - self.arrival_time(segment.end))
        if not transcript.text:
            log.debug(
                "%s %.2f-%.2f dropped (%s)",
                self.call_id,
                segment.start,
                segment.end,
                transcript.dropped,
            )
            return None
        self.utterances += 1
        return TranscriptEvent(
            call_id=self.call_id,
            start=round(segment.start, 3),
            end=round(segment.end, 3),
            text=transcript.text,
            latency_ms=round(latency_ms, 1),
            asr_ms=round(transcript.asr_ms, 1),
            language=language_tag(transcript.language),
            no_speech_prob=round(transcript.no_speech_prob, 3),
            avg_logprob=round(transcript.avg_logprob, 3),
        )

    def answer_events(
        self, event: TranscriptEvent, segment: Segment, voice: bool = True
    ) -> list[Event]:
        """The answer engine's events for a transcript (none without an engine). Touches only
        the call's answer session, so a server may run it off its event loop: the voice's pitch
        analysis takes tens of milliseconds, which `voice=False` skips (no `voice_score`)."""
        if self.answer is None:
            return []
        audio = segment.samples if voice else None
        return self.answer.events(event, audio=audio, sample_rate=segment.sample_rate)

    def end_event(self) -> EndEvent:
        duration = self.segmenter.samples_seen / SAMPLE_RATE
        return EndEvent(self.call_id, duration=round(duration, 3), utterances=self.utterances)

    def arrival_time(self, stream_seconds: float) -> float:
        """Wall time at which the audio at `stream_seconds` was received."""
        i = bisect.bisect_left(self._arrivals_at, int(stream_seconds * SAMPLE_RATE))
        if i >= len(self._arrivals_time):
            return self._arrivals_time[-1] if self._arrivals_time else self.clock()
        return self._arrivals_time[i]

    # --- internals ----------------------------------------------------------------------------

    def _segments(self, samples: np.ndarray, final: bool) -> list[Segment]:
        if not samples.size and not final:
            return []  # no audio arrived (an empty frame, half a sample): no arrival to record
        now = self.clock()
        found = self.segmenter.push(samples) if samples.size else []
        if final:
            found += self.segmenter.flush()
        self._arrivals_at.append(self.segmenter.samples_seen)
        self._arrivals_time.append(now)
        self._forget_old_arrivals()
        self._candidates += [c for c in found if isinstance(c, Candidate)]
        return [s for s in found if isinstance(s, Segment)]

    def _forget_old_arrivals(self) -> None:
        # Arrival times are needed only for audio not yet in an emitted segment or gap.
        i = bisect.bisect_left(self._arrivals_at, self.segmenter.emitted_until)
        if i > 64:
            del self._arrivals_at[: i - 1], self._arrivals_time[: i - 1]

    def _transcribe_all(self, segments: list[Segment]) -> list[Event]:
        events: list[Event] = []
        for seg in segments:
            events.append(SegmentEvent(self.call_id, round(seg.start, 3), round(seg.end, 3)))
            if self.transcriber is not None:
                events.extend(self.complete(seg, self._transcribe(seg)))
        return events

    def _transcribe(self, segment: Segment) -> Transcript:
        """The segment's transcript; a candidate with the same audio was decoded already."""
        if self._decoded is not None and same_audio(self._decoded[0], segment):
            return self._decoded[1]
        return self.transcriber.transcribe(segment)


def same_audio(a: Segment, b: Segment) -> bool:
    """Whether two segments of one call cover the same samples."""
    return a.call_id == b.call_id and a.samples.size == b.samples.size and a.start == b.start


def stream_format_for(path: str | Path) -> StreamFormat:
    """How `transcribe_file` streams a file: at its own rate when a phone bridge would (8/16 kHz)."""
    rate = probe(path).sample_rate
    return StreamFormat("pcm16", rate if rate in (8_000, 16_000) else SAMPLE_RATE)


def transcribe_file(
    path: str | Path,
    transcriber: Transcriber | None,
    vad_options: VadOptions = VadOptions(),
    call_id: str | None = None,
    answer: AnswerHook | None = None,
    realtime: float = 0.0,
    chunk_ms: int = CHUNK_MS,
) -> Iterator[Event]:
    """Stream a file through a CallSession in `chunk_ms` chunks, in order, yielding events.

    `realtime` > 0 paces the chunks at that multiple of real time (1.0 = as a live call), so
    latencies include the VAD's end-of-speech wait as they would live.
    """
    fmt = stream_format_for(path)
    pcm = float_to_pcm16(read_audio(path, target_rate=fmt.sample_rate)).astype("<i2").tobytes()
    session = CallSession(call_id or Path(path).stem, transcriber, vad_options, fmt, answer)
    step = 2 * fmt.sample_rate * chunk_ms // 1000
    started = time.perf_counter()
    for i, offset in enumerate(range(0, len(pcm), step)):
        if realtime > 0:
            due = started + i * chunk_ms / 1000 / realtime
            time.sleep(max(0.0, due - time.perf_counter()))
        yield from session.push(pcm[offset : offset + step])
    yield from session.flush()


__all__ = ["AnswerHook", "CallSession", "StreamFormat", "stream_format_for", "transcribe_file"]
