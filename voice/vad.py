"""Streaming voice activity detection: 16 kHz audio chunks in, speech segments and gaps out.

A frame classifier (webrtcvad, or Silero VAD from the ONNX file inside faster-whisper) labels
fixed frames; a small state machine (QUIET -> SPEAKING -> QUIET) turns labels into segments:
speech starts when `start_ms` of the last frames are mostly voiced, ends after `stop_ms` of
unbroken silence, is padded on both sides, and is split at its quietest frame when it reaches
`max_segment_s`. Every sample pushed in ends up in exactly one Segment or Gap, in order.

Turn-taking: with `candidate_ms`, a shorter pause inside an utterance offers the utterance so far
as a `Candidate` (speculative decoding); whoever decodes it may `commit()` it, which closes the
utterance there at once when the caller has not spoken again, instead of waiting for `stop_ms`.
A Candidate is extra output, never part of the Segment/Gap partition.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from voice.errors import ConfigError
from voice.types import SAMPLE_RATE, Gap, Segment

BACKENDS = ("webrtc", "silero")


@dataclass(frozen=True, eq=False)
class Candidate:
    """The open utterance at a short pause: what the Segment will be if the turn ends here.

    `segment` has the audio from the utterance's start to the end it would get (the last voiced
    frame plus post_pad_ms); commit it with `Segmenter.commit` to make it final.
    """

    segment: Segment


@dataclass(frozen=True)
class VadOptions:
    """Segmenter settings; defaults are tuned for the caller's side of a phone call."""

    backend: str = "webrtc"  # "webrtc" or "silero"
    aggressiveness: int = 2  # webrtcvad 0 (keeps most) .. 3 (drops most non-speech)
    threshold: float = 0.5  # silero speech probability above which a frame is speech
    start_ms: int = 150  # this much voiced audio (within a 1.5x window) starts an utterance
    stop_ms: int = 400  # this much unbroken silence ends it
    pre_pad_ms: int = 200  # audio kept before the first voiced frame
    post_pad_ms: int = 200  # audio kept after the last voiced frame (<= stop_ms)
    min_speech_ms: int = 200  # shorter blips (clicks, coughs) are reported as gaps
    max_segment_s: float = 15.0  # longer speech is split at its quietest frame
    # a pause this long offers the utterance so far as a Candidate for an early end of turn
    # (0, or not below stop_ms: never); at least post_pad_ms, so it is the Segment's audio
    candidate_ms: int = 210
    # end the utterance at a candidate whose decoded words end a turn (voice/turns.py), not at
    # stop_ms. Off: on real read speech (HBL test) it cut 10 more lines mid-passage (174 -> 184)
    # and cost 0.8 pt CER, and while a decode takes longer than stop_ms - candidate_ms (a 2-core
    # CPU) the candidate's decode, reused at stop_ms, is as fast
    end_on_words: bool = False

    def validate(self) -> VadOptions:
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown VAD backend {self.backend!r}; expected one of {BACKENDS}")
        if not 0 <= self.aggressiveness <= 3:
            raise ConfigError("VAD aggressiveness must be 0..3")
        if self.post_pad_ms > self.stop_ms:
            raise ConfigError("post_pad_ms must not exceed stop_ms")
        if 0 < self.candidate_ms < self.post_pad_ms:
            raise ConfigError(
                f"candidate_ms ({self.candidate_ms}) must be at least post_pad_ms "
                f"({self.post_pad_ms}), or 0 to turn early ends of turn off"
            )
        if not 1.0 <= self.max_segment_s <= 30.0:
            raise ConfigError("max_segment_s must be between 1 and 30 seconds (Whisper's window)")
        return self


class FrameClassifier(Protocol):
    """Labels fixed-size frames of 16 kHz float32 audio as speech or not."""

    frame_samples: int

    def is_speech(self, frame: np.ndarray) -> bool: ...

    def reset(self) -> None: ...


class WebRtcClassifier:
    """webrtcvad on 30 ms frames."""

    frame_samples = 480  # 30 ms at 16 kHz, one of webrtcvad's three frame sizes

    def __init__(self, aggressiveness: int = 2):
        import webrtcvad

        self._vad = webrtcvad.Vad(aggressiveness)

    def is_speech(self, frame: np.ndarray) -> bool:
        pcm = (np.clip(frame, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        return self._vad.is_speech(pcm, SAMPLE_RATE)

    def reset(self) -> None:
        pass


class SileroClassifier:
    """Silero VAD v6 (the ONNX model shipped inside faster-whisper) on 32 ms frames, streaming."""

    frame_samples = 512  # the window Silero expects at 16 kHz
    context_samples = 64  # samples of the previous frame Silero sees with each frame

    def __init__(self, threshold: float = 0.5):
        from faster_whisper.vad import get_vad_model

        self._session = get_vad_model().session
        self.threshold = threshold
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.context_samples, dtype=np.float32)

    def is_speech(self, frame: np.ndarray) -> bool:
        x = np.concatenate([self._context, frame.astype(np.float32)])[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = frame[-self.context_samples :].astype(np.float32)
        return float(np.ravel(prob)[0]) > self.threshold


def make_classifier(options: VadOptions) -> FrameClassifier:
    if options.backend == "silero":
        return SileroClassifier(options.threshold)
    return WebRtcClassifier(options.aggressiveness)


class Segmenter:
    """Push 16 kHz float32 audio of any chunk size; get Segments (speech) and Gaps back in order.

    Output depends only on the audio, not on how it was chunked: frames are cut at fixed
    positions from the start of the stream.
    """

    def __init__(self, call_id: str = "call", options: VadOptions = VadOptions()):
        self.call_id = call_id
        self.options = options.validate()
        self.classifier = make_classifier(self.options)
        n = self.classifier.frame_samples
        ms = 1000 * n / SAMPLE_RATE
        self._start_frames = max(1, round(options.start_ms / ms))
        self._start_window = max(self._start_frames, round(1.5 * options.start_ms / ms))
        self._stop_frames = max(1, round(options.stop_ms / ms))
        candidate_frames = round(options.candidate_ms / ms)
        self._candidate_frames = candidate_frames if candidate_frames < self._stop_frames else 0
        self.candidate: Candidate | None = None  # the open utterance's, while still committable
        self._pre_pad = int(options.pre_pad_ms * SAMPLE_RATE / 1000)
        self._post_pad = int(options.post_pad_ms * SAMPLE_RATE / 1000)
        self._min_speech = int(options.min_speech_ms * SAMPLE_RATE / 1000)
        self._max_len = int(options.max_segment_s * SAMPLE_RATE)
        # Audio not yet emitted starts at sample `_base` of the stream.
        self._buffer = np.zeros(0, dtype=np.float32)
        self._base = 0
        self._frames_done = 0  # frames classified so far (frame k covers [k*n, (k+1)*n))
        self._recent: deque[bool] = deque(maxlen=self._start_window)
        self._speaking = False
        self._seg_start = 0  # stream sample where the current segment starts
        self._last_voiced_end = 0  # stream sample after the last voiced frame
        self._silence_run = 0
        self._energies: list[tuple[int, float]] = []  # (frame start, energy) inside the segment

    @property
    def samples_seen(self) -> int:
        return self._base + self._buffer.size

    @property
    def emitted_until(self) -> int:
        """Stream samples before this index are already in an emitted Segment or Gap."""
        return self._base

    def push(self, samples: np.ndarray) -> list[Segment | Gap | Candidate]:
        """Feed audio; returns what became final (and Candidates, with `candidate_ms`)."""
        samples = np.asarray(samples, dtype=np.float32).ravel()
        self._buffer = (
            np.concatenate([self._buffer, samples]) if self._buffer.size else samples.copy()
        )
        out: list[Segment | Gap] = []
        n = self.classifier.frame_samples
        while (self._frames_done + 1) * n <= self.samples_seen:
            start = self._frames_done * n
            frame = self._slice(start, start + n)
            self._frames_done += 1
            self._step(start, frame, self.classifier.is_speech(frame), out)
        return out

    def open_span(self) -> tuple[int, int] | None:
        """(start, end) stream samples of the utterance in progress, None between utterances."""
        return (self._seg_start, self.samples_seen) if self._speaking else None

    def open_segment(self) -> Segment | None:
        """The utterance in progress so far, as a Segment (a copy); None between utterances."""
        if not self._speaking:
            return None
        end = self.samples_seen
        return Segment(self.call_id, self._seg_start / SAMPLE_RATE, end / SAMPLE_RATE,
                       self._slice(self._seg_start, end).copy())  # fmt: skip

    def commit(self, candidate: Candidate) -> list[Segment | Gap]:
        """End the open utterance where `candidate` ends, now: returns its Segment (the same
        audio as the candidate's). Nothing happens (empty list) if the caller has spoken since
        the candidate or the utterance already ended."""
        if candidate is not self.candidate or not self._speaking:
            return []
        out: list[Segment | Gap] = []
        self._close(int(round(candidate.segment.end * SAMPLE_RATE)), out)
        return out

    def flush(self) -> list[Segment | Gap]:
        """End of the call: close any open segment and report the rest as a gap."""
        out: list[Segment | Gap] = []
        end = self.samples_seen
        if self._speaking:
            seg_end = min(end, self._last_voiced_end + self._post_pad)
            self._close(seg_end, out)
        if end > self._base:
            out.append(self._gap(end))
        self.classifier.reset()
        return out

    # --- state machine ------------------------------------------------------------------------

    def _step(self, start: int, frame: np.ndarray, voiced: bool, out: list) -> None:
        n = self.classifier.frame_samples
        self._recent.append(voiced)
        if not self._speaking:
            if sum(self._recent) >= self._start_frames:
                window_start = start + n - len(self._recent) * n
                first_voiced = window_start + n * list(self._recent).index(True)
                self._open(max(self._base, first_voiced - self._pre_pad), out)
                self._last_voiced_end = start + n
                first_frame = -(-self._seg_start // n)  # frames wholly inside the segment
                self._energies = [
                    (k * n, _energy(self._slice(k * n, k * n + n)))
                    for k in range(first_frame, start // n + 1)
                ]
            elif start - self._base > self._max_len:
                # a long silence: report it now rather than holding it in memory
                out.append(self._gap(start + n - self._start_window * n - self._pre_pad))
            return
        self._energies.append((start, _energy(frame)))
        if voiced:
            self._last_voiced_end = start + n
            self._silence_run = 0
            self.candidate = None  # the caller spoke again: the pause was not the turn's end
        else:
            self._silence_run += 1
            if self._silence_run == self._candidate_frames:
                self._offer_candidate(start + n, out)
            if self._silence_run >= self._stop_frames:
                self._close(self._last_voiced_end + self._post_pad, out)
                return
        if start + n - self._seg_start >= self._max_len:
            self._split(out)

    def _offer_candidate(self, reached: int, out: list) -> None:
        end = min(self._last_voiced_end + self._post_pad, reached)
        if end - self._seg_start < self._min_speech:
            return  # would be reported as a gap, not an utterance
        seg = Segment(self.call_id, self._seg_start / SAMPLE_RATE, end / SAMPLE_RATE,
                      self._slice(self._seg_start, end).copy())  # fmt: skip
        self.candidate = Candidate(seg)
        out.append(self.candidate)

    def _open(self, seg_start: int, out: list) -> None:
        if seg_start > self._base:
            out.append(self._gap(seg_start))
        self._speaking = True
        self._seg_start = seg_start
        self._silence_run = 0
        self._energies = []

    def _close(self, seg_end: int, out: list) -> None:
        seg_end = min(seg_end, self.samples_seen)
        if seg_end - self._seg_start < self._min_speech:
            out.append(self._gap(seg_end))  # too short to be an utterance
        else:
            out.append(self._segment(seg_end))
        self._speaking = False
        self.candidate = None
        self._recent.clear()
        self._energies = []

    def _split(self, out: list) -> None:
        """Cut a too-long segment at its quietest frame in the second half; keep speaking."""
        half = self._seg_start + self._max_len // 2
        candidates = [(e, s) for s, e in self._energies if s >= half] or [
            (e, s) for s, e in self._energies
        ]
        _, cut = min(candidates)
        cut += self.classifier.frame_samples // 2
        out.append(self._segment(cut))
        self.candidate = None  # it started before the cut
        self._seg_start = cut
        self._energies = [(s, e) for s, e in self._energies if s >= cut]

    # --- emitting -----------------------------------------------------------------------------

    def _slice(self, start: int, end: int) -> np.ndarray:
        return self._buffer[start - self._base : end - self._base]

    def _segment(self, end: int) -> Segment:
        samples = self._slice(self._seg_start, end).copy()
        seg = Segment(self.call_id, self._seg_start / SAMPLE_RATE, end / SAMPLE_RATE, samples)
        self._drop_until(end)
        return seg

    def _gap(self, end: int) -> Gap:
        gap = Gap(self.call_id, self._base / SAMPLE_RATE, end / SAMPLE_RATE)
        self._drop_until(end)
        return gap

    def _drop_until(self, end: int) -> None:
        self._buffer = self._buffer[end - self._base :]
        self._base = end


def _energy(frame: np.ndarray) -> float:
    return float(np.mean(frame.astype(np.float64) ** 2))


def segment_audio(samples: np.ndarray, call_id: str = "call", options: VadOptions = VadOptions()):
    """Offline convenience: all Segments and Gaps of a whole signal (no Candidates)."""
    seg = Segmenter(call_id, options)
    return [x for x in seg.push(samples) + seg.flush() if not isinstance(x, Candidate)]


__all__ = ["BACKENDS", "Candidate", "Segmenter", "VadOptions", "segment_audio"]
