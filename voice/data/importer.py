"""`voice data import`: a manifest from the recordings users have (folder + .txt, CSV or JSONL).

A JSONL source (NeMo style, e.g. the real sets under recordings/) has its long lines cut into
utterances at pauses with aligned text (voice.data.align), and `--split speaker` holds out whole
speakers for test and dev. README*/ATTRIBUTION*/LICENSE* files travel with the written manifest.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

from voice.data.chinese import convert_simplified, describe_chars, normalize_text
from voice.data.manifest import (
    SPLITS,
    DataError,
    ManifestEntry,
    Problem,
    hash_split,
    load_manifest,
    write_manifest,
)
from voice.files import write_atomic

log = logging.getLogger(__name__)

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
SPLIT_CHOICES = ("auto", "speaker", *SPLITS)  # what --split accepts
UNKNOWN_SPEAKER = "unknown"  # a speaker id containing this may be anyone: train only
ATTRIBUTION_GLOBS = ("README*", "ATTRIBUTION*", "LICENSE*", "LICENCE*")  # travel with the data
PIECE_SEGMENT = "aligned"  # `segment` of a piece cut from a longer line: text aligned to its audio


@dataclass(frozen=True)
class ImportOptions:
    """How recordings become manifest lines."""

    channel: int | str | None = None  # stereo calls: customer channel (0-based) or "mix"
    # auto: the source's split column, else hash of speaker (or call) 80/10/10; speaker: whole
    # speakers held out for test and dev (below); or one split for everything
    split: str = "auto"
    audio_dir: str = "channels"  # where extracted customer channels go, beside the manifest
    max_seconds: float = 29.5  # JSONL lines longer than this are cut at pauses (voice.data.align)
    cut_turns: bool = False  # JSONL lines with `turns` [{spk, text}] are cut at turn boundaries
    test_minutes: float = 15.0  # --split speaker: test holds at least this much audio ...
    test_speakers: int = 4  # ... and at least this many speakers
    dev_minutes: float = 6.0  # --split speaker: then dev gets at least this much; the rest train
    seed: int = 0  # --split speaker: seeds the hash that orders the speakers

    def __post_init__(self) -> None:
        if self.split not in SPLIT_CHOICES:
            raise DataError(
                f"--split must be one of {', '.join(SPLIT_CHOICES)}, got {self.split!r}"
            )
        if not 1.0 <= self.max_seconds <= 30.0:
            raise DataError(
                f"--max-seconds must be 1..30 (Whisper's window), got {self.max_seconds}"
            )
        if self.test_minutes < 0 or self.dev_minutes < 0 or self.test_speakers < 0:
            raise DataError("--test-minutes, --dev-minutes and --test-speakers must be >= 0")
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


def _check_span(
    item_where: str, line: int, start: float | None, end: float | None, total: float, problems
) -> bool:
    if start is not None and (start < 0 or start >= total):
        problems.append(
            Problem(item_where, line, "start", f"{start} s is outside the file ({total:.3f} s)")
        )
        return False
    if end is not None and (end <= (start or 0.0) or end > total + TOLERANCE):
        problems.append(
            Problem(item_where, line, "end", f"{end} s is before the start or past the end of "
                    f"the file ({total:.3f} s)")
        )  # fmt: skip
        return False
    return True


def _clean_text(text: str, where: str, line: int, problems: list[Problem]) -> str:
    """Normalised, Simplified converted to HK Traditional (with a warning); may be empty."""
    text = normalize_text(text)
    text, simplified = convert_simplified(text)
    if simplified:
        problems.append(
            Problem(where, line, "text", f"Simplified characters {describe_chars(simplified)} "
                    "converted to HK Traditional", "warning")
        )  # fmt: skip
    return text


def _item_entries(
    items: list[_Item], options: ImportOptions, out_dir: Path, problems: list[Problem]
) -> list[ManifestEntry]:
    cache: dict = {}
    entries = []
    for item in items:
        if not normalize_text(item.text):
            problems.append(Problem(item.where, item.line, "text", "empty transcript"))
            continue
        text = _clean_text(item.text, item.where, item.line, problems)
        if not item.audio.is_file():
            problems.append(Problem(item.where, item.line, "file", f"{item.audio}: not found"))
            continue
        found = _customer_audio(item.audio, options, out_dir, problems, cache)
        if found is None:
            continue
        audio, total = found
        start, end = item.start, item.end
        if not _check_span(item.where, item.line, start, end, total, problems):
            continue
        call_id = item.call_id or item.audio.stem
        split = options.split if options.split in SPLITS else item.split
        if split is not None and split not in SPLITS:
            problems.append(Problem(item.where, item.line, "split", f"unknown split {split!r}"))
            continue
        if options.split != "speaker":
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
    return entries


def _turns(value, where: str, line: int, problems: list[Problem]) -> list[tuple[str, str]] | None:
    """[(speaker, text)] from a line's `turns`, or None (with a problem) when malformed."""
    if not isinstance(value, list) or not all(
        isinstance(t, dict) and isinstance(t.get("text"), str) for t in value
    ):
        problems.append(Problem(where, line, "turns", "must be a list of {spk, text} objects"))
        return None
    out = []
    for t in value:
        text = _clean_text(t["text"], where, line, problems)
        if text:
            out.append((str(t.get("spk") or "?"), text))
    return out


def _jsonl_entries(
    source: Path, options: ImportOptions, out_dir: Path, problems: list[Problem]
) -> tuple[list[ManifestEntry], int, float, int, float]:
    """Entries from a JSONL manifest, long lines (or turns) cut at pauses.

    Returns (entries, lines read, seconds read, lines cut, seconds the aligner dropped).
    """
    from voice.audio import AudioError, read_audio
    from voice.data.align import AlignOptions, Piece, cut_line

    where = str(source)
    loaded, found = load_manifest(source)
    problems.extend(found)
    lines = len(loaded) + len({p.line for p in found if p.severity == "error" and p.line})
    align = AlignOptions(max_seconds=options.max_seconds)
    cache: dict = {}
    entries: list[ManifestEntry] = []
    seconds_in, cut, lost = 0.0, 0, 0.0
    for entry in loaded:
        line = entry.line
        if not entry.audio_path.is_file():
            problems.append(
                Problem(where, line, "audio_filepath", f"{entry.audio_path}: not found")
            )
            continue
        found_audio = _customer_audio(entry.audio_path, options, out_dir, problems, cache)
        if found_audio is None:
            continue
        audio, total = found_audio
        start = entry.offset or 0.0
        end = entry.end if entry.end is not None else total
        if not _check_span(where, line, entry.offset, end, total, problems):
            continue
        length = end - start
        seconds_in += length
        text = _clean_text(entry.text, where, line, problems)
        turns = None
        if options.cut_turns and "turns" in entry.extra:
            turns = _turns(entry.extra["turns"], where, line, problems)
            if turns is None:
                continue
        if not text and not turns:
            problems.append(Problem(where, line, "text", "empty transcript"))
            continue
        if turns or length > options.max_seconds:
            try:
                samples = read_audio(audio, start, length)
            except AudioError as exc:
                problems.append(Problem(where, line, "audio_filepath", str(exc)))
                continue
            pieces = cut_line(samples, text, turns, align)
            cut += 1
        else:
            pieces = [Piece(0.0, length, text)]
        # pieces keep the line's keys, but its turns (and a source's `segment` note such as
        # "longform_unaligned") describe the whole line: a piece's text is aligned to its audio
        extra = {k: v for k, v in entry.extra.items() if k != "turns" or len(pieces) == 1}
        piece_extra = {**extra, "segment": PIECE_SEGMENT}
        usable = [p for p in pieces if not p.dropped]
        for index, piece in enumerate(pieces):
            if piece.dropped:
                lost += piece.duration
                what = "line" if not usable else f"piece {piece.start:.2f}-{piece.end:.2f} s"
                problems.append(
                    Problem(where, line, "duration", f"{entry.call_id}: {what} dropped "
                            f"({piece.duration:.1f} s, {len(piece.text)} chars): {piece.dropped}",
                            "warning")
                )  # fmt: skip
                continue
            speaker = entry.speaker
            if turns:
                speaker = f"{entry.call_id}:{'+'.join(piece.speakers)}"
            whole = len(pieces) == 1
            entries.append(
                ManifestEntry(
                    audio_path=audio.resolve(),
                    audio_filepath=str(audio),
                    text=piece.text,
                    offset=entry.offset if whole else round(start + piece.start, 3),
                    duration=entry.duration if whole else round(piece.duration, 3),
                    call_id=entry.call_id,
                    speaker=speaker,
                    split=options.split if options.split in SPLITS else entry.split,
                    line=len(entries) + 1,
                    extra=extra if whole else {**piece_extra, "utt_index": index},
                )
            )
    if options.split == "auto":
        entries = [
            e if e.split else replace(e, split=hash_split(e.speaker or e.call_id)) for e in entries
        ]
    return entries, lines, seconds_in, cut, lost


def _seconds_of(entry: ManifestEntry) -> float:
    if entry.duration is not None:
        return entry.duration
    from voice.audio import probe

    return probe(entry.audio_path).duration - (entry.offset or 0.0)


def _order(key: str, seed: int) -> bytes:
    return hashlib.sha1(f"{seed}:{key}".encode()).digest()


def speaker_split(
    entries: list[ManifestEntry], options: ImportOptions = ImportOptions(split="speaker")
) -> tuple[list[ManifestEntry], list[str]]:
    """Whole speakers to test, then dev, the rest to train; returns (entries, notes).

    Speakers (the call where there is none) are ordered by a seeded hash. Test takes them until
    it holds `test_minutes` and `test_speakers`, then dev until `dev_minutes`. Speakers whose id
    contains "unknown" may be anyone (the same person as a known one), so they only train.
    """
    seconds: dict[str, float] = defaultdict(float)
    for entry in entries:
        seconds[entry.speaker or entry.call_id] += _seconds_of(entry)
    known = sorted((k for k in seconds if UNKNOWN_SPEAKER not in k.lower()),
                   key=lambda k: _order(k, options.seed))  # fmt: skip
    chosen: dict[str, str] = {}
    test_s = dev_s = 0.0
    for key in known:
        if test_s < options.test_minutes * 60 or len(chosen) < options.test_speakers:
            chosen[key], test_s = "test", test_s + seconds[key]
        elif dev_s < options.dev_minutes * 60:
            chosen[key], dev_s = "dev", dev_s + seconds[key]
    notes = []
    tested = sum(1 for v in chosen.values() if v == "test")
    if test_s < options.test_minutes * 60 or tested < options.test_speakers:
        notes.append(
            f"test holds {test_s / 60:.1f} min from {tested} speaker(s), less than the "
            f"{options.test_minutes:g} min and {options.test_speakers} speakers asked for"
        )
    if options.dev_minutes and dev_s < options.dev_minutes * 60:
        notes.append(f"dev holds {dev_s / 60:.1f} min, less than the {options.dev_minutes:g} asked")
    out = [replace(e, split=chosen.get(e.speaker or e.call_id, "train")) for e in entries]
    return out, notes


ATTRIBUTION_SUFFIX = ".attribution.json"  # sidecar beside a manifest: its sources and licences


def attribution_path(manifest: Path) -> Path:
    """Where the attribution sidecar of `manifest` lives (read by fine-tuning for model cards)."""
    return manifest.with_name(manifest.name + ATTRIBUTION_SUFFIX)


def carry_attribution(source_dir: Path, manifest: Path, entries: list[ManifestEntry]) -> Path:
    """Copy the source's README/ATTRIBUTION/LICENSE files beside `manifest`; write the sidecar.

    Copies are named `<source folder>_<file>` so that several sources can share an output folder.
    The sidecar `<manifest>.attribution.json` lists {"sources", "licenses", "files"} with paths
    relative to the manifest's folder.
    """
    out_dir = manifest.resolve().parent
    source_dir = source_dir.resolve()
    found = sorted({p for pattern in ATTRIBUTION_GLOBS for p in source_dir.glob(pattern)
                    if p.is_file()})  # fmt: skip
    files = []
    for path in found:
        if source_dir == out_dir:
            files.append(path.name)
            continue
        target = out_dir / f"{source_dir.name}_{path.name}"
        if not target.is_file() or target.read_bytes() != path.read_bytes():
            write_atomic(target, path.read_bytes())
        files.append(target.name)
    licenses = sorted({str(e.extra["license"]) for e in entries if e.extra.get("license")})
    sidecar = attribution_path(manifest)
    body = {
        "sources": [Path(os.path.relpath(source_dir, out_dir)).as_posix()],
        "licenses": licenses,
        "files": files,
    }
    write_atomic(sidecar, json.dumps(body, ensure_ascii=False, indent=2) + "\n")
    return sidecar


@dataclass
class ImportReport:
    """What an import read, wrote, cut and left out."""

    source: Path
    manifest: Path | None
    entries: list[ManifestEntry]
    problems: list[Problem]
    lines_in: int = 0
    seconds_in: float = 0.0
    lines_cut: int = 0
    seconds_dropped: float = 0.0
    attribution: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_out(self) -> float:
        return sum(_seconds_of(e) for e in self.entries)

    @property
    def dropped(self) -> list[Problem]:
        """Lines and pieces the aligner could not bring under the limit, with the reason."""
        return [p for p in self.problems if p.field == "duration" and " dropped (" in p.message]

    @property
    def errors(self) -> list[Problem]:
        """Items left out because of errors in the source (missing audio, bad lines, ...)."""
        return [p for p in self.problems if p.severity == "error"]

    def format(self) -> str:
        """The report as `voice data import` prints it."""
        out_s = self.seconds_out
        share = f" ({100 * out_s / self.seconds_in:.1f}% of the audio)" if self.seconds_in else ""
        out = [
            f"in:  {self.lines_in} line(s), {self.seconds_in / 60:.2f} min from {self.source}",
        ]
        if self.lines_cut:
            out.append(f"cut: {self.lines_cut} line(s) at pauses (voice.data.align)")
        out.append(
            f"out: {len(self.entries)} utterance(s), {out_s / 60:.2f} min{share}"
            + (f" -> {self.manifest}" if self.manifest else "")
        )
        dropped = self.dropped
        if self.errors:
            out.append(f"left out with errors: {len(self.errors)} (listed on stderr)")
        out.append(f"dropped by the aligner: {len(dropped) or 'none'}"
                   + (f" ({self.seconds_dropped / 60:.2f} min)" if dropped else ""))  # fmt: skip
        out.extend(f"  {p}" for p in dropped)
        out.append(f"{'split':<8}{'speakers':>9}{'utts':>7}{'minutes':>9}")
        for name in SPLITS:
            rows = [e for e in self.entries if e.split == name]
            if rows:
                speakers = len({e.speaker or e.call_id for e in rows})
                minutes = sum(_seconds_of(e) for e in rows) / 60
                out.append(f"{name:<8}{speakers:>9}{len(rows):>7}{minutes:>9.2f}")
        out.extend(f"note: {n}" for n in self.notes)
        if self.attribution is not None:
            out.append(f"attribution: {self.attribution}")
        return "\n".join(out)


def import_data(
    source: str | Path, manifest: str | Path, options: ImportOptions = ImportOptions()
) -> ImportReport:
    """Build and write a manifest from a folder (audio + .txt), a CSV or a JSONL manifest.

    Items with errors are left out and listed; Simplified transcripts are converted with a
    warning; JSONL lines over `max_seconds` (or with turns, given `cut_turns`) are cut at
    pauses, and pieces that cannot be cut are listed with the reason.
    """
    source, manifest = Path(source), Path(manifest)
    problems: list[Problem] = []
    out_dir = manifest.resolve().parent
    report = ImportReport(source, None, [], problems)
    if source.is_dir():
        items = _folder_items(source, problems)
        source_dir = source
    elif source.is_file() and source.suffix.lower() in (".jsonl", ".json"):
        entries, report.lines_in, report.seconds_in, report.lines_cut, report.seconds_dropped = (
            _jsonl_entries(source, options, out_dir, problems)
        )
        source_dir, items = source.parent, None
    elif source.is_file():
        items = _csv_items(source, problems)
        source_dir = source.parent
    else:
        raise DataError(f"{source}: no such folder, CSV or JSONL file")
    if items is not None:
        unread = sum(1 for p in problems if p.severity == "error")  # items that never parsed
        entries = _item_entries(items, options, out_dir, problems)
        report.lines_in = len(items) + unread
        report.seconds_in = sum(_seconds_of(e) for e in entries)
    if options.split == "speaker":
        entries, report.notes = speaker_split(entries, options)
    entries = [replace(e, line=i) for i, e in enumerate(entries, start=1)]
    report.entries = entries
    if entries:
        report.manifest = write_manifest(manifest, entries)
        report.attribution = carry_attribution(source_dir, report.manifest, entries)
    return report


def import_recordings(
    source: str | Path, manifest: str | Path, options: ImportOptions = ImportOptions()
) -> tuple[Path | None, list[ManifestEntry], list[Problem]]:
    """`import_data` as (manifest path or None when nothing could be imported, entries, problems)."""
    report = import_data(source, manifest, options)
    return report.manifest, report.entries, report.problems


__all__ = [
    "ImportOptions",
    "ImportReport",
    "carry_attribution",
    "import_data",
    "import_recordings",
    "speaker_split",
]
