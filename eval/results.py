"""One model's evaluation result on one manifest, the paired comparison of two models, and the
`--json` summary built from several results."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from eval.metrics import METRICS, CorpusScore, UtteranceScore, paired_bootstrap
from eval.vadscore import VadScore

SUMMARY_KEYS = (
    "model", "cer", "mer", "wer", "utterances", "rtf", "latency_p50_ms", "latency_p95_ms",
)  # fmt: skip  # the contract: these first, in this order; extra keys may follow
BOOTSTRAP_RESAMPLES = 1000  # paired-bootstrap resamples for the CER-difference interval
CONFIDENCE = 0.95  # of that interval (`cer_delta_ci95` in --json)


@dataclass(frozen=True)
class ModelResult:
    """Everything measured for one model on one manifest.

    `scores` holds one UtteranceScore per scored unit: an utterance in utterance mode, a whole
    call in call mode. `utterances` counts the manifest lines behind them. `processing_seconds`
    is decoding time (utterance mode) or the pipeline's wall time (call mode).
    """

    model: str
    mode: str
    scores: tuple[UtteranceScore, ...]
    utterances: int
    audio_seconds: float
    processing_seconds: float
    latencies_ms: tuple[float, ...] = ()
    vad: VadScore | None = None
    normalizer: str = ""
    failures: tuple[str, ...] = ()  # lines that could not be decoded, with the reason
    seen_texts: frozenset[str] = frozenset()  # normalised training texts (`voice eval --seen-in`)
    manifest: str = ""  # the manifest's path as given to `voice eval`
    initial_prompt: str | None = None  # the decoder prompt in effect (Transcriber.prompt_text)
    device: str = ""  # where the model ran ("cpu", "cuda") and its CTranslate2 compute type
    compute_type: str = ""

    @property
    def corpus(self) -> CorpusScore:
        return CorpusScore.of(self.scores)

    @property
    def rtf(self) -> float | None:
        """Real-time factor: processing time over audio time."""
        return self.processing_seconds / self.audio_seconds if self.audio_seconds else None

    @property
    def by_novelty(self) -> dict[str, CorpusScore] | None:
        """Totals over units whose normalised reference was / was not in the training texts.

        Memorisation shows up as a gap between the two; None when no training texts were given.
        """
        if not self.seen_texts:
            return None
        seen = [s for s in self.scores if s.ref_norm in self.seen_texts]
        unseen = [s for s in self.scores if s.ref_norm not in self.seen_texts]
        return {"seen": CorpusScore.of(seen), "unseen": CorpusScore.of(unseen)}

    def latency_percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(np.asarray(self.latencies_ms, dtype=float), q))


@dataclass(frozen=True)
class Comparison:
    """CER of `model` minus CER of the baseline (the first model), on the utterances both have."""

    model: str
    baseline: str
    paired: int  # units scored for both models
    diff: float
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        """Whether the interval excludes zero."""
        return self.lo > 0 or self.hi < 0


def compare_pair(
    base: ModelResult, other: ModelResult, n: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> Comparison | None:
    """Paired-bootstrap CER difference of `other` against `base` on the units both scored
    (None if they share none)."""
    ids = {s.id for s in base.scores} & {s.id for s in other.scores}
    a = [s for s in base.scores if s.id in ids]
    b = [s for s in other.scores if s.id in ids]
    if not a:
        return None
    diff, lo, hi = paired_bootstrap(a, b, "cer", n=n, seed=seed, confidence=CONFIDENCE)
    return Comparison(other.model, base.model, len(a), diff, lo, hi)


def _num(value: float | None, digits: int = 6) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


def model_summary(result: ModelResult) -> dict:
    """The contract keys for one model, then extras (edit counts, call and VAD figures)."""
    corpus = result.corpus
    out: dict = {
        "model": result.model,
        # no scored units (every file failed to decode): no rate, never a flattering 0
        **{m: _num(corpus.counts(m).rate) if corpus.utterances else None for m in METRICS},
        "utterances": result.utterances,
        "rtf": _num(result.rtf, 4),
        "latency_p50_ms": _num(result.latency_percentile(50), 1),
        "latency_p95_ms": _num(result.latency_percentile(95), 1),
    }
    out["manifest"] = result.manifest
    out["mode"] = result.mode
    out["substitutions"] = corpus.cer.substitutions
    out["deletions"] = corpus.cer.deletions
    out["insertions"] = corpus.cer.insertions
    out["reference_chars"] = corpus.cer.reference_length
    out["audio_seconds"] = round(result.audio_seconds, 3)
    if result.mode == "call":
        out["calls"] = len(result.scores)
    if result.vad is not None:
        out["vad_miss_rate"] = _num(result.vad.miss_rate)
        out["vad_false_alarm_rate"] = _num(result.vad.false_alarm_rate)
        out["vad_false_cuts"] = result.vad.false_cuts
    for group, score in (result.by_novelty or {}).items():
        out[f"cer_{group}_text"] = _num(score.cer.rate) if score.utterances else None
        out[f"utterances_{group}_text"] = score.utterances
    if result.failures:
        out["failures"] = len(result.failures)
    out["normalizer"] = result.normalizer
    if result.initial_prompt:
        out["initial_prompt"] = result.initial_prompt
    if result.device:
        out["device"] = result.device
        out["compute_type"] = result.compute_type
    return out


def summary_json(
    results: list[ModelResult], bootstrap_n: int = BOOTSTRAP_RESAMPLES, seed: int = 0
) -> dict:
    """{"models": [...]}: one summary per (manifest, model), rates as fractions (see
    SUMMARY_KEYS). Every model after the first on the same manifest also gets
    `cer_delta_vs_first` (its CER minus the first model's, on the units both scored) and
    `cer_delta_ci95` ([low, high], paired bootstrap); both None if the two share no unit."""
    firsts: dict[str, ModelResult] = {}
    entries = []
    for r in results:
        entry = model_summary(r)
        first = firsts.setdefault(r.manifest, r)
        if first is not r:
            c = compare_pair(first, r, bootstrap_n, seed)
            entry["cer_delta_vs_first"] = _num(c.diff) if c else None
            entry["cer_delta_ci95"] = [_num(c.lo), _num(c.hi)] if c else None
        entries.append(entry)
    return {"models": entries}


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "CONFIDENCE",
    "Comparison",
    "ModelResult",
    "SUMMARY_KEYS",
    "compare_pair",
    "model_summary",
    "summary_json",
]
