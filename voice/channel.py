"""A simulated telephone line: band limit, level changes, line noise, clipping, dropouts, G.711."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from voice.audio import (
    PHONE_RATE,
    float_to_pcm16,
    mulaw_decode,
    mulaw_encode,
    pcm16_to_float,
    resample,
)
from voice.types import SAMPLE_RATE


@dataclass(frozen=True)
class ChannelOptions:
    """How rough the line is. Ranges are (low, high) drawn uniformly per call."""

    band_hz: tuple[float, float] = (300.0, 3400.0)  # telephone pass band
    snr_db: tuple[float, float] = (15.0, 35.0)  # speech-to-line-noise ratio
    level_db: tuple[float, float] = (-28.0, -16.0)  # speech RMS in dBFS, as phone levels vary
    clip_probability: float = 0.1  # chance a call is driven into clipping
    dropouts_per_minute: float = 2.0  # short packet-loss gaps
    dropout_ms: tuple[float, float] = (20.0, 80.0)


def _fast_length(n: int) -> int:
    """Smallest 2^a * 3^b * 5^c >= n: numpy's FFT is very slow on lengths with large primes."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            need = -(-n // p35)  # smallest power of two times p35 reaching n
            best = min(best, p35 << max(0, (need - 1).bit_length()))
            p35 *= 3
        p5 *= 5
    return best


def bandpass(samples: np.ndarray, rate: int, low: float, high: float) -> np.ndarray:
    """Zero-phase band-pass by FFT masking with raised-cosine edges (100 Hz wide)."""
    if samples.size == 0:
        return samples
    n = _fast_length(samples.size)
    spectrum = np.fft.rfft(samples, n=n)
    freqs = np.fft.rfftfreq(n, 1.0 / rate)
    edge = 100.0
    rise = np.clip((freqs - (low - edge)) / edge, 0, 1)
    fall = np.clip(((high + edge) - freqs) / edge, 0, 1)
    gain = 0.5 - 0.5 * np.cos(np.pi * rise * fall)
    return np.fft.irfft(spectrum * gain, n=n)[: samples.size].astype(np.float32)


def phone_line(
    samples: np.ndarray,
    rng: np.random.Generator,
    options: ChannelOptions = ChannelOptions(),
    sample_rate: int = SAMPLE_RATE,
    speech_rms: float | None = None,
) -> np.ndarray:
    """Pass a whole call through a simulated phone line; returns float32 at 8 kHz after mu-law.

    `speech_rms` is the level of the speech alone (pauses excluded), used to set the noise level;
    computed from the non-silent samples when not given.
    """
    x = resample(np.asarray(samples, dtype=np.float32), sample_rate, PHONE_RATE)
    x = bandpass(x, PHONE_RATE, *options.band_hz)
    if speech_rms is None:
        loud = x[np.abs(x) > 1e-3]
        speech_rms = float(np.sqrt(np.mean(loud**2))) if loud.size else 0.0
    if speech_rms > 0:
        target = 10 ** (rng.uniform(*options.level_db) / 20)
        gain = target / speech_rms
        # slow level drift (+-2 dB over a few seconds), as when a caller moves the handset
        t = np.arange(x.size) / PHONE_RATE
        drift = 10 ** (2.0 * np.sin(2 * np.pi * t / rng.uniform(3, 9) + rng.uniform(0, 6.3)) / 20)
        x = x * gain * drift.astype(np.float32)
        speech_rms = target
    noise = rng.standard_normal(x.size).astype(np.float32)
    noise = bandpass(noise, PHONE_RATE, 100.0, 3800.0)
    noise *= (
        (speech_rms or 0.01)
        / (np.sqrt(np.mean(noise**2)) + 1e-9)
        / 10 ** (rng.uniform(*options.snr_db) / 20)
    )
    x = x + noise
    if rng.random() < options.clip_probability:
        limit = float(np.quantile(np.abs(x), 0.995)) * rng.uniform(0.5, 0.8)
        x = np.clip(x, -limit, limit)
    n_drop = rng.poisson(options.dropouts_per_minute * x.size / PHONE_RATE / 60)
    for _ in range(n_drop):
        length = int(rng.uniform(*options.dropout_ms) / 1000 * PHONE_RATE)
        start = int(rng.integers(0, max(1, x.size - length)))
        x[start : start + length] = 0.0
    return pcm16_to_float(mulaw_decode(mulaw_encode(float_to_pcm16(x))))
