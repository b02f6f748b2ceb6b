"""Measure an answer engine on a KB owner's question set: top-1, MRR, resolution, off-topic rejection, language and tone."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from voice.errors import ConfigError
from voice.types import CMN, EN, YUE

if TYPE_CHECKING:
    from voice.answer.engine import Answer, AnswerEngine

log = logging.getLogger(__name__)

# A query line's `lang` -> the engine's reply language, a BCP 47 tag (voice.types). "zh" is the
# label of earlier query files, for Cantonese; it is reported under its own name.
LANGUAGES = {"yue": YUE, "cmn": CMN, "en": EN, "zh": YUE}
BY_LANG_METRICS = ("top1", "language")  # reported per `lang` label as well as overall
FIELDS = ("text", "expect", "lang", "negative")  # other keys are ignored with a warning
# Metric name -> what it counts, in report order. Each is hits / total over the queries it
# applies to; `mrr` is the mean of 1/rank (its hits: the expected entry was suggested at all).
METRICS = {
    "top1": "right entry first (in scope)",
    "resolved_top1": "resolved with the right entry (in scope)",
    "mrr": "mean 1/rank of the right entry (in scope)",
    "resolved_precision": "resolved answers that are right",
    "off_topic_rejection": "off-topic queries left unresolved",
    "language": "reply language as labelled",
    "negative_recall": "upset callers with a negative tone",
    "negative_false_alarms": "calm callers with a negative tone (lower is better)",
}
LOWER_IS_BETTER = frozenset({"negative_false_alarms"})  # a hit here is a failed check
MAX_SHOWN_PROBLEMS = 50  # problems listed in a ConfigError message


@dataclass(frozen=True)
class KbEvalOptions:
    """How `voice kb eval` runs and reports."""

    top_k: int = 5  # suggestions asked for, at least the engine's own top_k (MRR looks this deep)
    misses: int = 20  # misses listed in the readable report (all are in the JSON)
    semantic: bool = True  # the engine's sentence embeddings (off: words and sounds only)

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"--top-k must be at least 1, got {self.top_k}")
        if self.misses < 0:
            raise ConfigError(f"--misses must be 0 or more, got {self.misses}")


@dataclass(frozen=True)
class Query:
    """One line of the query file: what the caller says and what the KB should do with it."""

    line: int  # 1-based line number in the file, for messages
    text: str
    expect: str | None  # the entry id that should answer; None: off-topic, nothing should
    lang: str = "zh"  # "yue" | "cmn" | "en" (or "zh" = "yue"): the register to reply in
    negative: bool = False  # the caller is upset

    @property
    def in_scope(self) -> bool:
        return self.expect is not None


@dataclass(frozen=True)
class Metric:
    """A rate with its counts: value = credit / total (credit == hits except for MRR)."""

    hits: int
    total: int
    credit: float

    @property
    def value(self) -> float | None:
        return self.credit / self.total if self.total else None

    @classmethod
    def of(cls, flags: Iterable[bool]) -> Metric:
        flags = list(flags)
        return cls(sum(flags), len(flags), float(sum(flags)))

    @classmethod
    def of_ranks(cls, ranks: Iterable[int | None]) -> Metric:
        ranks = list(ranks)
        found = [r for r in ranks if r is not None]
        return cls(len(found), len(ranks), sum(1.0 / r for r in found))

    def to_dict(self) -> dict[str, Any]:
        value = None if self.value is None else round(self.value, 4)
        return {"value": value, "hits": self.hits, "total": self.total}


@dataclass(frozen=True)
class Outcome:
    """What the engine did with one query, and which checks it passed."""

    query: Query
    top_id: str | None  # the first suggestion, None when nothing was suggested
    top_score: float | None
    resolved: bool
    rank: int | None  # 1-based rank of the expected entry among the suggestions
    language: str  # the engine's reply language
    tone: str  # the sentiment label: negative | neutral | positive
    latency_ms: float
    hits: frozenset[str] = frozenset()  # metrics this query scores a hit on
    counted: frozenset[str] = frozenset()  # metrics this query is counted in

    @property
    def failed(self) -> tuple[str, ...]:
        """The checks this query failed, in report order."""
        return tuple(
            name
            for name in METRICS
            if name in self.counted
            and name != "mrr"  # 1/rank is a score, not a pass/fail check (top1 covers it)
            and ((name in self.hits) == (name in LOWER_IS_BETTER))
        )

    def to_dict(self) -> dict[str, Any]:
        q = self.query
        return {
            "line": q.line,
            "text": q.text,
            "expect": q.expect,
            "lang": q.lang,
            "negative": q.negative,
            "got": {
                "id": self.top_id,
                "score": None if self.top_score is None else round(self.top_score, 3),
                "resolved": self.resolved,
                "rank": self.rank,
                "language": self.language,
                "tone": self.tone,
            },
            "failed": list(self.failed),
        }


@dataclass(frozen=True)
class KbEvalResult:
    """Metrics over every valid query, the per-query outcomes, and the lines that were skipped."""

    kb: str
    queries: str
    top_k: int
    outcomes: tuple[Outcome, ...]
    problems: tuple[str, ...] = ()
    metrics: dict[str, Metric] = field(default_factory=dict)
    by_lang: dict[str, dict[str, Metric]] = field(default_factory=dict)
    latency_ms: dict[str, float | None] = field(default_factory=dict)

    @property
    def misses(self) -> tuple[Outcome, ...]:
        return tuple(o for o in self.outcomes if o.failed)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kb": self.kb,
            "queries": self.queries,
            "evaluated": len(self.outcomes),
            "top_k": self.top_k,
            "problems": list(self.problems),
            "metrics": {name: m.to_dict() for name, m in self.metrics.items()},
            "by_lang": {
                lang: {name: m.to_dict() for name, m in metrics.items()}
                for lang, metrics in self.by_lang.items()
            },
            "latency_ms": dict(self.latency_ms),
            "misses": [o.to_dict() for o in self.misses],
        }


# -- reading the query file -------------------------------------------------------------------


def _json_type(value: object) -> str:
    """The JSON name of a decoded value's type, for messages."""
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "number"
    names = {list: "list", dict: "object", str: "string", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def parse_query(
    obj: object, line: int, ids: Collection[str], where: str
) -> tuple[Query | None, list[str]]:
    """One decoded JSON line to a Query, or None and a problem per bad field."""
    if not isinstance(obj, dict):
        return None, [f"{where}: expected a JSON object, got a {_json_type(obj)}"]
    problems: list[str] = []
    unknown = [k for k in obj if k not in FIELDS]
    if unknown:
        log.warning("%s: unknown field(s) %s ignored", where, ", ".join(map(repr, unknown)))
    text = obj.get("text")
    if not isinstance(text, str):
        got = "missing" if "text" not in obj else f"a {_json_type(text)}, not a string"
        problems.append(f"{where} field text: {got}")
    elif not text.strip():
        problems.append(f"{where} field text: empty")
    if "expect" not in obj:
        problems.append(f"{where} field expect: missing (use null for an off-topic query)")
    expect = obj.get("expect")
    if expect is not None and not isinstance(expect, str):
        hint = f' (write it as a string, "{expect}")' if _json_type(expect) == "number" else ""
        problems.append(
            f"{where} field expect: a {_json_type(expect)}; use an entry id or null{hint}"
        )
    elif isinstance(expect, str) and expect.strip() not in ids:
        what = "empty" if not expect.strip() else f"{expect!r} is not an entry id in the KB"
        problems.append(f"{where} field expect: {what} (use null for an off-topic query)")
    lang = obj.get("lang", "zh")
    if not isinstance(lang, str) or lang not in LANGUAGES:
        shown = json.dumps(lang, ensure_ascii=False)
        problems.append(
            f'{where} field lang: {shown} is not "yue", "cmn" or "en" (or "zh" for "yue")'
        )
    negative = obj.get("negative", False)
    if not isinstance(negative, bool):
        shown = json.dumps(negative, ensure_ascii=False)
        problems.append(f"{where} field negative: {shown} is not true or false")
    if problems:
        return None, problems
    assert isinstance(text, str)
    expect = expect.strip() if isinstance(expect, str) else None
    return Query(line, text.strip(), expect, lang, negative), []


def load_queries(path: str | Path, ids: Collection[str]) -> tuple[list[Query], list[str]]:
    """Read a JSONL query file; returns (valid queries, one problem per bad field or line).

    Blank lines are ignored. Raise ConfigError if the file cannot be read or has no valid line.
    """
    path = Path(path)
    try:
        # split on newlines only: str.splitlines() also breaks at U+2028 inside a JSON string
        lines = path.read_text(encoding="utf-8-sig").split("\n")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such query file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 ({exc.reason}); save the file as UTF-8") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    queries: list[Query] = []
    problems: list[str] = []
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        where = f"{path} line {number}"
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        query, found = parse_query(obj, number, ids, where)
        problems.extend(found)
        if query is not None:
            queries.append(query)
    if not queries:
        shown = "".join(f"\n  {p}" for p in problems[:MAX_SHOWN_PROBLEMS])
        more = len(problems) - MAX_SHOWN_PROBLEMS
        shown += f"\n  ... and {more} more" if more > 0 else ""
        raise ConfigError(f"{path}: no valid query line{':' if shown else ''}{shown}")
    return queries, problems


# -- scoring ----------------------------------------------------------------------------------


def score_answer(query: Query, answer: Answer, latency_ms: float) -> Outcome:
    """Check one answer against its query: which metrics it counts in and which it hits."""
    ids = [s.id for s in answer.suggestions]
    top = answer.suggestions[0] if answer.suggestions else None
    rank = ids.index(query.expect) + 1 if query.expect in ids else None
    right = query.in_scope and rank == 1
    upset = answer.sentiment.label == "negative"
    checks: dict[str, bool] = {"language": answer.language == LANGUAGES[query.lang]}
    if query.in_scope:
        checks.update(top1=right, resolved_top1=answer.resolved and right, mrr=rank is not None)
    else:
        checks["off_topic_rejection"] = not answer.resolved
    if answer.resolved:
        checks["resolved_precision"] = right
    checks["negative_recall" if query.negative else "negative_false_alarms"] = upset
    return Outcome(
        query=query,
        top_id=top.id if top else None,
        top_score=top.score if top else None,
        resolved=answer.resolved,
        rank=rank,
        language=answer.language,
        tone=answer.sentiment.label,
        latency_ms=latency_ms,
        hits=frozenset(name for name, hit in checks.items() if hit),
        counted=frozenset(checks),
    )


def summarize(outcomes: Sequence[Outcome]) -> dict[str, Metric]:
    """Every metric in METRICS over `outcomes` (a metric no query counts in has total 0)."""
    metrics = {}
    for name in METRICS:
        counted = [o for o in outcomes if name in o.counted]
        if name == "mrr":
            metrics[name] = Metric.of_ranks(o.rank for o in counted)
        else:
            metrics[name] = Metric.of(name in o.hits for o in counted)
    return metrics


def percentiles(values_ms: Sequence[float]) -> dict[str, float | None]:
    """p50 and p95 (linear interpolation, as eval's latency figures), in ms."""
    if not values_ms:
        return {"p50": None, "p95": None}
    import numpy as np

    p50, p95 = np.percentile(np.asarray(values_ms, dtype=float), [50, 95])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3)}


def evaluate(
    engine: AnswerEngine,
    queries: Sequence[Query],
    *,
    kb: str = "",
    source: str = "",
    problems: Sequence[str] = (),
    clock: Callable[[], float] = time.perf_counter,
) -> KbEvalResult:
    """Answer each query in a fresh session (as `engine.answer` does) and score it."""
    if queries:
        engine.answer(queries[0].text)  # warm-up: first-call costs stay out of the latency
    outcomes = []
    for query in queries:
        start = clock()
        answer = engine.answer(query.text)
        outcomes.append(score_answer(query, answer, (clock() - start) * 1000.0))
    # the labels the file uses, in LANGUAGES order; "zh" stays apart so old reports still match
    labels = [lang for lang in LANGUAGES if any(o.query.lang == lang for o in outcomes)]
    by_lang = {}
    for lang in labels:
        metrics = summarize([o for o in outcomes if o.query.lang == lang])
        by_lang[lang] = {name: metrics[name] for name in BY_LANG_METRICS}
    return KbEvalResult(
        kb=kb,
        queries=source,
        top_k=engine.options.top_k,
        outcomes=tuple(outcomes),
        problems=tuple(problems),
        metrics=summarize(outcomes),
        by_lang=by_lang,
        latency_ms=percentiles([o.latency_ms for o in outcomes]),
    )


def evaluate_file(
    queries_path: str | Path,
    kb_path: str | Path | None = None,
    options: KbEvalOptions | None = None,
) -> KbEvalResult:
    """Load the KB (default: the packaged sample) and the query file, then `evaluate`."""
    from voice.answer.engine import AnswerEngine, AnswerOptions
    from voice.answer.kb import SAMPLE_KB

    options = options or KbEvalOptions()
    kb_path = Path(kb_path) if kb_path else SAMPLE_KB
    answer_options = AnswerOptions()
    answer_options = replace(
        answer_options,
        top_k=max(answer_options.top_k, options.top_k),
        semantic=options.semantic,
    )
    engine = AnswerEngine.from_file(kb_path, answer_options)  # KBError (exit 2) on a bad KB
    queries, problems = load_queries(queries_path, engine.kb.by_id)
    return evaluate(engine, queries, kb=str(kb_path), source=str(queries_path), problems=problems)


# -- the readable report ----------------------------------------------------------------------


def _pct(metric: Metric, name: str) -> str:
    if metric.value is None:
        return "-"
    return f"{metric.value:.3f}" if name == "mrr" else f"{metric.value:.1%}"


def format_report(result: KbEvalResult, misses: int = KbEvalOptions.misses) -> str:
    """A table of metrics (value, hits/total), then the first `misses` misses and the problems."""
    skipped = f", {len(result.problems)} problem(s)" if result.problems else ""
    lines = [
        f"{result.queries}: {len(result.outcomes)} queries on {result.kb}{skipped} "
        f"(top {result.top_k} suggestions)",
        "",
        f"{'metric':<24} {'value':>7} {'hits/total':>11}  meaning",
    ]
    rows = [(name, m, METRICS[name]) for name, m in result.metrics.items()]
    rows += [
        (f"{name} {lang}", m, f"as {name}, lang {lang} only")
        for lang, metrics in result.by_lang.items()
        for name, m in metrics.items()
    ]
    for name, m, meaning in rows:
        lines.append(
            f"{name:<24} {_pct(m, name.split()[0]):>7} {m.hits:>5}/{m.total:<5}  {meaning}"
        )
    lat = result.latency_ms
    if lat.get("p50") is not None:
        lines.append(f"{'latency':<24} p50 {lat['p50']:.2f} ms, p95 {lat['p95']:.2f} ms")
    all_misses = result.misses
    if all_misses:
        shown = all_misses[:misses]
        lines += ["", f"misses ({len(shown)} of {len(all_misses)} shown):"]
        for o in shown:
            q = o.query
            got = "nothing suggested"
            if o.top_id is not None:
                state = "resolved" if o.resolved else "unresolved"
                got = f"{o.top_id} {o.top_score:.2f} {state}"
            rank = f", expected at rank {o.rank}" if q.in_scope and o.rank not in (None, 1) else ""
            lines.append(
                f"  line {q.line}: {q.text}\n"
                f"    expect {q.expect or 'off-topic'} [{q.lang}{', upset' if q.negative else ''}]"
                f"  got {got}{rank} [{o.language}, {o.tone}]  failed: {', '.join(o.failed)}"
            )
    if result.problems:
        lines += ["", f"problems ({len(result.problems)} line(s) or field(s), skipped):"]
        lines += [f"  {p}" for p in result.problems]
    return "\n".join(lines)


__all__ = [
    "KbEvalOptions",
    "KbEvalResult",
    "Metric",
    "Outcome",
    "Query",
    "METRICS",
    "evaluate",
    "evaluate_file",
    "format_report",
    "load_queries",
    "parse_query",
    "score_answer",
    "summarize",
]
