"""The recording manifest (NeMo-style JSONL, documented in recordings/README.md): load, validate and write it."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voice.errors import VoiceError
from voice.files import write_atomic

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")  # the splits fine-tuning and eval understand
REQUIRED = ("audio_filepath", "text")  # keys every line must carry
KNOWN_KEYS = ("audio_filepath", "offset", "duration", "text", "call_id", "speaker", "split")


def hash_split(key: str, dev: float = 0.1, test: float = 0.1) -> str:
    """A stable train/dev/test choice for `key` (a speaker, call or sentence), about 80/10/10."""
    digest = hashlib.sha1(key.encode("utf-8")).digest()
    x = int.from_bytes(digest[:8], "big") % 10_000 / 10_000
    return "dev" if x < dev else "test" if x < dev + test else "train"


class DataError(VoiceError):
    """A manifest or data folder that cannot be used; the message lists file, line and field."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest line (or a whole file when `line` is 0)."""

    file: str
    line: int
    field: str
    message: str
    severity: str = "error"  # "error": cannot be trained on; "warning": worth a look

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        what = f" [{self.field}]" if self.field else ""
        return f"{where}:{what} {self.message}"


@dataclass(frozen=True)
class ManifestEntry:
    """One supervised utterance: a span of an audio file and what the caller said in it."""

    audio_path: Path  # absolute path of the audio file
    audio_filepath: str  # the path as written in the manifest (relative to its folder)
    text: str
    offset: float | None = None  # seconds into the file; None means the whole file
    duration: float | None = None  # seconds; None means to the end of the file
    call_id: str = ""  # defaults to the audio file's stem
    speaker: str | None = None
    split: str | None = None
    line: int = 0  # 1-based line in the manifest it came from (0 when made in code)
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        if not self.call_id:
            object.__setattr__(self, "call_id", Path(self.audio_filepath).stem)

    @property
    def end(self) -> float | None:
        """End of the span in seconds, when both offset and duration are known."""
        if self.duration is None:
            return None
        return (self.offset or 0.0) + self.duration

    def load_audio(self, channel: int | None = None) -> np.ndarray:
        """The utterance's audio as 16 kHz mono float32 (voice.audio.read_audio)."""
        from voice.audio import read_audio

        return read_audio(self.audio_path, self.offset or 0.0, self.duration, channel=channel)

    def to_dict(self, manifest_dir: Path | None = None) -> dict[str, Any]:
        """The manifest line as a dict; the path is made relative to `manifest_dir` if given."""
        path = self.audio_filepath
        if manifest_dir is not None:
            path = Path(os.path.relpath(self.audio_path, Path(manifest_dir).resolve())).as_posix()
        out: dict[str, Any] = {"audio_filepath": path}
        if self.offset is not None:
            out["offset"] = round(self.offset, 3)
        if self.duration is not None:
            out["duration"] = round(self.duration, 3)
        out["text"] = self.text
        out["call_id"] = self.call_id
        if self.speaker is not None:
            out["speaker"] = self.speaker
        if self.split is not None:
            out["split"] = self.split
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out


def _number(record: dict, key: str, file: str, line: int, problems: list[Problem]) -> float | None:
    value = record.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        problems.append(Problem(file, line, key, f"must be a number of seconds, got {value!r}"))
        return None
    return float(value)


def parse_record(
    record: Any, manifest_dir: Path, file: str, line: int
) -> tuple[ManifestEntry | None, list[Problem]]:
    """Validate one decoded manifest line; returns the entry (None if unusable) and problems."""
    problems: list[Problem] = []
    if not isinstance(record, dict):
        kind = type(record).__name__
        return None, [Problem(file, line, "", f"expected a JSON object, got {kind}")]
    for key in REQUIRED:
        if key not in record:
            problems.append(Problem(file, line, key, "required key is missing"))
    audio = record.get("audio_filepath")
    if "audio_filepath" in record and (not isinstance(audio, str) or not audio.strip()):
        problems.append(Problem(file, line, "audio_filepath", "must be a non-empty string"))
    text = record.get("text")
    if "text" in record:
        if not isinstance(text, str):
            problems.append(Problem(file, line, "text", f"must be a string, got {text!r}"))
        elif not text.strip():
            problems.append(Problem(file, line, "text", "empty transcript"))
    offset = _number(record, "offset", file, line, problems)
    duration = _number(record, "duration", file, line, problems)
    if offset is not None and offset < 0:
        problems.append(Problem(file, line, "offset", f"negative offset {offset}"))
    if duration is not None and duration <= 0:
        problems.append(Problem(file, line, "duration", f"duration must be > 0, got {duration}"))
    split = record.get("split")
    if split is not None and split not in SPLITS:
        problems.append(
            Problem(file, line, "split", f"unknown split {split!r}; expected {'/'.join(SPLITS)}")
        )
    for key in ("call_id", "speaker"):
        value = record.get(key)
        if value is not None and not isinstance(value, str | int):
            problems.append(Problem(file, line, key, f"must be a string, got {value!r}"))
    if problems:
        return None, problems
    audio_path = Path(audio)
    if not audio_path.is_absolute():
        audio_path = manifest_dir / audio_path
    extra = {k: v for k, v in record.items() if k not in KNOWN_KEYS}
    entry = ManifestEntry(
        audio_path=audio_path,
        audio_filepath=audio,
        text=text.strip(),
        offset=offset,
        duration=duration,
        call_id=str(record.get("call_id") or ""),
        speaker=None if record.get("speaker") is None else str(record["speaker"]),
        split=split,
        line=line,
        extra=extra,
    )
    return entry, []


def load_manifest(path: str | Path) -> tuple[list[ManifestEntry], list[Problem]]:
    """Read a JSONL manifest; bad lines become Problems (file, line, field), never exceptions.

    Only structurally valid lines become entries. Raises DataError only when the file itself
    cannot be read.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read manifest ({exc.strerror or exc})") from exc
    manifest_dir = path.resolve().parent
    entries: list[ManifestEntry] = []
    problems: list[Problem] = []
    name = str(path)
    for number, blob in enumerate(raw.split(b"\n"), start=1):
        if not blob.strip():
            continue
        try:
            line_text = blob.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            problems.append(Problem(name, number, "", f"not UTF-8 ({exc.reason})"))
            continue
        try:
            record = json.loads(line_text)
        except json.JSONDecodeError as exc:
            problems.append(Problem(name, number, "", f"bad JSON: {exc.msg} (column {exc.colno})"))
            continue
        entry, found = parse_record(record, manifest_dir, name, number)
        problems.extend(found)
        if entry is not None:
            entries.append(entry)
    if not entries and not problems:
        problems.append(Problem(name, 0, "", "the manifest holds no lines"))
    return entries, problems


def validate_entries(entries: Iterable[ManifestEntry], file: str = "") -> list[Problem]:
    """Structural checks on entries made in code, before they are written."""
    problems = []
    for i, entry in enumerate(entries, start=1):
        line = entry.line or i
        record = entry.to_dict()
        record["audio_filepath"] = entry.audio_filepath or str(entry.audio_path)
        problems.extend(parse_record(record, Path("."), file, line)[1])
    return problems


def write_manifest(path: str | Path, entries: Iterable[ManifestEntry]) -> Path:
    """Validate, then write entries as JSONL atomically; audio paths relative to the manifest."""
    path = Path(path)
    entries = list(entries)
    problems = validate_entries(entries, str(path))
    if problems:
        listing = "\n  ".join(str(p) for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        raise DataError(f"not writing {path}: {len(problems)} problem(s)\n  {listing}{more}")
    path.parent.mkdir(parents=True, exist_ok=True)
    manifest_dir = path.parent.resolve()
    lines = [
        json.dumps(entry.to_dict(manifest_dir), ensure_ascii=False) + "\n" for entry in entries
    ]
    write_atomic(path, "".join(lines))
    log.debug("wrote %d lines to %s", len(lines), path)
    return path


__all__ = [
    "KNOWN_KEYS",
    "SPLITS",
    "DataError",
    "ManifestEntry",
    "Problem",
    "hash_split",
    "load_manifest",
    "parse_record",
    "validate_entries",
    "write_manifest",
]
