"""Fit the re-ranker's feature weights (`search.MEANING_WEIGHTS`) on labelled question sets.

    python -m voice.answer.calibrate eval/kb/sample_kb.csv:eval/kb/sample_queries.jsonl ...

Each query's shortlisted candidates become rows (features, is-the-expected-entry); an L2-
regularised logistic regression gives weights whose sigmoid is the score `search()` reports, so
one threshold means the same on every KB. Fit on development sets only; measure on a hold-out.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from voice.answer.embed import DEFAULT_CACHE, SentenceEncoder
from voice.answer.kb import load_kb
from voice.answer.kbeval import load_queries
from voice.answer.search import MEANING_WEIGHTS, SearchIndex

FEATURES = tuple(MEANING_WEIGHTS)


def rows(index: SearchIndex, queries) -> tuple[np.ndarray, np.ndarray]:
    """(features, label) for every shortlisted candidate of every query; off-topic queries give
    only negative rows, which is what teaches the bias."""
    x, y = [], []
    for query in queries:
        for entry, features in index.candidates(query.text):
            x.append([features[name] for name in FEATURES])
            y.append(float(entry.id == query.expect))
    return np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)


def fit(x: np.ndarray, y: np.ndarray, l2: float = 0.001, steps: int = 5000, lr: float = 0.5):
    """Logistic regression by projected gradient descent (a few thousand rows: no solver
    needed), weights kept non-negative so each signal can only speak for an entry; positives
    are weighted up to the negatives' total so rare right answers count."""
    w = np.zeros(x.shape[1])
    b = 0.0
    weight = np.where(y > 0, (y == 0).sum() / max(1.0, (y > 0).sum()), 1.0)
    weight /= weight.mean()
    for _ in range(steps):
        p = 1 / (1 + np.exp(-(x @ w + b)))
        g = weight * (p - y)
        w = np.maximum(0.0, w - lr * (x.T @ g / len(y) + l2 * w))  # every signal is evidence for
        b -= lr * g.mean()
    return dict(zip(FEATURES, np.round(w, 2).tolist(), strict=True)), round(float(b), 2)


def decisions(index: SearchIndex, queries, weights: dict, bias: float) -> list[tuple]:
    """Per query: (best score, best is right, expected entry is in scope)."""
    out = []
    for query in queries:
        best, right = 0.0, False
        for entry, features in index.candidates(query.text):
            z = bias + sum(weights[name] * features[name] for name in FEATURES)
            score = 1 / (1 + np.exp(-z))
            if score > best:
                best, right = score, entry.id == query.expect
        out.append((best, right, query.expect is not None))
    return out


def threshold_bias(outcomes: list[tuple], bias: float, target: float = 0.4) -> float:
    """Shift the bias so that `target` (AnswerOptions.threshold) sits just above every
    off-topic query's best score and as low as possible otherwise."""
    off_topic = [s for s, _, in_scope in outcomes if not in_scope]
    cut = min(0.99, (max(off_topic) if off_topic else 0.5) + 0.02)
    logit = lambda p: float(np.log(p / (1 - p)))  # noqa: E731
    return round(bias + logit(target) - logit(cut), 2)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    encoder = SentenceEncoder.load()
    xs, ys, sets = [], [], []
    for pair in argv:
        kb_path, _, queries_path = pair.partition(":")
        kb = load_kb(kb_path)
        queries, problems = load_queries(queries_path, {e.id for e in kb.entries})
        for problem in problems:
            print(problem, file=sys.stderr)
        index = SearchIndex(kb, encoder, DEFAULT_CACHE)
        sets.append((Path(queries_path).name, index, queries))
        x, y = rows(index, queries)
        xs.append(x)
        ys.append(y)
        print(f"{Path(queries_path).name}: {len(queries)} queries, {len(y)} candidate rows")
    weights, bias = fit(np.concatenate(xs), np.concatenate(ys))
    outcomes = [o for _, index, queries in sets for o in decisions(index, queries, weights, bias)]
    bias = threshold_bias(outcomes, bias)
    for name, index, queries in sets:
        got = decisions(index, queries, weights, bias)
        in_scope = [g for g in got if g[2]]
        top1 = sum(right for _, right, _ in in_scope)
        resolved = sum(right and s >= 0.4 for s, right, _ in in_scope)
        rejected = sum(s < 0.4 for s, _, scoped in got if not scoped)
        print(f"{name}: top-1 {top1}/{len(in_scope)}, resolved {resolved}/{len(in_scope)}, "
              f"off-topic rejected {rejected}/{len(got) - len(in_scope)}")  # fmt: skip
    print("MEANING_WEIGHTS =", weights)
    print("MEANING_BIAS =", bias)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
