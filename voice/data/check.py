"""`voice data check`: figures about a manifest and every problem that blocks training on it."""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from voice.data.chinese import describe_chars, foreign_chars, simplified_chars
from voice.data.manifest import SPLITS, ManifestEntry, Problem, load_manifest

MIN_CALLS = 500  # the fine-tune recipe expects at least this many calls
MAX_SECONDS = 30.0  # Whisper sees a 30 s window; longer utterances cannot be trained on
MAX_CHARS = 200  # longer transcripts overflow Whisper's 448-token decoder window
MIN_SECONDS = 0.2  # shorter spans hold too little speech to learn from
MAX_CHARS_PER_SECOND = 20.0  # faster than anyone speaks: text and audio probably do not match
TOLERANCE = 0.01  # seconds an end may pass the file's end (rounding to ms)


@dataclass(frozen=True)
class SplitFigures:
    """Totals for one split."""

    calls: int
    utterances: int
    hours: float
    speakers: int
    distinct_texts: int


@dataclass(frozen=True)
class CheckReport:
    """What `check_manifest` found: figures per split and the problems, errors first."""

    manifest: str
    lines: int
    entries: int
    calls: int
    speakers: int
    distinct_texts: int
    hours: float
    splits: dict[str, SplitFigures]
    sample_rates: dict[int, int]  # sample rate -> number of files
    channels: dict[int, int]  # channel count -> number of files
    files: int
    durations: tuple[float, float, float]  # min, median, max utterance seconds
    foreign: dict[str, int]  # characters outside Traditional Chinese -> count
    shared_texts: dict[str, int] = field(default_factory=dict)  # "dev/train" -> texts in both
    problems: list[Problem] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when the manifest can be trained on (warnings allowed)."""
        return not self.errors

    def format(self, max_problems: int = 100) -> str:
        """The report as text, as `voice data check` prints it."""
        out = [f"manifest: {self.manifest}"]
        out.append(
            f"lines: {self.lines}  usable utterances: {self.entries}  calls: {self.calls}  "
            f"speakers: {self.speakers}  distinct sentences: {self.distinct_texts}  "
            f"hours: {self.hours:.2f}  audio files: {self.files}"
        )
        out.append(f"{'split':<8}{'calls':>7}{'utts':>8}{'hours':>8}{'speakers':>10}{'texts':>8}")
        for name, fig in self.splits.items():
            out.append(
                f"{name:<8}{fig.calls:>7}{fig.utterances:>8}{fig.hours:>8.2f}"
                f"{fig.speakers:>10}{fig.distinct_texts:>8}"
            )
        rates = ", ".join(f"{r} Hz x{n}" for r, n in sorted(self.sample_rates.items())) or "-"
        chans = ", ".join(f"{c} ch x{n}" for c, n in sorted(self.channels.items())) or "-"
        out.append(f"sample rates: {rates}; channels: {chans}")
        lo, med, hi = self.durations
        out.append(f"utterance seconds: min {lo:.2f}  median {med:.2f}  max {hi:.2f}")
        if self.shared_texts:
            shared = ", ".join(f"{k}: {v}" for k, v in self.shared_texts.items())
            out.append(f"sentences shared between splits: {shared}")
        if self.foreign:
            chars = describe_chars(sorted(self.foreign))
            out.append(f"characters outside Traditional Chinese: {chars}")
        else:
            out.append("characters outside Traditional Chinese: none")
        problems = self.errors + self.warnings
        for problem in problems[:max_problems]:
            out.append(f"{problem.severity}: {problem}")
        if len(problems) > max_problems:
            out.append(f"... and {len(problems) - max_problems} more problem(s)")
        verdict = "OK" if self.ok else "FAILED"
        out.append(
            f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)"
            + ("" if self.ok else " - fix the errors above before training")
        )
        return "\n".join(out)


def _probe_files(entries: list[ManifestEntry]) -> dict[Path, object]:
    """Probe each distinct audio file once: AudioInfo, or the error message."""
    from voice.audio import AudioError, probe

    infos: dict[Path, object] = {}
    for entry in entries:
        if entry.audio_path in infos:
            continue
        if not entry.audio_path.is_file():
            infos[entry.audio_path] = "file not found"
            continue
        try:
            infos[entry.audio_path] = probe(entry.audio_path)
        except AudioError as exc:
            infos[entry.audio_path] = str(exc).split(": ", 1)[-1]
    return infos


def _check_text(entry: ManifestEntry, file: str, problems: list[Problem], foreign: Counter) -> bool:
    """Add the text's problems; False when it cannot be trained on."""
    text = entry.text
    ok = True
    if len(text) > MAX_CHARS:
        ok = False
        problems.append(
            Problem(file, entry.line, "text", f"over-long transcript ({len(text)} > {MAX_CHARS})")
        )
    simplified = simplified_chars(text)
    if simplified:
        ok = False
        problems.append(
            Problem(
                file,
                entry.line,
                "text",
                f"Simplified characters {describe_chars(simplified)}; convert to HK Traditional "
                "(`voice data import` does this)",
            )
        )
    odd = foreign_chars(text)
    if odd:
        foreign.update(ch for ch in text if ch in odd)
        problems.append(
            Problem(
                file,
                entry.line,
                "text",
                f"characters outside Traditional Chinese: {describe_chars(odd)}",
                "warning",
            )
        )
    return ok


def check_manifest(path: str | Path) -> CheckReport:
    """Load a manifest, probe its audio and report figures and problems; never raises on data."""
    path = Path(path)
    file = str(path)
    entries, problems = load_manifest(path)
    lines = sum(1 for line in path.read_bytes().split(b"\n") if line.strip())
    infos = _probe_files(entries)
    good: list[tuple[ManifestEntry, float]] = []  # entries with their span length in seconds
    foreign: Counter = Counter()
    spans: dict[Path, list[tuple[float, float, int]]] = defaultdict(list)
    for entry in entries:
        text_ok = _check_text(entry, file, problems, foreign)
        info = infos[entry.audio_path]
        if isinstance(info, str):
            problems.append(
                Problem(file, entry.line, "audio_filepath", f"{entry.audio_filepath}: {info}")
            )
            continue
        if not 8_000 <= info.sample_rate <= 192_000:
            problems.append(
                Problem(
                    file,
                    entry.line,
                    "audio_filepath",
                    f"{entry.audio_filepath}: implausible sample rate {info.sample_rate} Hz",
                )
            )
            continue
        start = entry.offset or 0.0
        length = info.duration - start if entry.duration is None else entry.duration
        if start >= info.duration:
            problems.append(
                Problem(
                    file,
                    entry.line,
                    "offset",
                    f"{start:.3f} s is past the end of {entry.audio_filepath} "
                    f"({info.duration:.3f} s)",
                )
            )
            continue
        if start + length > info.duration + TOLERANCE:
            problems.append(
                Problem(
                    file,
                    entry.line,
                    "duration",
                    f"span {start:.3f}-{start + length:.3f} s runs past the end of "
                    f"{entry.audio_filepath} ({info.duration:.3f} s)",
                )
            )
            continue
        if length > MAX_SECONDS:
            problems.append(
                Problem(
                    file,
                    entry.line,
                    "duration",
                    f"{length:.1f} s is longer than Whisper's {MAX_SECONDS:.0f} s window; "
                    "cut it into utterances",
                )
            )
            continue
        if length < MIN_SECONDS:
            problems.append(
                Problem(
                    file, entry.line, "duration", f"very short span ({length:.3f} s)", "warning"
                )
            )
        spoken = sum(1 for ch in entry.text if not ch.isspace())
        if length > 0 and spoken / length > MAX_CHARS_PER_SECOND:
            problems.append(
                Problem(
                    file,
                    entry.line,
                    "text",
                    f"{spoken} characters in {length:.2f} s: text and audio probably do not match",
                    "warning",
                )
            )
        spans[entry.audio_path].append((start, start + length, entry.line))
        if text_ok:
            good.append((entry, length))
    for spans_of_file in spans.values():
        spans_of_file.sort()
        for (s0, e0, l0), (s1, _e1, l1) in zip(spans_of_file, spans_of_file[1:], strict=False):
            if s1 < e0 - TOLERANCE:
                problems.append(
                    Problem(
                        file,
                        l1,
                        "offset",
                        f"span starting at {s1:.3f} s overlaps line {l0} ({s0:.3f}-{e0:.3f} s)",
                    )
                )
    return _report(path, lines, entries, good, infos, foreign, problems)


def _report(path, lines, entries, good, infos, foreign, problems) -> CheckReport:
    file = str(path)
    by_split: dict[str, list[tuple[ManifestEntry, float]]] = defaultdict(list)
    for entry, length in good:
        by_split[entry.split or "(none)"].append((entry, length))
    splits = {}
    for name in [*SPLITS, "(none)"]:
        items = by_split.get(name)
        if not items:
            continue
        splits[name] = SplitFigures(
            calls=len({e.call_id for e, _ in items}),
            utterances=len(items),
            hours=sum(length for _, length in items) / 3600,
            speakers=len({e.speaker for e, _ in items if e.speaker is not None}),
            distinct_texts=len({e.text for e, _ in items}),
        )
    speaker_splits: dict[str, set[str]] = defaultdict(set)
    for entry, _ in good:
        if entry.speaker is not None and entry.split:
            speaker_splits[entry.speaker].add(entry.split)
    for speaker, names in sorted(speaker_splits.items()):
        if len(names) > 1:
            problems.append(
                Problem(
                    file,
                    0,
                    "speaker",
                    f"speaker {speaker} is in several splits ({', '.join(sorted(names))}); "
                    "evaluation will flatter the model",
                    "warning",
                )
            )
    texts = {name: {e.text for e, _ in by_split.get(name, [])} for name in SPLITS}
    shared = {}
    for other in ("dev", "test"):
        if texts[other] and texts["train"]:
            shared[f"{other}/train"] = len(texts[other] & texts["train"])
    calls = len({e.call_id for e, _ in good})
    if good and calls < MIN_CALLS:
        problems.append(
            Problem(
                file,
                0,
                "",
                f"only {calls} call(s); the fine-tune recipe expects {MIN_CALLS}+",
                "warning",
            )
        )
    if good and "train" not in splits:
        problems.append(Problem(file, 0, "split", "no utterances in the train split", "warning"))
    if entries and not good:
        problems.append(Problem(file, 0, "", "no usable utterances"))
    lengths = sorted(length for _, length in good)
    files = [info for info in infos.values() if not isinstance(info, str)]
    problems.sort(key=lambda p: (p.severity != "error", p.line))
    return CheckReport(
        manifest=file,
        lines=lines,
        entries=len(good),
        calls=calls,
        speakers=len({e.speaker for e, _ in good if e.speaker is not None}),
        distinct_texts=len({e.text for e, _ in good}),
        hours=sum(lengths) / 3600,
        splits=splits,
        sample_rates=dict(Counter(info.sample_rate for info in files)),
        channels=dict(Counter(info.channels for info in files)),
        files=len(files),
        durations=(
            (lengths[0], statistics.median(lengths), lengths[-1]) if lengths else (0.0, 0.0, 0.0)
        ),
        foreign=dict(foreign),
        shared_texts=shared,
        problems=problems,
    )


__all__ = ["MIN_CALLS", "CheckReport", "SplitFigures", "check_manifest"]
