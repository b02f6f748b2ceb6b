"""Hybrid retrieval: BM25 on written and spoken (Jyutping) terms plus sentence embeddings, then
a calibrated re-rank."""

from __future__ import annotations

import hashlib
import logging
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from rapidfuzz import fuzz

from voice.answer import text as text_module
from voice.answer.embed import (
    COLLOQUIAL_TABLE,
    KEEP_FILES,
    SentenceEncoder,
    cached_encode,
    to_written,
)
from voice.answer.kb import Entry, KnowledgeBase
from voice.answer.text import Tokens, normalize, tokenize
from voice.files import keep_newest, write_atomic

log = logging.getLogger(__name__)

BM25_K1 = 1.2  # term-frequency saturation
BM25_B = 0.5  # length normalisation (questions are short; keep it mild)
SHORTLIST = 20  # entries taken from each BM25 channel (written, heard) to re-rank
MEANING_SHORTLIST = 10  # entries taken by meaning: the right one is in its top 10 or rarely found
# Above this many passages, a query is first compared with each entry's mean vector and only the
# PREFILTER closest entries (plus those the words found) get the exact best-passage similarity:
# on a 5,000-entry KB the full product over 32k passages was the largest cost of a query.
PREFILTER_FROM = 4096
PREFILTER = 100
_SLOT_RE = re.compile(r"\{[a-z_]+\}")  # reply template slots, not words to embed
# Score calibration: score = sigmoid(BIAS + sum(weight * feature)), each feature in [0, 1].
# Hand-fitted on the sample KB's paraphrase / homophone / off-topic tables (tests/test_answer.py)
# so that 0.5 separates right answers from off-topic matches.
WEIGHTS = {
    "coverage": 5.0,  # IDF-weighted share of the query found in the entry (written or heard)
    "question": 2.5,  # IDF-weighted share of the best question found in the query
    "fuzzy": 2.0,  # rapidfuzz partial_ratio of query vs best question, on syllables
    "keyword": 1.5,  # a keyword (or a homophone of it) appears in the query
}
BIAS = -5.0
# With sentence embeddings: fitted by voice.answer.calibrate on the development question sets
# (eval/kb: the sample KB's and the bank card centre's; never the courier hold-out).
MEANING_WEIGHTS = {
    "coverage": 0.0,  # (fitted to 0: `question` and `meaning` carry what it knew)
    "question": 3.77,
    "fuzzy": 0.0,
    "keyword": 1.01,
    "meaning": 3.79,  # cosine similarity to the closest question/answer, rescaled
    "lead": 4.67,  # margin over the runner-up entry: a clear winner is trusted more
}
MEANING_BIAS = -4.34
MEANING_FLOOR = 0.2  # cosine similarity of unrelated sentences in USE's space
LEAD_SCALE = 0.2  # a cosine lead of this much over the next entry counts fully
SOUND_DISCOUNT = 0.9  # a match by sound alone counts a little less than a written one


@dataclass(frozen=True)
class Hit:
    """One retrieved entry with its calibrated score in [0, 1] and the features behind it."""

    entry: Entry
    score: float
    features: dict[str, float]


class _Channel:
    """A BM25 inverted index over one kind of term (written or spoken) for all passages."""

    def __init__(self, docs: list[tuple[str, ...]]):
        self.n_docs = len(docs)
        lengths = np.array([len(d) for d in docs], dtype=np.float32)
        avg = float(lengths.mean()) if len(docs) else 1.0
        postings: dict[str, dict[int, int]] = {}
        for i, doc in enumerate(docs):
            for term in doc:
                row = postings.setdefault(term, {})
                row[i] = row.get(i, 0) + 1
        self.idf: dict[str, float] = {}
        self.postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        norm = BM25_K1 * (1 - BM25_B + BM25_B * lengths / max(avg, 1e-6))
        for term, row in postings.items():
            idx = np.fromiter(row.keys(), dtype=np.int32, count=len(row))
            tf = np.fromiter(row.values(), dtype=np.float32, count=len(row))
            idf = math.log(1 + (self.n_docs - len(row) + 0.5) / (len(row) + 0.5))
            self.idf[term] = idf
            self.postings[term] = (
                idx,
                (idf * tf * (BM25_K1 + 1) / (tf + norm[idx])).astype(np.float32),
            )
        self.max_idf = math.log(1 + (self.n_docs + 0.5) / 0.5)  # for terms never seen

    def weight(self, term: str) -> float:
        return self.idf.get(term, self.max_idf)

    def scores(self, terms: tuple[str, ...]) -> np.ndarray:
        found = [self.postings[t] for t in dict.fromkeys(terms) if t in self.postings]
        if not found:
            return np.zeros(self.n_docs, dtype=np.float32)
        idx = np.concatenate([f[0] for f in found])
        val = np.concatenate([f[1] for f in found])
        return np.bincount(idx, weights=val, minlength=self.n_docs).astype(np.float32)


def _weights(terms: tuple[str, ...], channel: _Channel) -> tuple[dict[str, float], float]:
    """Each distinct term's IDF in `channel`, and their sum."""
    weights = {t: channel.weight(t) for t in terms}
    return weights, sum(weights.values())


def _distinct(terms: tuple[str, ...], channel: _Channel) -> tuple[tuple[str, ...], float]:
    """The distinct terms, in order, and the sum of their IDFs in `channel`."""
    distinct = tuple(dict.fromkeys(terms))
    return distinct, sum(channel.weight(t) for t in distinct)


def _share(weights: dict[str, float], total: float, other: set[str] | dict[str, float]) -> float:
    """IDF-weighted share of the terms in `weights` that are also in `other`."""
    return sum(w for t, w in weights.items() if t in other) / total if total else 0.0


def _matched(terms: tuple[str, ...], total: float, other: dict[str, float], channel: _Channel):
    """IDF-weighted share of the distinct `terms` that are also in `other` (`_share` for a
    question whose weights are looked up in `channel`)."""
    return sum(channel.weight(t) for t in terms if t in other) / total if total else 0.0


def _contains(text: str, word: str) -> bool:
    """`word` occurs in `text`; an English word only as a whole word (`pin` not in `shopping`)."""
    if not word.isascii():
        return word in text
    start = text.find(word)
    while start >= 0:
        end = start + len(word)
        if not (start and text[start - 1].isascii() and text[start - 1].isalnum()) and not (
            end < len(text) and text[end].isascii() and text[end].isalnum()
        ):
            return True
        start = text.find(word, start + 1)
    return False


class _Question(NamedTuple):
    """One example question: its distinct terms and their IDF sums. The terms' own IDFs are
    looked up in the channel when they match (a tuple, not a dict of weights: a 5,000-entry KB's
    cached index then loads in a third of the time)."""

    chars: tuple[str, ...]
    chars_total: float
    sounds: tuple[str, ...]
    sounds_total: float
    syllables: tuple[str, ...]


@dataclass(frozen=True)
class _Query:
    """The utterance, normalised, with its term weights."""

    text: str
    chars: dict[str, float]
    chars_total: float
    sounds: dict[str, float]
    sounds_total: float
    syllables: tuple[str, ...]


class SearchIndex:
    """Everything precomputed for one knowledge base; `search()` does no I/O and no re-indexing."""

    def __init__(self, kb: KnowledgeBase, encoder: SentenceEncoder | None = None,
                 cache_dir: Path | None = None):  # fmt: skip
        """Index `kb`; with an `encoder`, also embed each entry's questions, answer and English
        answer (vectors cached in `cache_dir`, keyed by the texts)."""
        self.kb = kb
        self.entries = kb.entries
        self.encoder = encoder
        self._meaning: np.ndarray | None = None  # (passages, dim) unit vectors
        self._meaning_starts = np.zeros(0, dtype=np.int64)  # each entry's first passage row
        self._centroids: np.ndarray | None = None  # (entries, dim) each entry's mean direction
        if encoder is not None and self.entries:
            texts, starts = [], []
            for entry in self.entries:
                starts.append(len(texts))
                texts += meaning_passages(entry)
            self._meaning = cached_encode(encoder, texts, cache_dir)
            self._meaning_starts = np.array(starts, dtype=np.int64)
            centroids = np.add.reduceat(self._meaning, self._meaning_starts)
            norms = np.linalg.norm(centroids, axis=1, keepdims=True)
            self._centroids = centroids / np.maximum(norms, 1e-9)
        passages: list[Tokens] = []
        starts: list[int] = []  # each entry's first passage: its questions, then its keywords
        all_questions: list[list[Tokens]] = []
        self._keywords: list[list[tuple[str, tuple[str, ...]]]] = []
        self._vocab_chars: list[set[str]] = []
        self._vocab_sounds: list[set[str]] = []
        for entry in self.entries:
            starts.append(len(passages))
            questions = [tokenize(normalize(q)) for q in entry.questions]
            keywords = [(normalize(k), tokenize(normalize(k)).syllables) for k in entry.keywords]
            kw_tokens = tokenize(" ".join(k for k, _ in keywords))
            # the English answer's words: an English (or code-switched) question finds an entry
            # whose questions are all Chinese by the words it shares with its English answer
            english = _english_terms(entry.answer_en)
            passages.extend((*questions, kw_tokens, english))
            all_questions.append(questions)
            self._keywords.append([(k, s) for k, s in keywords if len(k) >= 2])
            self._vocab_chars.append(
                {t for tok in questions for t in tok.chars}
                | set(kw_tokens.chars)
                | set(english.chars)
            )
            self._vocab_sounds.append(
                {t for tok in questions for t in tok.sounds}
                | set(kw_tokens.sounds)
                | set(english.sounds)
            )
        self._starts = np.array(starts, dtype=np.int64)
        self._chars = _Channel([p.chars for p in passages])
        self._sounds = _Channel([p.sounds for p in passages])
        self._stats = [
            [
                _Question(
                    *_distinct(q.chars, self._chars),
                    *_distinct(q.sounds, self._sounds),
                    q.syllables,
                )
                for q in questions
            ]
            for questions in all_questions
        ]

    @classmethod
    def cached(cls, kb: KnowledgeBase, encoder: SentenceEncoder | None, cache_dir: Path | None):
        """`SearchIndex(kb, encoder, cache_dir)`, kept whole on disk under a key made of the
        entries, the encoder and the indexing code: a restart loads a 5,000-entry KB in well
        under a second instead of re-tokenising and re-embedding it."""
        if cache_dir is None:
            return cls(kb, encoder, cache_dir)
        key = hashlib.sha256(repr(kb.entries).encode("utf-8"))
        key.update((encoder.name if encoder else "lexical").encode())
        for module in (__file__, text_module.__file__, COLLOQUIAL_TABLE):
            key.update(Path(module).read_bytes())
        path = Path(cache_dir) / f"index-{key.hexdigest()[:32]}.pickle"
        try:
            with open(path, "rb") as f:
                index = pickle.load(f)  # our own file, in an owner-only folder
            index.kb, index.entries, index.encoder = kb, kb.entries, encoder
            return index
        except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ValueError):
            pass  # absent, torn or from other code: build it
        index = cls(kb, encoder, cache_dir)
        try:
            write_atomic(path, pickle.dumps(index, protocol=pickle.HIGHEST_PROTOCOL), private=True)
            keep_newest(Path(cache_dir), "index-*.pickle", KEEP_FILES)
        except OSError as exc:
            log.warning("could not cache the KB index in %s: %s", cache_dir, exc)
        return index

    def __getstate__(self) -> dict:
        # the KB (reloaded anyway) and the encoder (an ONNX session) are not part of the file
        return {k: v for k, v in self.__dict__.items() if k not in ("kb", "entries", "encoder")}

    def __len__(self) -> int:
        return len(self.entries)

    def _shortlist(self, channel: _Channel, terms: tuple[str, ...]) -> list[int]:
        if not self.entries or not terms:
            return []
        per_entry = np.maximum.reduceat(channel.scores(terms), self._starts)
        k = min(SHORTLIST, len(per_entry))
        top = np.argpartition(-per_entry, k - 1)[:k]
        return [int(i) for i in top if per_entry[i] > 0]

    def _meaning_scores(self, text: str, also: list[int]) -> np.ndarray | None:
        """Each entry's best cosine similarity to the utterance (in written Chinese), or None
        without an encoder. On a large KB only the entries nearest by mean vector and those in
        `also` are scored; the others get -1, below any real similarity."""
        if self._meaning is None or self.encoder is None:
            return None
        query = self.encoder.encode_one(to_written(text))
        if len(self._meaning) < PREFILTER_FROM or self._centroids is None:
            return np.maximum.reduceat(self._meaning @ query, self._meaning_starts)
        k = min(PREFILTER, len(self.entries))
        near = np.argpartition(-(self._centroids @ query), k - 1)[:k]
        chosen = np.unique(np.concatenate([near, np.asarray(also, dtype=np.int64)]))
        ends = np.append(self._meaning_starts[1:], len(self._meaning))
        lengths = ends[chosen] - self._meaning_starts[chosen]
        # the chosen entries' passage rows, block after block
        offsets = np.cumsum(lengths) - lengths
        rows = np.repeat(self._meaning_starts[chosen] - offsets, lengths) + np.arange(lengths.sum())
        scores = np.full(len(self.entries), -1.0, dtype=np.float32)
        scores[chosen] = np.maximum.reduceat(self._meaning[rows] @ query, offsets)
        return scores

    def _features(self, i: int, query: _Query) -> dict[str, float]:
        coverage = max(
            _share(query.chars, query.chars_total, self._vocab_chars[i]),
            SOUND_DISCOUNT * _share(query.sounds, query.sounds_total, self._vocab_sounds[i]),
        )
        question = 0.0
        fuzzy = 0.0
        for q in self._stats[i]:
            question = max(
                question,
                _matched(q.chars, q.chars_total, query.chars, self._chars),
                SOUND_DISCOUNT * _matched(q.sounds, q.sounds_total, query.sounds, self._sounds),
            )
            if q.syllables and query.syllables:
                fuzzy = max(fuzzy, fuzz.partial_ratio(query.syllables, q.syllables) / 100)
        keyword = 0.0
        syllables = " ".join(query.syllables)
        for word, sound in self._keywords[i]:
            if _contains(query.text, word):
                keyword = 1.0
                break
            if len(sound) >= 2 and " ".join(sound) in syllables:
                keyword = SOUND_DISCOUNT
        return {"coverage": coverage, "question": question, "fuzzy": fuzzy, "keyword": keyword}

    def candidates(self, text: str) -> list[tuple[Entry, dict[str, float]]]:
        """The shortlisted entries for an utterance with their features, unranked."""
        norm = normalize(text)
        tokens = tokenize(norm)
        if not tokens.chars:
            return []
        query = _Query(
            norm,
            *_weights(tokens.chars, self._chars),
            *_weights(tokens.sounds, self._sounds),
            tokens.syllables,
        )
        shortlist = self._shortlist(self._chars, tokens.chars)
        shortlist += self._shortlist(self._sounds, tokens.sounds)
        meaning = self._meaning_scores(text, shortlist)
        best_two = None
        if meaning is not None:
            k = min(MEANING_SHORTLIST, len(meaning))
            shortlist += [int(i) for i in np.argpartition(-meaning, k - 1)[:k]]
            best_two = np.sort(np.partition(meaning, -2)[-2:]) if len(meaning) > 1 else None
        out = []
        for i in dict.fromkeys(shortlist):
            features = self._features(i, query)
            if meaning is not None:
                features.update(_meaning_features(float(meaning[i]), best_two))
            out.append((self.entries[i], features))
        return out

    def search(self, text: str, top_k: int = 3) -> list[Hit]:
        """The `top_k` best entries for an utterance, best first, with calibrated scores."""
        hits = []
        for entry, features in self.candidates(text):
            # two calibrated experts, the higher speaks: the lexical one keeps exact wording and
            # spoken numbers sure (its weights predate embeddings), the other adds meaning
            score = _sigmoid(BIAS + sum(WEIGHTS[name] * features[name] for name in WEIGHTS))
            if "meaning" in features:
                z = MEANING_BIAS + sum(w * features[name] for name, w in MEANING_WEIGHTS.items())
                score = max(score, _sigmoid(z))
            hits.append(Hit(entry, score, features))
        hits.sort(key=lambda h: h.score, reverse=True)
        return hits[:top_k]


def _english_terms(text: str) -> Tokens:
    """The English content words (stemmed) of an entry's English answer, slots left out."""
    tokens = tokenize(normalize(_SLOT_RE.sub("", text)))
    words = tuple(t for t in tokens.chars if t.isascii() and not t.isdigit())
    return Tokens(words, words, ())


def _sigmoid(z: float) -> float:
    return 1 / (1 + math.exp(-z))


def meaning_passages(entry: Entry) -> list[str]:
    """What is embedded for an entry: each question and the answer in written Chinese, and the
    English answer (so English questions meet Chinese-only entries in the shared space)."""
    texts = [to_written(q) for q in entry.questions]
    texts.append(to_written(_SLOT_RE.sub("", entry.answer)))
    if entry.answer_en:
        texts.append(_SLOT_RE.sub("", entry.answer_en))
    return [t for t in texts if t] or [entry.category]


def _meaning_features(similarity: float, best_two: np.ndarray | None) -> dict[str, float]:
    """`meaning`: cosine similarity mapped to [0, 1] over its useful range; `lead`: how far
    this entry is ahead of the best other entry (0 unless it is the best)."""
    meaning = min(1.0, max(0.0, (similarity - MEANING_FLOOR) / (1.0 - MEANING_FLOOR)))
    lead = 0.0
    if best_two is not None and similarity >= best_two[1]:
        lead = min(1.0, max(0.0, float(similarity - best_two[0]) / LEAD_SCALE))
    return {"meaning": meaning, "lead": lead}


__all__ = [
    "BIAS",
    "MEANING_BIAS",
    "MEANING_WEIGHTS",
    "WEIGHTS",
    "Hit",
    "SearchIndex",
    "meaning_passages",
]
