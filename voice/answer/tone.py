"""Whether a caller's words sound upset by their meaning: a logistic regression on sentence
embeddings of labelled caller lines, fitted when an engine is built (the fit is cached)."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np

from voice.answer.embed import SentenceEncoder, to_written
from voice.answer.text import normalize
from voice.errors import ConfigError
from voice.files import write_arrays

log = logging.getLogger(__name__)

TONE_LINES = Path(__file__).parent / "data" / "tone_lines.tsv"
LABELS = {"upset": 1.0, "calm": 0.0}
# L2 strength as scikit-learn's inverse C: 3 kept a fresh check set at 14/20 upset found with
# 1/30 calm flagged at probability 0.7 (C 1: 10/20, 0/30; C 10: 14/20, 1/30, more calm bank lines)
C = 3.0
_FITS: dict[str, tuple[np.ndarray, float]] = {}  # digest of (lines, encoder) -> fit, per process


def read_lines(path: Path = TONE_LINES) -> tuple[list[str], np.ndarray]:
    """Texts and 0/1 labels of a `label<TAB>text` file; ConfigError naming a bad line."""
    texts, labels = [], []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        label, _, text = line.partition("\t")
        if label not in LABELS or not text.strip():
            raise ConfigError(f"{path}:{number}: expected 'upset' or 'calm', a tab, then the text")
        texts.append(text.strip())
        labels.append(LABELS[label])
    if len(set(labels)) < 2:
        raise ConfigError(f"{path}: needs both upset and calm lines")
    return texts, np.asarray(labels)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = C) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the summed log loss + |w|^2 / (2c) (L-BFGS)."""
    from scipy.optimize import minimize

    x = x.astype(np.float64)

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        z = x @ w + b
        p = 1 / (1 + np.exp(-z))
        value = np.sum(np.logaddexp(0, z) - y * z) + w @ w / (2 * c)
        g = p - y
        return value, np.append(x.T @ g + w / c, g.sum())

    theta = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B").x
    return theta[:-1], float(theta[-1])


def _as_query(text: str) -> str:
    """What is embedded: the text as the search embeds an utterance (normalised, then written
    Chinese), so a turn's search and tone share one embedding."""
    return to_written(normalize(text))


def _read_fit(file: Path | None) -> tuple[np.ndarray, float] | None:
    if file is None:
        return None
    try:
        with np.load(file, allow_pickle=False) as stored:
            return stored["weights"], float(stored["bias"])
    except (OSError, ValueError, KeyError):
        return None  # absent or torn: fit again


def _write_fit(file: Path, fit: tuple[np.ndarray, float]) -> None:
    try:
        write_arrays(file, weights=fit[0], bias=np.float64(fit[1]))
    except OSError as exc:
        log.warning("could not cache the tone model in %s: %s", file.parent, exc)


class ToneModel:
    """`probability(text)`: how likely the words come from an upset caller, in [0, 1]."""

    def __init__(self, encoder: SentenceEncoder, weights: np.ndarray, bias: float):
        self.encoder = encoder
        self.weights = weights.astype(np.float32)
        self.bias = bias

    @classmethod
    def fit(
        cls, encoder: SentenceEncoder, path: Path = TONE_LINES, cache_dir: Path | None = None
    ) -> ToneModel:
        """Fit on `path`'s lines: once per encoder and file content in a process (~1 s with
        the embedding), and kept in `cache_dir` so a restart reads it instead."""
        digest = hashlib.sha256(Path(path).read_bytes())
        digest.update(encoder.name.encode())
        key = digest.hexdigest()[:32]
        file = None if cache_dir is None else Path(cache_dir) / f"tone-{key}.npz"
        fit = _FITS.get(key) or _read_fit(file)
        if fit is None:
            texts, labels = read_lines(path)
            fit = fit_logistic(encoder.encode([_as_query(t) for t in texts]), labels)
        if file is not None and not file.exists():
            _write_fit(file, fit)
        _FITS[key] = fit
        return cls(encoder, *fit)

    def probability(self, text: str) -> float:
        vector = self.encoder.encode_one(_as_query(text))
        z = float(vector @ self.weights) + self.bias
        return 1 / (1 + math.exp(-max(-60.0, min(60.0, z))))


__all__ = ["TONE_LINES", "ToneModel", "fit_logistic", "read_lines"]
