"""Running models over manifests with the production code: `voice.audio` decoding,
`Transcriber.transcribe` per utterance, and `voice.pipeline.transcribe_file` (VAD then ASR)
per call. Nothing here decodes audio or runs a model any other way.

- Utterance mode: each manifest line's span (offset/duration) becomes one Segment and is
  transcribed. Latency is the wall time of that `transcribe` call; RTF is their sum over the
  audio seconds.
- Call mode: each audio file is streamed whole through `transcribe_file` as `voice transcribe`
  does; the call's transcripts, in time order, are scored against its references joined in
  offset order. The VAD's segments are scored against the references' spans (missed speech and
  false-alarm time, as fractions of reference speech). Latency is each TranscriptEvent's
  `latency_ms`; RTF is the pipeline's wall time over the call's audio seconds.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from eval.errors import EvalError
from eval.metrics import UtteranceScore, score_utterance
from eval.normalize import NormalizeOptions, normalize
from eval.results import ModelResult
from eval.vadscore import VadScore, score_vad

log = logging.getLogger(__name__)

MODES = ("utterance", "call")


class Transcribes(Protocol):
    """What the runner needs of a model: voice.asr.Transcriber satisfies it."""

    def transcribe(self, segment: Any) -> Any: ...


@dataclass(frozen=True)
class EvalOptions:
    """How a run scores: mode, normalisation, progress bar."""

    mode: str = "utterance"  # "utterance" (each line's span) or "call" (whole files via VAD)
    normalize: NormalizeOptions = field(default_factory=NormalizeOptions)
    progress: bool = True  # tqdm bar on stderr
    seen_texts: frozenset[str] = frozenset()  # normalised training texts: see `seen_texts()`

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise EvalError(f"unknown eval mode {self.mode!r}; expected one of {MODES}")
        if self.seen_texts and self.mode != "utterance":
            raise EvalError("a seen/unseen text breakdown needs --mode utterance")


def seen_texts(entries: Sequence, options: NormalizeOptions) -> frozenset[str]:
    """The normalised texts of training entries, to split scores into seen and unseen text."""
    return frozenset(filter(None, (normalize(e.text, options) for e in entries)))


def utterance_id(entry) -> str:
    """A stable id for a manifest line: its own `id`/`utt_id` key, else call id and line."""
    extra = getattr(entry, "extra", {}) or {}
    return str(extra.get("id") or extra.get("utt_id") or f"{entry.call_id}#{entry.line}")


def check_references(entries: Sequence, options: NormalizeOptions) -> list[str]:
    """Lines whose reference is empty after normalisation (they cannot be scored)."""
    return [
        f"line {e.line} ({utterance_id(e)}): reference {e.text!r} is empty after normalisation"
        for e in entries
        if not normalize(e.text, options)
    ]


def group_calls(entries: Sequence) -> list[list]:
    """Entries grouped by audio file (first appearance order), each group in offset order."""
    groups: dict[str, list] = {}
    for e in entries:
        groups.setdefault(str(e.audio_path), []).append(e)
    return [sorted(g, key=lambda e: (e.offset or 0.0, e.line)) for g in groups.values()]


def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit="utt", file=sys.stderr, disable=not enabled, leave=False
    )


# --- utterance mode ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """One manifest line through the model: its transcript and decoding time, or why its audio
    could not be read. Made by `decode_entry`, here or on a Ray actor (eval.raypool)."""

    text: str = ""
    latency_ms: float = 0.0  # wall time of the `transcribe` call
    audio_seconds: float = 0.0
    error: str | None = None


def decode_entry(transcriber: Transcribes, entry) -> Decoded:
    """The line's span as one Segment through `transcriber.transcribe`."""
    from voice.audio import AudioError
    from voice.types import SAMPLE_RATE, Segment

    try:
        samples = entry.load_audio()
    except AudioError as exc:
        return Decoded(error=f"line {entry.line}: {exc}")
    start = entry.offset or 0.0
    segment = Segment(entry.call_id, start, start + samples.size / SAMPLE_RATE, samples)
    began = time.perf_counter()
    transcript = transcriber.transcribe(segment)
    elapsed_ms = 1000 * (time.perf_counter() - began)
    return Decoded(transcript.text, elapsed_ms, segment.duration)


def eval_utterances(
    model: str, transcriber: Transcribes, entries: Sequence, options: EvalOptions
) -> ModelResult:
    """Transcribe each line's span as one Segment and score it."""
    decoded = []
    with _bar(len(entries), model, options.progress) as bar:
        for entry in entries:
            decoded.append(decode_entry(transcriber, entry))
            bar.update(1)
    return score_utterances(model, entries, decoded, options)


def score_utterances(
    model: str, entries: Sequence, decoded: Sequence[Decoded], options: EvalOptions
) -> ModelResult:
    """Score each line's decoding (`decoded[i]` is `entries[i]`'s) as utterance mode does."""
    scores: list[UtteranceScore] = []
    latencies: list[float] = []
    failures: list[str] = []
    audio_s = asr_s = 0.0
    for entry, done in zip(entries, decoded, strict=True):
        if done.error is not None:
            failures.append(done.error)
            continue
        audio_s += done.audio_seconds
        asr_s += done.latency_ms / 1000
        latencies.append(done.latency_ms)
        scores.append(
            score_utterance(
                entry.text, done.text, options.normalize,
                id=utterance_id(entry), call_id=entry.call_id, speaker=entry.speaker or "",
                latency_ms=round(done.latency_ms, 1), audio_seconds=round(done.audio_seconds, 3),
            )
        )  # fmt: skip
    return ModelResult(
        model=model, mode="utterance", scores=tuple(scores), utterances=len(scores),
        audio_seconds=audio_s, processing_seconds=asr_s, latencies_ms=tuple(latencies),
        normalizer=options.normalize.describe(), failures=tuple(failures),
        seen_texts=options.seen_texts,
    )  # fmt: skip


# --- call mode --------------------------------------------------------------------------------


@dataclass(frozen=True)
class CallOutput:
    """What the pipeline produced for one call."""

    transcripts: tuple[tuple[float, float, str, float], ...]  # (start, end, text, latency_ms)
    segments: tuple[tuple[float, float], ...]  # VAD segments (start, end)
    duration: float  # seconds of audio streamed
    wall_seconds: float


def stream_call(path, transcriber: Transcribes, vad_options, call_id: str) -> CallOutput:
    """Run one file through `voice.pipeline.transcribe_file` and collect its events."""
    from voice.pipeline import transcribe_file
    from voice.types import EndEvent, SegmentEvent, TranscriptEvent

    transcripts, segments, duration = [], [], 0.0
    began = time.perf_counter()
    for event in transcribe_file(path, transcriber, vad_options, call_id):
        if isinstance(event, SegmentEvent):
            segments.append((event.start, event.end))
        elif isinstance(event, TranscriptEvent):
            transcripts.append((event.start, event.end, event.text, event.latency_ms))
        elif isinstance(event, EndEvent):
            duration = event.duration
    wall = time.perf_counter() - began
    return CallOutput(tuple(sorted(transcripts)), tuple(segments), duration, wall)


def reference_spans(group: Sequence, duration: float) -> list[tuple[float, float]]:
    """Each line's (start, end) in the call; a line without offset/duration spans the file."""
    spans = []
    for e in group:
        start = e.offset or 0.0
        end = start + e.duration if e.duration is not None else duration
        spans.append((start, min(end, duration) if duration else end))
    return spans


def eval_calls(
    model: str,
    transcriber: Transcribes,
    entries: Sequence,
    options: EvalOptions,
    vad_options=None,
    stream: Callable[..., CallOutput] = stream_call,
) -> ModelResult:
    """Stream each whole call through VAD + ASR, score the joined transcript and the VAD."""
    from voice.audio import AudioError
    from voice.vad import VadOptions

    vad_options = vad_options or VadOptions()
    scores: list[UtteranceScore] = []
    latencies: list[float] = []
    failures: list[str] = []
    vad = VadScore()
    audio_s = wall_s = 0.0
    utterances = 0
    with _bar(len(entries), model, options.progress) as bar:
        for group in group_calls(entries):
            call_id = group[0].call_id
            try:
                out = stream(group[0].audio_path, transcriber, vad_options, call_id)
            except AudioError as exc:
                failures.append(f"call {call_id}: {exc}")
                bar.update(len(group))
                continue
            audio_s += out.duration
            wall_s += out.wall_seconds
            utterances += len(group)
            latencies.extend(t[3] for t in out.transcripts)
            vad += score_vad(reference_spans(group, out.duration), out.segments)
            speakers = sorted({e.speaker for e in group if e.speaker})
            scores.append(
                score_utterance(
                    " ".join(e.text for e in group), " ".join(t[2] for t in out.transcripts),
                    options.normalize, id=call_id, call_id=call_id, speaker=",".join(speakers),
                    latency_ms=_median(t[3] for t in out.transcripts),
                    audio_seconds=round(out.duration, 3),
                )
            )  # fmt: skip
            bar.update(len(group))
    return ModelResult(
        model=model, mode="call", scores=tuple(scores), utterances=utterances,
        audio_seconds=audio_s, processing_seconds=wall_s, latencies_ms=tuple(latencies),
        vad=vad, normalizer=options.normalize.describe(), failures=tuple(failures),
    )  # fmt: skip


def _median(values) -> float | None:
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# --- several models ---------------------------------------------------------------------------


def evaluate(
    models: Sequence[str],
    load: Callable[[str], tuple[Transcribes, Any]],
    entries: Sequence,
    options: EvalOptions = EvalOptions(),
) -> Iterator[ModelResult]:
    """Check every reference, then load each model once (one at a time, to bound memory) and
    evaluate it. `load(model)` returns (transcriber, VadOptions), as `asr_from_args` does."""
    yield from evaluate_manifests(models, load, [("", entries)], options)


def evaluate_manifests(
    models: Sequence[str],
    load: Callable[[str], tuple[Transcribes, Any]],
    manifests: Sequence[tuple[str, Sequence]],
    options: EvalOptions = EvalOptions(),
) -> Iterator[ModelResult]:
    """`evaluate` over several (manifest path, entries): every manifest's references are checked
    before any model loads, then each model is loaded once and run over every manifest in turn.
    Results come model by model; each carries its manifest, the model's decoder prompt and the
    device it ran on."""
    check_manifests(manifests, options)
    for model in models:
        log.info("loading model %s", model)
        transcriber, vad_options = load(model)
        prompt = getattr(transcriber, "prompt_text", None)
        used = getattr(transcriber, "options", None)  # AsrOptions as loaded: the actual device
        ran_on = dict(device=getattr(used, "device", ""),
                      compute_type=getattr(used, "compute_type", "") or "")  # fmt: skip
        for manifest, entries in manifests:
            if options.mode == "call":
                result = eval_calls(model, transcriber, entries, options, vad_options)
            else:
                result = eval_utterances(model, transcriber, entries, options)
            yield replace(result, manifest=manifest, initial_prompt=prompt, **ran_on)
        del transcriber


def check_manifests(manifests: Sequence[tuple[str, Sequence]], options: EvalOptions) -> None:
    """Raise EvalError listing the references that cannot be scored, before any model loads."""
    for manifest, entries in manifests:
        problems = check_references(entries, options.normalize)
        if problems:
            listing = "\n  ".join(problems[:50])
            where = f"{manifest}: " if manifest else ""
            raise EvalError(f"{where}{len(problems)} reference(s) cannot be scored:\n  {listing}")


__all__ = [
    "MODES",
    "EvalOptions",
    "CallOutput",
    "Decoded",
    "check_manifests",
    "check_references",
    "decode_entry",
    "evaluate",
    "evaluate_manifests",
    "eval_calls",
    "eval_utterances",
    "group_calls",
    "reference_spans",
    "score_utterances",
    "seen_texts",
    "stream_call",
    "utterance_id",
]
