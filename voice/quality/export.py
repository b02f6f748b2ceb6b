"""Corrections to training data: each corrected utterance cut from its call's recording, with the
corrected text, as a manifest `voice data check` accepts and `voice finetune --corrections` uses.

Rows carry the project's manifest keys (DESIGN.md) plus `correction_id` and `original`. The speaker
is a hash of the caller's number (or of the call when the bridge gave none), so a fine-tuning run
can tell callers apart without holding their numbers. Splits are by call: every utterance of a
call lands in one split, chosen by a hash of the call id (about 80/10/10, with at least one call
in dev and in test once there are three calls). The folder is written beside the target and
renamed into place, owner-only: it holds callers' voices and words.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from voice.errors import ConfigError
from voice.files import private_dir
from voice.quality import corrections

CALLER_KEYS = ("caller", "from", "caller_id", "ani")  # meta keys bridges put the number under
MANIFEST = "manifest.jsonl"


@dataclass
class ExportSummary:
    out: Path
    utterances: int = 0
    calls: int = 0
    seconds: float = 0.0
    splits: dict[str, int] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # why each skipped correction was skipped


def export_corrections(db, record_dir: str | Path, out: str | Path, since: float | None = None,
                       until: float | None = None, force: bool = False) -> ExportSummary:  # fmt: skip
    """Write `out/manifest.jsonl` and `out/audio/*.wav` from the store's newest corrections of
    calls that started in [since, until). `db` is a store's read connection."""
    import soundfile as sf

    out, record_dir = Path(out), Path(record_dir)
    if out.exists() and not force:
        raise ConfigError(f"{out} exists; pass --force to replace it")
    found = corrections.latest(db, since, until)
    metas = {row[0]: json.loads(row[1]) for row in db.execute(
        "SELECT id, meta FROM calls WHERE id IN (SELECT DISTINCT call_id FROM corrections)")}  # fmt: skip
    splits = assign_splits(sorted({c.call_id for c in found}))
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    private_dir(private_dir(tmp) / "audio")
    summary = ExportSummary(out)
    lines, calls = [], set()
    for c in found:
        meta = metas.get(c.call_id, {})
        name = (meta.get("recording") or {}).get("file")
        source = record_dir / name if name else None
        if source is None or not source.is_file():
            summary.skipped.append(f"call {c.call_id} seq {c.seq}: no recording "
                                   f"{'in ' + str(record_dir) if name else 'was made'}")  # fmt: skip
            continue
        try:
            audio, rate = _cut(source, c.start, c.end)
        except (RuntimeError, ValueError) as exc:  # libsndfile errors, a span past the end
            summary.skipped.append(f"call {c.call_id} seq {c.seq}: {exc}")
            continue
        key = hashlib.sha256(c.call_id.encode()).hexdigest()[:12]
        clip = Path("audio") / f"{key}-{c.seq}.wav"
        sf.write(str(tmp / clip), audio, rate, subtype="PCM_16")
        (tmp / clip).chmod(0o600)
        row = {"audio_filepath": str(clip), "duration": round(len(audio) / rate, 3),
               "text": c.text, "call_id": c.call_id, "speaker": speaker_of(c.call_id, meta),
               "split": splits[c.call_id], "correction_id": c.id, "original": c.original}  # fmt: skip
        lines.append(json.dumps(row, ensure_ascii=False))
        calls.add(c.call_id)
        summary.utterances += 1
        summary.seconds += row["duration"]
        summary.splits[row["split"]] = summary.splits.get(row["split"], 0) + 1
    manifest = tmp / MANIFEST
    manifest.write_text("\n".join(lines) + ("\n" if lines else ""), encoding="utf-8")
    manifest.chmod(0o600)
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    summary.calls = len(calls)
    return summary


def _cut(path: Path, start: float, end: float) -> tuple[np.ndarray, int]:
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        rate = f.samplerate
        first, last = int(round(start * rate)), int(round(end * rate))
        if first >= f.frames or last <= first:
            raise ValueError(f"{start:.2f}-{end:.2f} s is outside the recording")
        f.seek(first)
        return f.read(min(last, f.frames) - first, dtype="float32"), rate


def speaker_of(call_id: str, meta: dict) -> str:
    """`spk_` + a hash of the caller's number, or of the call id when the bridge sent none."""
    caller = next((str(meta[k]) for k in CALLER_KEYS if meta.get(k)), None)
    return "spk_" + hashlib.sha256((caller or f"call:{call_id}").encode()).hexdigest()[:12]


def assign_splits(call_ids: list[str]) -> dict[str, str]:
    """train/dev/test by call, stable: calls ranked by a hash of their id, the first ~10% to
    test and the next ~10% to dev (at least one each from three calls on)."""
    ranked = sorted(call_ids, key=lambda c: hashlib.sha256(c.encode()).hexdigest())
    n = len(ranked)
    held = max(1, round(0.1 * n)) if n >= 3 else 0
    return {c: "test" if i < held else "dev" if i < 2 * held else "train"
            for i, c in enumerate(ranked)}  # fmt: skip


__all__ = ["ExportSummary", "assign_splits", "export_corrections", "speaker_of"]
