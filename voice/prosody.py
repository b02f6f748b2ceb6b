"""Acoustic agitation per utterance: pitch and energy against the caller's own baseline.

Each utterance is reduced to two numbers: its median pitch (librosa's pYIN over voiced frames,
in semitones) and its energy (RMS level of the same voiced frames, dBFS). An `AgitationTracker`
keeps one call's earlier utterances as the caller's norm and scores how far above it this one
is, in robust spreads (median / MAD), so a naturally loud or high-pitched caller is not flagged.

Cost of pYIN on a 5 s espeak-ng utterance, ms (2-core machine shared with a training job, load
3.5-4, so roughly double an idle core; ranges are repeated runs after warm-up):

    16 kHz  librosa defaults: frame 2048, hop 512, 0.1-semitone bins; fmax 2 kHz    750-950
     8 kHz  frame 1024, hop 256, 0.1-semitone bins; fmax 3999 Hz (under Nyquist) 1000-1550
     8 kHz  frame 1024, hop 256, 0.1-semitone bins; fmax 600 Hz                   220-350
    16 kHz  frame 2048, hop 512, quarter-semitone bins; fmax 600 Hz               115-125
     8 kHz  frame 1024, hop 256, quarter-semitone bins; fmax 600 Hz (used)         60-115

The cost is set by the frames and, more than linearly, the pitch bins (pYIN's Viterbi pass over
them), not by the sample rate: with the same 128 ms frames and 32 ms hop, 16 and 8 kHz cost the
same. So the pitch range is cut
to speech and the bins to quarter semitones; audio is analysed at 8 kHz so that a call arriving
at 8 kHz and one at 16 kHz are measured in the same band. The first call in a process imports
librosa, scipy and numba (~3 s): `preload()` does that before the first caller.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy as np

from voice.audio import resample
from voice.errors import ConfigError, VoiceError
from voice.types import SAMPLE_RATE

ANALYSIS_RATE = 8_000  # pitch and energy are measured on phone-band audio (see the cost table)
FMIN_HZ = 65.0  # lowest F0 tracked: a deep male voice
FMAX_HZ = 600.0  # highest F0 tracked: a raised female voice; far below the 4 kHz Nyquist
FRAME = 1024  # pYIN frame, 128 ms at 8 kHz (its YIN window, half of it, holds 4 periods of 65 Hz)
HOP = 256  # 32 ms between pitch frames
RESOLUTION = 0.25  # pitch bin width in semitones (librosa's 0.1 costs 2-4x, for no gain here)
SILENCE_PEAK = 1e-3  # a clip whose peak stays below this is silence, not measured


@dataclass(frozen=True)
class ProsodyOptions:
    """How an utterance is compared with the caller's norm; defaults suit phone speech."""

    min_baseline: int = 2  # earlier measured utterances needed before one is scored
    max_baseline: int = 20  # the most recent calm utterances kept as the norm
    min_voiced_s: float = 0.3  # less voiced speech than this: the utterance is not measured
    # Smallest spreads assumed: with two or three similar calm lines the MAD is near 0, and every
    # small wobble would otherwise count as a raise. Calm speech varies by about this much.
    pitch_floor_st: float = 1.5  # semitones
    energy_floor_db: float = 3.0  # dB
    pitch_weight: float = 0.5  # share of the pitch raise in the combined raise; energy has the rest
    calm_z: float = 1.0  # combined raise (in spreads) at or below which the score is 0
    agitated_z: float = 4.0  # combined raise at or above which the score is 1
    baseline_below: float = 0.5  # utterances scoring this or more stay out of the norm

    def __post_init__(self) -> None:
        if self.min_baseline < 1 or self.max_baseline < self.min_baseline:
            raise ConfigError(
                f"need 1 <= min_baseline <= max_baseline, got {self.min_baseline}, "
                f"{self.max_baseline}"
            )
        if self.pitch_floor_st <= 0 or self.energy_floor_db <= 0:
            raise ConfigError("pitch_floor_st and energy_floor_db must be positive")
        if not 0.0 <= self.pitch_weight <= 1.0:
            raise ConfigError(f"pitch_weight must be in [0, 1], got {self.pitch_weight}")
        if not 0.0 <= self.calm_z < self.agitated_z:
            raise ConfigError(
                f"need 0 <= calm_z < agitated_z, got {self.calm_z}, {self.agitated_z}"
            )


@dataclass(frozen=True)
class Prosody:
    """What one utterance sounds like, before any comparison."""

    pitch_hz: float  # median F0 of the voiced frames
    energy_db: float  # RMS level of the voiced frames, dB relative to full scale
    voiced_s: float  # voiced speech measured

    @property
    def pitch_st(self) -> float:
        """Median pitch in semitones (above 100 Hz): the scale on which raises are compared."""
        return 12.0 * math.log2(self.pitch_hz / 100.0)


@dataclass(frozen=True)
class VoiceAgitation:
    """How raised one utterance sounds against the caller's own earlier utterances.

    `score` in [0, 1]: 0 at or near the caller's norm (and whenever there is no norm yet or the
    clip could not be measured), 1 for pitch and energy both far above it. The z values are
    robust (median / MAD, floored) and signed; only raises count towards the score.
    """

    score: float
    pitch_hz: float | None  # median F0; None when the clip had too little voiced speech
    pitch_z: float  # semitones above the norm, in spreads (0 without a norm)
    energy_db: float | None  # RMS level of voiced frames, dBFS; None when not measured
    energy_z: float  # dB above the norm, in spreads (0 without a norm)
    baseline_utterances: int  # earlier utterances in the norm; below `min_baseline`, score is 0

    def to_dict(self) -> dict[str, float | int | None]:
        def r(x: float | None, n: int) -> float | None:
            return None if x is None else round(x, n)

        return {
            "score": round(self.score, 3),
            "pitch_hz": r(self.pitch_hz, 1),
            "pitch_z": round(self.pitch_z, 2),
            "energy_db": r(self.energy_db, 1),
            "energy_z": round(self.energy_z, 2),
            "baseline_utterances": self.baseline_utterances,
        }


def _librosa():
    try:
        import librosa
    except ImportError as exc:  # a main dependency; missing only in a broken install
        raise VoiceError("voice agitation needs librosa: pip install librosa") from exc
    return librosa


def measure(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, min_voiced_s: float = 0.3
) -> Prosody | None:
    """Median pitch and voiced energy of one mono clip; None if it has too little voiced speech."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float32).reshape(-1))
    if x.size == 0 or float(np.max(np.abs(x))) < SILENCE_PEAK:
        return None
    x = resample(x, sample_rate, ANALYSIS_RATE)
    if x.size < FRAME:
        return None
    librosa = _librosa()
    f0, voiced, _ = librosa.pyin(
        x, fmin=FMIN_HZ, fmax=FMAX_HZ, sr=ANALYSIS_RATE, frame_length=FRAME, hop_length=HOP,
        resolution=RESOLUTION,
    )  # fmt: skip
    rms = librosa.feature.rms(y=x, frame_length=FRAME, hop_length=HOP)[0]
    n = min(f0.size, rms.size)
    mask = voiced[:n] & np.isfinite(f0[:n])
    if mask.sum() * HOP / ANALYSIS_RATE < min_voiced_s:
        return None
    energy = float(np.mean(rms[:n][mask].astype(np.float64) ** 2))
    return Prosody(
        pitch_hz=float(np.median(f0[:n][mask])),
        energy_db=10.0 * math.log10(max(energy, 1e-12)),
        voiced_s=float(mask.sum() * HOP / ANALYSIS_RATE),
    )


def preload() -> None:
    """Import librosa and run pYIN once (~3 s the first time in a process), before a call needs it."""
    t = np.arange(ANALYSIS_RATE // 2) / ANALYSIS_RATE
    measure((0.3 * np.sin(2 * np.pi * 150.0 * t)).astype(np.float32), ANALYSIS_RATE)


def _robust_z(value: float, history: deque[float], floor: float) -> float:
    """(value - median) / max(1.4826 * MAD, floor): a z-score one outlier in the norm cannot move."""
    ref = np.asarray(history, dtype=np.float64)
    centre = float(np.median(ref))
    spread = 1.4826 * float(np.median(np.abs(ref - centre)))
    return (value - centre) / max(spread, floor)


class AgitationTracker:
    """One caller in one call: push each utterance's audio, get how raised it sounds.

    Mapping: raise = w * max(0, pitch_z) + (1 - w) * max(0, energy_z), and the score rises
    linearly from 0 at `calm_z` to 1 at `agitated_z` spreads (defaults: w = 0.5, 1 and 4), so an
    utterance within about one spread of the caller's norm scores 0, and one whose pitch and
    energy are both 4 spreads up (say +6 semitones and +12 dB) scores 1. Lowered pitch or energy
    never counts. Pitch variability was tried as a third term but did not separate agitated from
    calm espeak-ng speech, so it is left out until real calls can tune it.
    """

    def __init__(self, options: ProsodyOptions = ProsodyOptions()):
        self.options = options
        self._pitch: deque[float] = deque(maxlen=options.max_baseline)  # semitones
        self._energy: deque[float] = deque(maxlen=options.max_baseline)  # dBFS

    @property
    def baseline_utterances(self) -> int:
        return len(self._pitch)

    def push(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> VoiceAgitation:
        """Score one utterance against the earlier ones, then (if calm enough) add it to the norm."""
        opts = self.options
        n = len(self._pitch)
        found = measure(samples, sample_rate, opts.min_voiced_s)
        if found is None:
            return VoiceAgitation(0.0, None, 0.0, None, 0.0, n)
        if n < opts.min_baseline:  # no norm yet: this utterance helps build it
            self._remember(found)
            return VoiceAgitation(0.0, found.pitch_hz, 0.0, found.energy_db, 0.0, n)
        pitch_z = _robust_z(found.pitch_st, self._pitch, opts.pitch_floor_st)
        energy_z = _robust_z(found.energy_db, self._energy, opts.energy_floor_db)
        raised = opts.pitch_weight * max(0.0, pitch_z) + (1 - opts.pitch_weight) * max(
            0.0, energy_z
        )
        score = min(1.0, max(0.0, (raised - opts.calm_z) / (opts.agitated_z - opts.calm_z)))
        # An agitated utterance does not become the norm: a caller getting angrier over several
        # turns keeps being measured against how they sounded when calm.
        if score < opts.baseline_below:
            self._remember(found)
        return VoiceAgitation(score, found.pitch_hz, pitch_z, found.energy_db, energy_z, n)

    def _remember(self, found: Prosody) -> None:
        self._pitch.append(found.pitch_st)
        self._energy.append(found.energy_db)


__all__ = [
    "ProsodyOptions",
    "Prosody",
    "VoiceAgitation",
    "AgitationTracker",
    "measure",
    "preload",
]
