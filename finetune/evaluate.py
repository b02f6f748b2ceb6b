"""Model-card scores, computed by production's code: `voice.asr.Transcriber` decodes and
`eval.runner.eval_utterances` scores, so a card's CER is the CER `voice eval` reports."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, fields
from pathlib import Path

from voice.errors import VoiceError

log = logging.getLogger(__name__)


def split_entries(manifest: str | Path, split: str | None) -> list:
    """The manifest's entries of one split (all when `split` is None), as `voice eval` reads them."""
    from voice.data.manifest import load_manifest

    entries, problems = load_manifest(manifest)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        raise VoiceError(f"{manifest}: {len(errors)} problem(s), first: {errors[0]}")
    return [e for e in entries if split is None or e.split == split]


def score_model(model: str | Path, entries: list, name: str, compute_type: str = "int8",
                threads: int = 0, prompt: str | None = None, progress: bool = False,
                cache_dir: Path | None = None, device: str = "auto"):  # fmt: skip
    """Transcribe `entries` one utterance at a time with the production transcriber; returns
    eval's ModelResult (corpus CER in `.corpus.cer.rate`). With `cache_dir`, transcripts are
    kept there (`CachedTranscriber`): for reference models that every run scores again."""
    from eval.runner import EvalOptions, eval_utterances
    from voice.asr import AsrOptions, Transcriber

    options = AsrOptions(compute_type=compute_type, cpu_threads=threads, initial_prompt=prompt,
                         device=device)  # fmt: skip
    transcriber = Transcriber.load(model, options)
    if cache_dir is not None:
        transcriber = CachedTranscriber(transcriber, cache_dir)
    try:
        return eval_utterances(name, transcriber, entries, EvalOptions(progress=progress))
    finally:
        if cache_dir is not None:
            transcriber.save()


def score_nonspeech(
    model: str | Path,
    rows: list[dict],
    compute_type: str = "int8",
    threads: int = 0,
    device: str = "auto",
    cache_dir: Path | None = None,
) -> dict:
    """How many generated non-speech clips (`finetune.nonspeech` rows) the production
    transcriber writes text for, guards included: what an agent would see on the screen.
    With `cache_dir`, transcripts are kept there as `score_model` keeps them."""
    from finetune.nonspeech import nonspeech_samples, recipe
    from voice.asr import AsrOptions, Transcriber
    from voice.types import Segment

    options = AsrOptions(compute_type=compute_type, cpu_threads=threads, device=device)
    transcriber = Transcriber.load(model, options)
    if cache_dir is not None:
        transcriber = CachedTranscriber(transcriber, cache_dir)
    written = []
    for row in rows:
        samples = nonspeech_samples(row)
        text = transcriber.transcribe(Segment(row["call_id"], 0.0, row["duration"], samples)).text
        if text:
            written.append(f"{recipe(row)[0]}: {text}")
    if cache_dir is not None:
        transcriber.save()
    return {"clips": len(rows), "with_text": len(written), "examples": written[:5]}


class CachedTranscriber:
    """A transcriber whose outputs are kept on disk, keyed by everything that decides them: the
    model's files, the decoding options in effect, the transcriber's code and the audio itself.
    Zero-shot base is scored on the same real sets by every fine-tuning run; this decodes it
    once. A changed model, option, prompt or `voice.asr` makes a new key, never a stale hit."""

    def __init__(self, transcriber, cache_dir: Path):
        self.transcriber = transcriber
        self.name = transcriber.name
        self.path = Path(cache_dir) / f"{self._model_key()}.jsonl"
        self.known: dict[str, dict] = {}
        self.new: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    item = json.loads(line)
                    self.known[item["audio"]] = item["transcript"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn or foreign line costs one decode, nothing else
        self.hits = 0

    def _model_key(self) -> str:
        import voice.asr

        t = self.transcriber
        digest = hashlib.sha256()
        for name in sorted(os.listdir(t.model_dir)):
            path = Path(t.model_dir) / name
            if path.is_file():
                digest.update(name.encode())
                digest.update(hashlib.sha256(path.read_bytes()).digest())
        digest.update(repr(sorted(asdict(t.options).items())).encode())
        digest.update(repr(t.prompt_text).encode())
        digest.update(Path(voice.asr.__file__).read_bytes())
        return digest.hexdigest()[:32]

    def transcribe(self, segment):
        from voice.asr import Transcript

        key = hashlib.sha256(segment.samples.tobytes()).hexdigest()
        if key in self.known:
            self.hits += 1
            item = self.known[key]
            return Transcript(**{**item, "tokens": tuple(item.get("tokens", ()))})
        transcript = self.transcriber.transcribe(segment)
        item = {f.name: getattr(transcript, f.name) for f in fields(transcript)}
        item["tokens"] = list(item["tokens"])
        self.known[key] = self.new[key] = item
        return transcript

    def save(self) -> None:
        """Append this run's new transcripts (one JSON line each; a torn line is skipped)."""
        if not self.new:
            return
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # transcripts of real speech are personal data: owner-only from the first byte
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as f:
            for key, item in self.new.items():
                f.write(json.dumps({"audio": key, "transcript": item}, ensure_ascii=False) + "\n")
        self.new = {}


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


__all__ = [
    "CachedTranscriber",
    "cer_of",
    "compare",
    "score_model",
    "score_nonspeech",
    "split_entries",
]
