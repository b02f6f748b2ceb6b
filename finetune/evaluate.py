"""CER of a CTranslate2 Whisper directory on manifest rows, decoded as the transcriber does."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from finetune.data import read_samples, window_for
from finetune.decode import cer, ct2_transcribe_tokens, to_hk
from voice.features import encoder_input

log = logging.getLogger("voice")

EVAL_BATCH = 8  # utterances per CTranslate2 encode/generate call


@dataclass(frozen=True)
class SplitScore:
    """CER of one split, and what it cost."""

    cer: float
    utterances: int
    seconds: float  # wall time for features, encoding and decoding
    audio_seconds: float
    hypotheses: tuple[str, ...]


def score_ct2(model_dir: str | Path, rows: list[dict], window: int | str,
              compute_type: str = "int8", threads: int = 0, progress: bool = False) -> SplitScore:  # fmt: skip
    """Greedy transcripts of `rows` from CTranslate2 encode/generate at the model's windows."""
    import ctranslate2
    from tqdm import tqdm

    from finetune.ct2_import import load_processor

    tokenizer = load_processor(model_dir).tokenizer
    model = ctranslate2.models.Whisper(
        str(model_dir), device="cpu", compute_type=compute_type, intra_threads=threads
    )
    start = time.perf_counter()
    hyps = [""] * len(rows)
    order = sorted(range(len(rows)), key=lambda i: window_for(rows[i]["duration"], window))
    bar = tqdm(total=len(rows), desc="scoring", disable=not progress, leave=False)
    audio = 0.0
    i = 0
    while i < len(order):
        w = window_for(rows[order[i]]["duration"], window)
        group = [
            j for j in order[i : i + EVAL_BATCH] if window_for(rows[j]["duration"], window) == w
        ]
        samples = [read_samples(rows[j]) for j in group]
        audio += sum(len(s) for s in samples) / 16000
        mels = np.stack([encoder_input(s, w) for s in samples])
        for j, tokens in zip(group, ct2_transcribe_tokens(model, mels), strict=True):
            hyps[j] = to_hk(tokenizer.decode(tokens, skip_special_tokens=True)).strip()
        i += len(group)
        bar.update(len(group))
    bar.close()
    seconds = time.perf_counter() - start
    score = cer([r["text"] for r in rows], hyps)
    return SplitScore(score, len(rows), seconds, audio, tuple(hyps))


__all__ = ["SplitScore", "score_ct2"]
