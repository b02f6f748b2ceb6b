"""Scoring a VAD against the manifest's utterance times: missed speech and false-alarm time."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Interval = tuple[float, float]  # (start, end) seconds


@dataclass(frozen=True)
class VadScore:
    """Seconds of reference speech, of it missed by the VAD, and of VAD speech outside it;
    `false_cuts`: utterance ends the VAD put inside a reference utterance (a caller cut off
    mid-sentence), `reference_utterances` to count them against."""

    reference_seconds: float = 0.0
    detected_seconds: float = 0.0
    missed_seconds: float = 0.0
    false_alarm_seconds: float = 0.0
    false_cuts: int = 0
    reference_utterances: int = 0

    @property
    def miss_rate(self) -> float:
        """Missed speech as a fraction of reference speech time."""
        return self.missed_seconds / self.reference_seconds if self.reference_seconds else 0.0

    @property
    def false_alarm_rate(self) -> float:
        """False-alarm time as a fraction of reference speech time (can exceed 1)."""
        return self.false_alarm_seconds / self.reference_seconds if self.reference_seconds else 0.0

    def __add__(self, other: VadScore) -> VadScore:
        return VadScore(
            self.reference_seconds + other.reference_seconds,
            self.detected_seconds + other.detected_seconds,
            self.missed_seconds + other.missed_seconds,
            self.false_alarm_seconds + other.false_alarm_seconds,
            self.false_cuts + other.false_cuts,
            self.reference_utterances + other.reference_utterances,
        )


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping union of intervals (empty and reversed ones dropped)."""
    merged: list[list[float]] = []
    for start, end in sorted((s, e) for s, e in intervals if e > s):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    return [(s, e) for s, e in merged]


def overlap_seconds(a: list[Interval], b: list[Interval]) -> float:
    """Total overlap between two merged interval lists."""
    i = j = 0
    total = 0.0
    while i < len(a) and j < len(b):
        total += max(0.0, min(a[i][1], b[j][1]) - max(a[i][0], b[j][0]))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return total


CUT_MARGIN_S = 0.3  # a detected end this far inside a reference utterance is a cut, not timing


def score_vad(reference: Iterable[Interval], detected: Iterable[Interval]) -> VadScore:
    """Missed speech = reference time outside every detected segment; false alarm = detected
    time outside every reference utterance; a false cut = a detected segment's end more than
    CUT_MARGIN_S inside a reference utterance (from both of its ends)."""
    reference, detected = list(reference), list(detected)
    ref = merge_intervals(reference)
    det = merge_intervals(detected)
    ref_total = sum(e - s for s, e in ref)
    det_total = sum(e - s for s, e in det)
    both = overlap_seconds(ref, det)
    cuts = sum(
        1 for _, cut in detected if any(s + CUT_MARGIN_S < cut < e - CUT_MARGIN_S for s, e in ref)
    )
    return VadScore(ref_total, det_total, ref_total - both, det_total - both, cuts, len(ref))


__all__ = ["VadScore", "score_vad", "merge_intervals", "overlap_seconds"]
