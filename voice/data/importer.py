"""`voice data import`: a manifest from the recordings users have (folder + .txt, or a CSV)."""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from voice.data.chinese import convert_simplified, describe_chars, normalize_text
from voice.data.manifest import (
    SPLITS,
    DataError,
    ManifestEntry,
    Problem,
    hash_split,
    write_manifest,
)

log = logging.getLogger("voice")

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3")  # what libsndfile reads
COLUMNS = {  # manifest field -> accepted CSV column names (case-insensitive)
    "file": ("file", "audio", "audio_filepath", "path", "filename", "wav"),
    "text": ("transcript", "text", "sentence", "transcription"),
    "start": ("start", "offset", "begin"),
    "end": ("end", "stop"),
    "duration": ("duration",),
    "speaker": ("speaker", "speaker_id"),
    "call_id": ("call_id", "call"),
    "split": ("split",),
}
TOLERANCE = 0.01  # seconds an end may pass the file's end


@dataclass(frozen=True)
class ImportOptions:
    """How recordings become manifest lines."""

    channel: int | str | None = None  # stereo calls: customer channel (0-based) or "mix"
    split: str = "auto"  # auto: CSV column, else hash of speaker (or call) 80/10/10; or one split
    audio_dir: str = "channels"  # where extracted customer channels go, beside the manifest

    def __post_init__(self) -> None:
        if self.split not in ("auto", *SPLITS):
            raise DataError(f"--split must be auto, train, dev or test, got {self.split!r}")
        if isinstance(self.channel, str) and self.channel != "mix":
            raise DataError(f"--channel must be a channel number or 'mix', got {self.channel!r}")


@dataclass(frozen=True)
class _Item:
    """One utterance as found in the source, before its audio is checked."""

    audio: Path
    text: str
    where: str  # file (and line) the item came from
    line: int
    start: float | None = None
    end: float | None = None
    speaker: str | None = None
    call_id: str | None = None
    split: str | None = None


def _folder_items(folder: Path, problems: list[Problem]) -> list[_Item]:
    items = []
    audio = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    for path in audio:
        txt = path.with_suffix(".txt")
        if not txt.is_file():
            problems.append(Problem(str(path), 0, "text", "no transcript (.txt) beside it"))
            continue
        try:
            text = txt.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(str(txt), 0, "text", f"cannot read as UTF-8 ({exc})"))
            continue
        items.append(_Item(path, text, str(txt), 0))
    if not audio:
        problems.append(Problem(str(folder), 0, "", "no audio files (.wav .flac .ogg .mp3)"))
    return items


def _column(fieldnames: list[str], name: str) -> str | None:
    lowered = {f.strip().lower(): f for f in fieldnames}
    return next((lowered[a] for a in COLUMNS[name] if a in lowered), None)


def _seconds(row: dict, column: str | None, where: str, line: int, problems) -> float | None:
    if column is None or not (row.get(column) or "").strip():
        return None
    try:
        return float(row[column])
    except ValueError:
        problems.append(Problem(where, line, column, f"not a number of seconds: {row[column]!r}"))
        raise


def _csv_items(table: Path, problems: list[Problem]) -> list[_Item]:
    where = str(table)
    try:
        handle = table.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise DataError(f"{table}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        sample = handle.read(4096)
        handle.seek(0)
        try:
            dialect = csv.Sniffer().sniff(sample, delimiters=",\t;")
        except csv.Error:
            dialect = csv.excel
        reader = csv.DictReader(handle, dialect=dialect)
        names = reader.fieldnames or []
        cols = {name: _column(names, name) for name in COLUMNS}
        for need in ("file", "text"):
            if cols[need] is None:
                accepted = ", ".join(COLUMNS[need])
                raise DataError(f"{table}: no {need} column (accepted names: {accepted})")
        items = []
        for row in reader:
            line = reader.line_num
            try:
                start = _seconds(row, cols["start"], where, line, problems)
                end = _seconds(row, cols["end"], where, line, problems)
                length = _seconds(row, cols["duration"], where, line, problems)
            except ValueError:
                continue
            if end is None and length is not None:
                end = (start or 0.0) + length
            name = (row.get(cols["file"]) or "").strip()
            if not name:
                problems.append(Problem(where, line, cols["file"], "empty file name"))
                continue
            audio = Path(name) if Path(name).is_absolute() else table.parent / name

            def value(key: str, row=row) -> str | None:
                return (row.get(cols[key]) or "").strip() or None if cols[key] else None

            items.append(
                _Item(
                    audio,
                    row.get(cols["text"]) or "",
                    where,
                    line,
                    start,
                    end,
                    value("speaker"),
                    value("call_id"),
                    value("split"),
                )
            )
    return items


def _customer_audio(
    path: Path, options: ImportOptions, out_dir: Path, problems: list[Problem], cache: dict
) -> tuple[Path, float] | None:
    """The file to reference (a mono extract for stereo calls) and its duration, or None."""
    if path in cache:
        return cache[path]
    from voice.audio import AudioError, probe, read_audio, write_wav

    result = None
    try:
        info = probe(path)
        result = (path, info.duration)
        if info.channels > 1 and options.channel is None:
            problems.append(
                Problem(
                    str(path),
                    0,
                    "channel",
                    f"has {info.channels} channels; pick the customer's side with --channel "
                    "N (0-based) or mix them with --channel mix",
                )
            )
            result = None
        elif info.channels > 1 and options.channel != "mix":
            samples = read_audio(path, channel=int(options.channel), target_rate=info.sample_rate)
            target = out_dir / options.audio_dir / f"{path.stem}.ch{options.channel}.wav"
            if target.exists() and target.resolve() != path.resolve():
                target = target.with_name(f"{path.parent.name}-{target.name}")
            write_wav(target, samples, info.sample_rate)
            result = (target, info.duration)
    except AudioError as exc:
        problems.append(Problem(str(path), 0, "audio_filepath", str(exc).split(": ", 1)[-1]))
    cache[path] = result
    return result


def import_recordings(
    source: str | Path, manifest: str | Path, options: ImportOptions = ImportOptions()
) -> tuple[Path | None, list[ManifestEntry], list[Problem]]:
    """Build and write a manifest from a folder (audio + same-named .txt) or a CSV table.

    Returns (manifest path or None when nothing could be imported, entries, problems). Items with
    errors are left out and listed; Simplified transcripts are converted with a warning.
    """
    source, manifest = Path(source), Path(manifest)
    problems: list[Problem] = []
    if source.is_dir():
        items = _folder_items(source, problems)
    elif source.is_file():
        items = _csv_items(source, problems)
    else:
        raise DataError(f"{source}: no such folder or CSV file")
    out_dir = manifest.resolve().parent
    cache: dict = {}
    entries = []
    for item in items:
        text = normalize_text(item.text)
        if not text:
            problems.append(Problem(item.where, item.line, "text", "empty transcript"))
            continue
        text, simplified = convert_simplified(text)
        if simplified:
            problems.append(
                Problem(
                    item.where,
                    item.line,
                    "text",
                    f"Simplified characters {describe_chars(simplified)} converted to HK "
                    "Traditional",
                    "warning",
                )
            )
        if not item.audio.is_file():
            problems.append(Problem(item.where, item.line, "file", f"{item.audio}: not found"))
            continue
        found = _customer_audio(item.audio, options, out_dir, problems, cache)
        if found is None:
            continue
        audio, total = found
        start, end = item.start, item.end
        if start is not None and (start < 0 or start >= total):
            problems.append(
                Problem(item.where, item.line, "start", f"{start} s is outside the file "
                        f"({total:.3f} s)")
            )  # fmt: skip
            continue
        if end is not None and (end <= (start or 0.0) or end > total + TOLERANCE):
            problems.append(
                Problem(item.where, item.line, "end", f"{end} s is before the start or past "
                        f"the end of the file ({total:.3f} s)")
            )  # fmt: skip
            continue
        call_id = item.call_id or item.audio.stem
        split = options.split if options.split != "auto" else item.split
        if split is not None and split not in SPLITS:
            problems.append(Problem(item.where, item.line, "split", f"unknown split {split!r}"))
            continue
        split = split or hash_split(item.speaker or call_id)
        entries.append(
            ManifestEntry(
                audio_path=audio.resolve(),
                audio_filepath=str(audio),
                text=text,
                offset=start,
                duration=None if end is None else round(end - (start or 0.0), 3),
                call_id=call_id,
                speaker=item.speaker,
                split=split,
                line=len(entries) + 1,
            )
        )
    if not entries:
        return None, entries, problems
    return write_manifest(manifest, entries), entries, problems


__all__ = ["ImportOptions", "import_recordings"]
