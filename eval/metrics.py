"""Edit counts and error rates on normalised Cantonese text: CER, MER and WER, per utterance and
per corpus, plus a paired bootstrap for comparing two models.

Tokens (all taken from the normalised string, see `eval.normalize`):
- CER: every non-space character. A Latin letter counts as one character, like a Han character,
  as in published Cantonese CER tables computed on normalised text without spaces; so
  "account" -> "acount" is one deletion over seven characters.
- MER (mixed error rate, for code-switched speech): each Han character is one token and each run
  of other letters/digits (an English word, a number) is one token: 我個account login唔到 is
  我 / 個 / account / login / 唔 / 到.
- WER: the words of pycantonese's segmenter (我個account login唔到 -> 我 / 個 / account / login /
  唔 / 到; 可以 is one word).

Rates are corpus-level: total edits over total reference tokens, never a mean of per-utterance
rates. Edits come from jiwer's alignment (minimum edit distance; substitutions, deletions and
insertions counted separately).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import jiwer
import numpy as np

from eval.errors import EvalError
from eval.normalize import NormalizeOptions, normalize

METRICS = ("cer", "mer", "wer")
_HAN = r"\u3007\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_MER_TOKEN = re.compile(f"[{_HAN}]|[^\\s{_HAN}]+")


@dataclass(frozen=True)
class EditCounts:
    """Alignment counts between a reference and a hypothesis token sequence."""

    hits: int = 0
    substitutions: int = 0
    deletions: int = 0
    insertions: int = 0

    @property
    def reference_length(self) -> int:
        return self.hits + self.substitutions + self.deletions

    @property
    def hypothesis_length(self) -> int:
        return self.hits + self.substitutions + self.insertions

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        """Errors over reference tokens (may exceed 1); NaN when there is no reference."""
        if self.reference_length == 0:
            return 0.0 if self.errors == 0 else math.nan
        return self.errors / self.reference_length

    def __add__(self, other: EditCounts) -> EditCounts:
        return EditCounts(
            self.hits + other.hits,
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
        )

    def to_dict(self) -> dict[str, int | float]:
        return {
            "hits": self.hits,
            "substitutions": self.substitutions,
            "deletions": self.deletions,
            "insertions": self.insertions,
            "reference_length": self.reference_length,
            "rate": self.rate,
        }


# --- tokenisers ---------------------------------------------------------------------------------


def cer_tokens(normalised: str) -> list[str]:
    """Every non-space character."""
    return [c for c in normalised if not c.isspace()]


def mer_tokens(normalised: str) -> list[str]:
    """Each Han character, and each run of other non-space characters (a Latin word, a number)."""
    return _MER_TOKEN.findall(normalised)


def wer_tokens(normalised: str) -> list[str]:
    """Words from pycantonese's segmenter (spaces are never part of a word)."""
    return [w for w in _segment(normalised) if w.strip()]


@lru_cache(maxsize=4096)
def _segment(text: str) -> tuple[str, ...]:
    import pycantonese

    return tuple(pycantonese.segment(text)) if text else ()


TOKENIZERS = {"cer": cer_tokens, "mer": mer_tokens, "wer": wer_tokens}


def edit_counts(reference: Sequence[str], hypothesis: Sequence[str]) -> EditCounts:
    """Minimum-edit alignment counts between two token sequences (tokens must not hold spaces)."""
    if not reference:
        return EditCounts(insertions=len(hypothesis))
    if not hypothesis:
        return EditCounts(deletions=len(reference))
    out = jiwer.process_words(" ".join(reference), " ".join(hypothesis))
    return EditCounts(out.hits, out.substitutions, out.deletions, out.insertions)


# --- utterances and corpora ---------------------------------------------------------------------


@dataclass(frozen=True)
class UtteranceScore:
    """One scored utterance (or, in call mode, one call): raw and normalised text and the edits.

    `call_id`, `speaker`, `latency_ms` and `audio_seconds` are carried for reports only.
    """

    id: str
    reference: str
    hypothesis: str
    ref_norm: str
    hyp_norm: str
    cer: EditCounts
    mer: EditCounts
    wer: EditCounts
    call_id: str = ""
    speaker: str = ""
    latency_ms: float | None = None
    audio_seconds: float = 0.0

    def counts(self, metric: str) -> EditCounts:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        return getattr(self, metric)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "call_id": self.call_id,
            "speaker": self.speaker,
            "reference": self.reference,
            "hypothesis": self.hypothesis,
            "ref_norm": self.ref_norm,
            "hyp_norm": self.hyp_norm,
            "cer": self.cer.to_dict(),
            "mer": self.mer.to_dict(),
            "wer": self.wer.to_dict(),
            "latency_ms": self.latency_ms,
            "audio_seconds": self.audio_seconds,
        }


def score_utterance(
    reference: str,
    hypothesis: str,
    options: NormalizeOptions | None = None,
    *,
    id: str = "",
    call_id: str = "",
    speaker: str = "",
    latency_ms: float | None = None,
    audio_seconds: float = 0.0,
) -> UtteranceScore:
    """Normalise both sides and count CER/MER/WER edits. Raises EvalError on an empty reference."""
    options = options or NormalizeOptions()
    ref_norm = normalize(reference, options)
    if not ref_norm:
        where = f" (utterance {id})" if id else ""
        raise EvalError(
            f"empty reference{where}: {reference!r} has nothing left to score after normalisation"
        )
    hyp_norm = normalize(hypothesis or "", options)
    counts = {m: edit_counts(tok(ref_norm), tok(hyp_norm)) for m, tok in TOKENIZERS.items()}
    return UtteranceScore(
        id=id,
        reference=reference,
        hypothesis=hypothesis or "",
        ref_norm=ref_norm,
        hyp_norm=hyp_norm,
        call_id=call_id,
        speaker=speaker,
        latency_ms=latency_ms,
        audio_seconds=audio_seconds,
        **counts,
    )


@dataclass(frozen=True)
class CorpusScore:
    """Totals over utterances: corpus-level rates are total edits over total reference tokens."""

    utterances: int = 0
    cer: EditCounts = field(default_factory=EditCounts)
    mer: EditCounts = field(default_factory=EditCounts)
    wer: EditCounts = field(default_factory=EditCounts)

    @classmethod
    def of(cls, scores: Iterable[UtteranceScore]) -> CorpusScore:
        n, totals = 0, {m: EditCounts() for m in METRICS}
        for score in scores:
            n += 1
            totals = {m: totals[m] + score.counts(m) for m in METRICS}
        return cls(utterances=n, **totals)

    def counts(self, metric: str) -> EditCounts:
        if metric not in METRICS:
            raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
        return getattr(self, metric)


def corpus_rate(scores: Iterable[UtteranceScore], metric: str = "cer") -> float:
    """Total edits over total reference tokens for `metric` across `scores`."""
    return CorpusScore.of(scores).counts(metric).rate


def paired_bootstrap(
    scores_a: Sequence[UtteranceScore],
    scores_b: Sequence[UtteranceScore],
    metric: str = "cer",
    n: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> tuple[float, float, float]:
    """Rate of B minus rate of A on the same utterances, with a paired-bootstrap interval.

    Each of `n` resamples draws utterances with replacement (the same draw for both models) and
    computes both corpus-level rates (sum of edits / sum of reference tokens). Returns
    (difference on the full set, lower, upper) of the `confidence` percentile interval.
    Utterances are paired by id; both sides must hold the same ids.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, not {metric!r}")
    by_id = {s.id: s for s in scores_b}
    if len(scores_a) != len(scores_b) or len(by_id) != len(scores_b):
        raise ValueError("paired bootstrap needs the same utterances (unique ids) on both sides")
    try:
        paired_b = [by_id[s.id] for s in scores_a]
    except KeyError as exc:
        raise ValueError(f"utterance {exc.args[0]!r} is scored for one model only") from None
    if not scores_a:
        raise ValueError("paired bootstrap needs at least one utterance")
    err_a = np.array([s.counts(metric).errors for s in scores_a], dtype=np.int64)
    ref_a = np.array([s.counts(metric).reference_length for s in scores_a], dtype=np.int64)
    err_b = np.array([s.counts(metric).errors for s in paired_b], dtype=np.int64)
    ref_b = np.array([s.counts(metric).reference_length for s in paired_b], dtype=np.int64)
    diff = err_b.sum() / ref_b.sum() - err_a.sum() / ref_a.sum()
    rng = np.random.default_rng(seed)
    m = len(scores_a)
    chunk = max(1, 2_000_000 // m)  # resamples per batch, to bound memory on big eval sets
    diffs = []
    for start in range(0, n, chunk):
        idx = rng.integers(0, m, size=(min(chunk, n - start), m))
        diffs.append(err_b[idx].sum(1) / ref_b[idx].sum(1) - err_a[idx].sum(1) / ref_a[idx].sum(1))
    all_diffs = np.concatenate(diffs)
    tail = 100 * (1 - confidence) / 2
    lo, hi = np.percentile(all_diffs, [tail, 100 - tail])
    return float(diff), float(lo), float(hi)


__all__ = [
    "METRICS",
    "EditCounts",
    "UtteranceScore",
    "CorpusScore",
    "score_utterance",
    "edit_counts",
    "corpus_rate",
    "paired_bootstrap",
    "cer_tokens",
    "mer_tokens",
    "wer_tokens",
]
