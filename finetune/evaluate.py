"""Model-card scores, computed by production's code: `voice.asr.Transcriber` decodes and
`eval.runner.eval_utterances` scores, so a card's CER is the CER `voice eval` reports."""

from __future__ import annotations

import logging
from pathlib import Path

from voice.errors import VoiceError

log = logging.getLogger("voice")


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


def compare(result, against, seed: int = 0) -> dict:
    """The card's entry for `result` minus `against` on the same utterances: eval's paired
    bootstrap (`eval.results.compare_pair`), as `voice eval --json` reports it."""
    from eval.results import compare_pair

    c = compare_pair(against, result, seed=seed)
    if c is None:
        raise VoiceError(f"{result.model} and {against.model} share no scored utterance")
    return {"against": c.baseline, "cer_delta": round(c.diff, 4),
            "ci95": [round(c.lo, 4), round(c.hi, 4)]}  # fmt: skip


def cer_of(result) -> float | None:
    """Corpus CER of a ModelResult, None when nothing could be scored."""
    corpus = result.corpus
    return round(corpus.cer.rate, 4) if corpus.utterances else None


__all__ = ["cer_of", "compare", "score_model", "split_entries"]
