"""Cut long recordings into utterances at pauses, with their text aligned, without a model.

A transcript is split into units (speaker turns, else sentences, then clauses). Read speech runs
at a roughly constant rate, so a unit boundary is expected where the speech time spoken so far
matches the share of characters read so far (an English word counts as about two syllable
characters). Pauses (runs of non-speech of at least `min_pause_s`, found by webrtc VAD or an
energy detector) are the only places a cut may go: each boundary snaps to the pause nearest its
expected time, preferring long pauses, within `max(tolerance_s, tolerance_share * duration)`.
Pieces are cut in the middle of the chosen pause, so they tile the original span exactly.

Two ways to cut (`cut_line`):
- by length: the fewest sentence (then clause) boundaries that bring every piece under
  `max_seconds`;
- by turns: every turn boundary that has an acceptable pause (the others merge their turns), then
  pieces still too long are cut by length inside.
A piece that stays over `max_seconds` is dropped with a reason, never silently.

Pure functions over numpy samples and text; runs in milliseconds per minute of audio.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from voice.types import SAMPLE_RATE

DETECTORS = ("webrtc", "energy")
SENTENCE_END = re.compile(r"[。！？!?；;]+[」』”’）)\"']*")  # a sentence ends after these
QUOTE_OPEN, QUOTE_CLOSE = "「『“（(", "」』”）)"  # quotes and brackets: no sentence ends inside
# a clause ends after these, or after a sentence end inside quotes (when sentences are too long)
CLAUSE_END = re.compile(r"[，,、：:。！？!?；;]+[」』”’）)\"']*")
LATIN_WORD = re.compile(r"[A-Za-z][A-Za-z'’_-]*")  # an English word: about two syllables
SPOKEN_CHAR = re.compile(r"[0-9\u3400-\u9fff\uf900-\ufaff\U00020000-\U0003ffff]")  # one syllable


@dataclass(frozen=True)
class AlignOptions:
    """How pauses are found and unit boundaries snapped to them."""

    max_seconds: float = 29.5  # pieces must be at most this long (Whisper's window is 30 s)
    detector: str = "webrtc"  # "webrtc" (voice.vad's classifier) or "energy" (frame RMS)
    aggressiveness: int = 3  # webrtcvad 0..3; 3 hears the fewest breaths and noises as speech
    frame_ms: int = 30  # analysis frame (webrtcvad accepts 10, 20 or 30 ms)
    energy_db: float = 12.0  # energy detector: speech is this far above the noise floor
    min_pause_s: float = 0.15  # a run of non-speech at least this long is a pause
    tolerance_s: float = 1.5  # a pause may be this far (speech time) from a boundary's expected
    tolerance_share: float = 0.12  # ... or this share of the span's duration, when larger
    word_chars: float = 2.0  # an English word is worth this many Chinese characters of time
    rate_slack: float = 0.5  # a piece's speech time may differ this much (share) from its text's

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ValueError(f"detector must be one of {DETECTORS}, got {self.detector!r}")
        if self.frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30")
        if not 1.0 <= self.max_seconds <= 30.0:
            raise ValueError("max_seconds must be between 1 and 30 (Whisper's window)")


@dataclass(frozen=True)
class Unit:
    """A piece of transcript that must not be split further at this level."""

    text: str
    speaker: str | None = None  # the turn's speaker, when units are turns
    sentence_end: bool = True  # False: a clause boundary follows (weaker than a sentence end)


@dataclass(frozen=True)
class Pause:
    """A run of non-speech inside the speech (seconds from the start of the samples)."""

    start: float
    end: float
    position: float  # seconds of speech before it

    @property
    def length(self) -> float:
        return self.end - self.start

    @property
    def mid(self) -> float:
        return (self.start + self.end) / 2


@dataclass(frozen=True)
class Speech:
    """What the detector heard: total speech seconds and the pauses inside it."""

    duration: float  # seconds of audio analysed
    speech: float  # seconds of speech, pauses and leading/trailing silence excluded
    pauses: tuple[Pause, ...]


@dataclass(frozen=True)
class Piece:
    """One utterance cut from a line: a span (seconds from the line's start) and its text."""

    start: float
    end: float
    text: str
    speakers: tuple[str, ...] = ()  # turn speakers in order of first appearance
    dropped: str | None = None  # why this piece cannot be used (None: usable)

    @property
    def duration(self) -> float:
        return self.end - self.start


# --- text -------------------------------------------------------------------------------------


def _split(text: str, pattern: re.Pattern | list[re.Match]) -> list[str]:
    parts, last = [], 0
    matches = pattern.finditer(text) if isinstance(pattern, re.Pattern) else pattern
    for match in matches:
        parts.append(text[last : match.end()])
        last = match.end()
    parts.append(text[last:])
    out: list[str] = []
    for part in parts:
        if not part.strip():
            continue
        if out and not weight(part):  # stray punctuation joins the unit before it
            out[-1] += part
        else:
            out.append(part)
    return out


def sentences(text: str) -> list[str]:
    """Split after 。！？!?；; (closing quotes stay with their sentence); joined they give `text`.

    A sentence end inside quotation marks (「好嘢！我飛緊噉啊！」) does not end the sentence: a
    reader runs a quoted exclamation on, and its pause is no better than a comma's.
    """
    ends, depth, last = [], 0, 0
    for match in SENTENCE_END.finditer(text):
        depth += _quote_depth(text[last : match.end()])
        last = match.end()
        if depth <= 0:
            ends.append(match)
            depth = 0
    return _split(text, ends)


def _quote_depth(text: str) -> int:
    return sum(text.count(c) for c in QUOTE_OPEN) - sum(text.count(c) for c in QUOTE_CLOSE)


def clauses(text: str) -> list[str]:
    """Split after ，,、：: as well as sentence ends."""
    return [clause for sentence in sentences(text) for clause in _split(sentence, CLAUSE_END)]


def clause_units(text: str, speaker: str | None = None) -> list[Unit]:
    """Clause units of `text`, marking which of them end a sentence."""
    units = []
    for sentence in sentences(text):
        parts = _split(sentence, CLAUSE_END)
        for i, part in enumerate(parts):
            units.append(Unit(part, speaker, sentence_end=i == len(parts) - 1))
    return units


def weight(text: str, word_chars: float = 2.0) -> float:
    """Expected speaking time of `text` in syllable-characters (punctuation counts nothing)."""
    words = LATIN_WORD.findall(text)
    return len(SPOKEN_CHAR.findall(text)) + word_chars * len(words)


# --- audio ------------------------------------------------------------------------------------


def voiced_frames(
    samples: np.ndarray, options: AlignOptions = AlignOptions(), rate: int = SAMPLE_RATE
) -> np.ndarray:
    """One bool a frame of `options.frame_ms`: does it hold speech?"""
    n = rate * options.frame_ms // 1000
    count = samples.size // n
    if count == 0:
        return np.zeros(0, dtype=bool)
    frames = np.asarray(samples[: count * n], dtype=np.float32).reshape(count, n)
    if options.detector == "energy":
        db = 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-10)
        floor = np.percentile(db, 10)
        return db > max(floor + options.energy_db, np.percentile(db, 99) - 45)
    import webrtcvad

    vad = webrtcvad.Vad(options.aggressiveness)
    pcm = (np.clip(frames, -1.0, 1.0) * 32767).astype("<i2")
    return np.array([vad.is_speech(frame.tobytes(), rate) for frame in pcm], dtype=bool)


def find_speech(
    samples: np.ndarray, options: AlignOptions = AlignOptions(), rate: int = SAMPLE_RATE
) -> Speech:
    """Pauses (non-speech runs >= min_pause_s between speech) and the total speech time."""
    voiced = voiced_frames(samples, options, rate)
    frame = options.frame_ms / 1000
    duration = samples.size / rate
    if not voiced.any():
        return Speech(duration, 0.0, ())
    min_run = max(1, math.ceil(options.min_pause_s / frame - 1e-9))
    first, last = np.flatnonzero(voiced)[[0, -1]]
    pauses, speech, run_start = [], 0.0, None
    for k in range(first, last + 1):
        if voiced[k]:
            if run_start is not None:
                if k - run_start >= min_run:
                    pauses.append(Pause(run_start * frame, k * frame, speech))
                else:
                    speech += (k - run_start) * frame  # a short gap counts as speech
                run_start = None
            speech += frame
        elif run_start is None:
            run_start = k
    return Speech(duration, speech, tuple(pauses))


# --- cutting ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cut:
    boundary: int  # cut before unit `boundary`
    time: float  # seconds (middle of the pause)
    cost: float
    position: float = 0.0  # seconds of speech before the cut
    done: float = 0.0  # weight of the text before the cut


def _candidates(units: list[Unit], speech: Speech, options: AlignOptions) -> list[_Cut]:
    """Every acceptable (boundary, pause) pair with its cost (mismatch, short pause, clause)."""
    weights = [weight(u.text, options.word_chars) for u in units]
    total = sum(weights)
    if total <= 0 or speech.speech <= 0:
        return []
    tolerance = max(options.tolerance_s, options.tolerance_share * speech.duration)
    cuts, done = [], 0.0
    for i in range(1, len(units)):
        done += weights[i - 1]
        expected = speech.speech * done / total
        for pause in speech.pauses:
            miss = abs(pause.position - expected)
            if miss <= tolerance:
                # a second off costs as much as a 150 ms pause over a 300 ms one, or more
                cost = miss / options.tolerance_s + 0.5 * options.min_pause_s / max(
                    pause.length, 1e-3
                )
                if not units[i - 1].sentence_end:
                    cost += 0.25
                cuts.append(_Cut(i, pause.mid, cost, pause.position, done))
    return cuts


def _best_chain(
    cuts: list[_Cut], speech: Speech, total: float, options: AlignOptions, most: bool
) -> list[_Cut]:
    """Cuts in increasing boundary and time order, chosen by dynamic programming.

    most=False: least audio in pieces over max_seconds, then fewest cuts, then least cost.
    most=True: as many cuts as possible (turns), then least cost.
    A piece whose speech time is implausible for its text (off by more than `rate_slack` from
    the line's own rate, and by more than a second) is not allowed: its units merge instead.
    """
    nodes = sorted(cuts, key=lambda c: (c.boundary, c.time))
    start = _Cut(0, 0.0, 0.0, 0.0, 0.0)
    end = _Cut(10**9, speech.duration, 0.0, speech.speech, total)
    nodes = [start, *nodes, end]
    rate = speech.speech / total if total else 0.0  # seconds of speech per character

    def step(a: _Cut, b: _Cut) -> tuple | None:
        expected = (b.done - a.done) * rate
        heard = b.position - a.position
        if abs(heard - expected) > max(1.0, options.rate_slack * expected):
            return None
        length = b.time - a.time
        if most:
            return (0.0, -1, b.cost)
        return (length if length > options.max_seconds else 0.0, 1, b.cost)

    best: list[tuple | None] = [None] * len(nodes)
    back = [0] * len(nodes)
    best[0] = (0.0, 0, 0.0)
    for j in range(1, len(nodes)):
        for i in range(j):
            a, b = nodes[i], nodes[j]
            if best[i] is None or a.boundary >= b.boundary or a.time >= b.time:
                continue
            cost = step(a, b)
            if cost is None:
                continue
            score = tuple(x + y for x, y in zip(best[i], cost, strict=True))
            if best[j] is None or score < best[j]:
                best[j], back[j] = score, i
    if best[-1] is None:
        return []
    chain, j = [], len(nodes) - 1
    while j:
        j = back[j]
        if j:
            chain.append(nodes[j])
    return chain[::-1]


def _pieces(units: list[Unit], chain: list[_Cut], duration: float) -> list[Piece]:
    bounds = [0, *(c.boundary for c in chain), len(units)]
    times = [0.0, *(c.time for c in chain), duration]
    out = []
    for k in range(len(bounds) - 1):
        group = units[bounds[k] : bounds[k + 1]]
        speakers = tuple(dict.fromkeys(u.speaker for u in group if u.speaker is not None))
        text = "".join(u.text for u in group).strip()
        out.append(Piece(round(times[k], 3), round(times[k + 1], 3), text, speakers))
    return out


def cut_by_length(
    samples: np.ndarray,
    text: str,
    options: AlignOptions = AlignOptions(),
    rate: int = SAMPLE_RATE,
    speaker: str | None = None,
) -> list[Piece]:
    """Fewest cuts at sentence (then clause) boundaries that leave every piece <= max_seconds.

    Returns pieces covering the whole of `samples`; any piece still too long carries a reason in
    `dropped`.
    """
    duration = samples.size / rate
    if duration <= options.max_seconds:
        return [Piece(0.0, round(duration, 3), text.strip(), (speaker,) if speaker else ())]
    speech = find_speech(samples, options, rate)
    best: list[Piece] = []
    for level in ("sentence", "clause"):
        if level == "sentence":
            units = [Unit(s, speaker) for s in sentences(text)]
        else:
            units = clause_units(text, speaker)
        total = sum(weight(u.text, options.word_chars) for u in units)
        chain = _best_chain(_candidates(units, speech, options), speech, total, options, False)
        pieces = _pieces(units, chain, duration)
        over = sum(p.duration for p in pieces if p.duration > options.max_seconds)
        if not best or over < sum(p.duration for p in best if p.duration > options.max_seconds):
            best = pieces
        if not over:
            break
    return [_mark(p, options, speech, len(units)) for p in best]


def _mark(piece: Piece, options: AlignOptions, speech: Speech, units: int) -> Piece:
    if piece.duration <= options.max_seconds:
        return piece
    inside = [p for p in speech.pauses if piece.start < p.mid < piece.end]
    longest = max((p.length for p in inside), default=0.0)
    reason = (
        f"{piece.duration:.1f} s over {options.max_seconds:g} s: no pause near a sentence or "
        f"clause boundary ({len(inside)} pause(s) of >= {options.min_pause_s:g} s inside, "
        f"longest {longest:.2f} s; {units} text unit(s))"
    )
    return Piece(piece.start, piece.end, piece.text, piece.speakers, reason)


def cut_by_turns(
    samples: np.ndarray,
    turns: list[tuple[str, str]],
    options: AlignOptions = AlignOptions(),
    rate: int = SAMPLE_RATE,
) -> list[Piece]:
    """Cut at every turn boundary near a pause (others merge), then long pieces by length.

    `turns` is [(speaker, text)] in order. Returns pieces covering the whole of `samples`.
    """
    units = [Unit(text, spk) for spk, text in turns if weight(text)]
    duration = samples.size / rate
    if not units:
        return [Piece(0.0, round(duration, 3), "", (), "no spoken text in the turns")]
    speech = find_speech(samples, options, rate)
    total = sum(weight(u.text, options.word_chars) for u in units)
    chain = _best_chain(_candidates(units, speech, options), speech, total, options, True)
    out: list[Piece] = []
    for piece in _pieces(units, chain, duration):
        if piece.duration <= options.max_seconds:
            out.append(piece)
            continue
        a, b = round(piece.start * rate), round(piece.end * rate)
        spk = "+".join(piece.speakers) or None
        for sub in cut_by_length(samples[a:b], piece.text, options, rate, spk):
            out.append(
                Piece(
                    round(piece.start + sub.start, 3),
                    round(piece.start + sub.end, 3),
                    sub.text,
                    piece.speakers,
                    sub.dropped,
                )
            )
    return out


def cut_line(
    samples: np.ndarray,
    text: str,
    turns: list[tuple[str, str]] | None = None,
    options: AlignOptions = AlignOptions(),
    rate: int = SAMPLE_RATE,
) -> list[Piece]:
    """Cut one manifest line: by turns when given, else by length (a short line stays whole)."""
    if turns:
        return cut_by_turns(samples, turns, options, rate)
    return cut_by_length(samples, text, options, rate)


__all__ = [
    "DETECTORS",
    "AlignOptions",
    "Pause",
    "Piece",
    "Speech",
    "Unit",
    "clause_units",
    "clauses",
    "cut_by_length",
    "cut_by_turns",
    "cut_line",
    "find_speech",
    "sentences",
    "voiced_frames",
    "weight",
]
