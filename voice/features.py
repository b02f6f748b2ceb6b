"""Whisper log-mel features exactly as the project's transcriber feeds them to the encoder.

Training must use this too: faster-whisper pads the *log-mel matrix* with zeros after the
content frames (not the audio, as the Hugging Face feature extractor does), and a model trained
on differently padded features transcribes differently.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

HOP_LENGTH = 160  # samples between mel frames at 16 kHz: 100 frames a second
FRAMES_PER_SECOND = 100
STOCK_WINDOW_SECONDS = 30  # Whisper's training window: 3000 mel frames, 1500 encoder positions
WINDOW_STEP_SECONDS = 5  # short windows are rounded up to a multiple of this


@lru_cache(maxsize=4)
def _extractor(n_mels: int):
    from faster_whisper.feature_extractor import FeatureExtractor

    return FeatureExtractor(feature_size=n_mels)


def log_mel(samples: np.ndarray, n_mels: int = 80) -> np.ndarray:
    """Content log-mel frames of `samples` (16 kHz float32): shape (n_mels, ~len/160)."""
    features = _extractor(n_mels)(np.asarray(samples, dtype=np.float32), padding=HOP_LENGTH)
    return features[:, :-1]  # faster-whisper drops the frame made only of padding


def pad_frames(features: np.ndarray, frames: int) -> np.ndarray:
    """Zero-pad (or trim) mel frames to exactly `frames`, as faster-whisper's pad_or_trim does."""
    if features.shape[-1] >= frames:
        return features[..., :frames]
    return np.pad(features, [(0, 0)] * (features.ndim - 1) + [(0, frames - features.shape[-1])])


def window_seconds_for(duration: float, max_window: int = STOCK_WINDOW_SECONDS) -> int:
    """The encoder window for an utterance of `duration` s: rounded up to WINDOW_STEP_SECONDS."""
    steps = max(1, math.ceil(duration / WINDOW_STEP_SECONDS))
    return min(max_window, steps * WINDOW_STEP_SECONDS)


def encoder_window(duration: float, window: int | str) -> int:
    """The one window rule of training and serving: "auto" sizes the window to the utterance;
    a fixed window is used when the utterance fits in it, else the utterance's own size."""
    if window == "auto" or duration > int(window):
        return window_seconds_for(duration)
    return int(window)


def encoder_input(samples: np.ndarray, window_seconds: int, n_mels: int = 80) -> np.ndarray:
    """Mel features of one utterance padded to its window: (n_mels, window_seconds * 100)."""
    return pad_frames(log_mel(samples, n_mels), window_seconds * FRAMES_PER_SECOND)
