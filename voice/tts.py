"""Cantonese speech from espeak-ng, for the demo, the synthetic corpus and tests."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.errors import VoiceError
from voice.types import SAMPLE_RATE

VOICE_VARIANTS = tuple(f"yue+f{i}" for i in range(1, 6)) + tuple(f"yue+m{i}" for i in range(1, 8))


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice: `name` is `yue` or a variant such as `yue+f2`."""

    name: str = "yue"
    speed: int = 165  # words per minute; espeak-ng's default is 175
    pitch: int = 50  # 0-99
    amplitude: int = 100  # 0-200


def espeak_path() -> str:
    path = shutil.which("espeak-ng")
    if path is None:
        raise VoiceError(
            "espeak-ng is not installed; run `make setup` (or `apt-get install espeak-ng`)"
        )
    return path


def synthesize(text: str, voice: Voice = Voice(), sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Speak `text` with espeak-ng; returns mono float32 at `sample_rate` with silence trimmed."""
    import soundfile as sf

    from voice.audio import resample

    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "tts.wav"
        cmd = [
            espeak_path(), "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch),
            "-a", str(voice.amplitude), "-w", str(wav), "--", text,
        ]  # fmt: skip
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0 or not wav.exists():
            raise VoiceError(f"espeak-ng failed on {text!r}: {result.stderr.strip()}")
        samples, rate = sf.read(str(wav), dtype="float32")
    samples = resample(samples, rate, sample_rate)
    return trim_silence(samples)


def trim_silence(samples: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    """Drop leading and trailing samples below `threshold` (espeak pads its output)."""
    loud = np.flatnonzero(np.abs(samples) > threshold)
    if loud.size == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]
