"""Model-card scores, computed by production's code: `voice.asr.Transcriber` decodes and
`eval.runner.eval_utterances` scores, so a card's CER is the CER `voice eval` reports."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from voice.errors import VoiceError

log = logging.getLogger("voice")

BOOTSTRAP_RESAMPLES = 1000  # paired-bootstrap resamples behind a card's confidence intervals


@dataclass(frozen=True)
class Comparison:
    """CER of `model` minus CER of `against` on the same utterances, with a 95% interval."""

    against: str
    delta: float
    low: float
    high: float

    @property
    def significant(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"against": self.against, "cer_delta": round(self.delta, 4),
                "ci95": [round(self.low, 4), round(self.high, 4)]}  # fmt: skip


def split_entries(manifest: str | Path, split: str | None) -> list:
    """The manifest's entries of one split (all when `split` is None), as `voice eval` reads them."""
    from voice.data.manifest import load_manifest

    entries, problems = load_manifest(manifest)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise VoiceError(f"{manifest}: {len(errors)} problem(s), first: {errors[0]}")
    return [e for e in entries if split is None or e.split == split]


def score_model(model: str | Path, entries: list, name: str, compute_type: str = "int8",
                threads: int = 0, prompt: str | None = None, progress: bool = False):  # fmt: skip
    """Transcribe `entries` one utterance at a time with the production transcriber; returns
    eval's ModelResult (corpus CER in `.corpus.cer.rate`)."""
    from eval.runner import EvalOptions, eval_utterances
    from voice.asr import AsrOptions, Transcriber

    options = AsrOptions(compute_type=compute_type, cpu_threads=threads, initial_prompt=prompt)
    transcriber = Transcriber.load(model, options)
    return eval_utterances(name, transcriber, entries, EvalOptions(progress=progress))


def compare(result, against, seed: int = 0) -> Comparison:
    """Paired-bootstrap CER difference of `result` minus `against` (same utterances)."""
    from eval.metrics import paired_bootstrap

    delta, low, high = paired_bootstrap(
        against.scores, result.scores, "cer", n=BOOTSTRAP_RESAMPLES, seed=seed
    )
    return Comparison(against.model, float(delta), float(low), float(high))


def cer_of(result) -> float | None:
    """Corpus CER of a ModelResult, None when nothing could be scored."""
    corpus = result.corpus
    return round(corpus.cer.rate, 4) if corpus.utterances else None


__all__ = ["Comparison", "cer_of", "compare", "score_model", "split_entries"]
