"""New-question mining: unresolved utterances grouped by meaning, and the groups as KB rows."""

from __future__ import annotations

import csv
import io
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from voice.answer.kb import SEPARATOR
from voice.errors import ConfigError
from voice.server import analytics

if TYPE_CHECKING:  # numpy is imported when grouping: `voice --help` stays quick
    import numpy as np

    from voice.answer.embed import SentenceEncoder

log = logging.getLogger(__name__)

# Cosine similarity (USE-multilingual, over the Cantonese rewritten as written Chinese) between a
# phrasing and the centre of a group (the mean of its phrasings) at which it joins the group.
# Measured on tests/test_kb_suggest.py's phrasings: a paraphrase sits 0.58-0.82 from the centre of
# the other phrasings of its question (讀緊書有冇折 vs the student-discount group the loosest),
# a phrasing of another question at most 0.45 (學生可唔可以平啲 vs the pets group; unrelated
# questions 0.2-0.4); pairs of unrelated one-offs reach 0.45-0.48 (今日天氣點呀 / 你哋幾點關門).
# 0.5 keeps every paraphrase and no false pair there; 0.55 already splits off 讀緊書有冇折.
THRESHOLD = 0.5
SIMILAR = 70  # fallback without the encoder: rapidfuzz ratio (0-100) of the normalised text
MAX_QUESTIONS = 10  # phrasings written into a candidate row, most central first
MIN_COUNT = 2  # utterances a group needs to become a candidate: a one-off is noise
EXAMPLES = 3  # example call ids per group
MAX_TURNS = 5000  # unresolved utterances read per category: a week of a large centre
KB_COLUMNS = ("id", "category", "questions", "keywords", "answer", "answer_en", "priority")
EXTRA_COLUMNS = ("count", "example_calls")
DEFAULT_DAYS = 7


@dataclass
class QuestionGroup:
    """Unresolved utterances that ask much the same thing."""

    category: str  # the most common category of its utterances (UNCATEGORISED if none had one)
    text: str  # the most central phrasing: the group's name
    texts: list[str] = field(default_factory=list)  # every utterance, most central phrasing first
    calls: list[str] = field(default_factory=list)  # distinct call ids, first seen first

    @property
    def count(self) -> int:
        return len(self.texts)

    @property
    def phrasings(self) -> list[str]:
        """The distinct phrasings, most central first."""
        return list(dict.fromkeys(self.texts))


@dataclass
class _Unit:
    """The utterances that share one embedding input (or, in the fallback, one normalised text)."""

    key: str
    part: str  # the category when grouping within categories, else ""
    turns: list[dict[str, Any]] = field(default_factory=list)


def group_questions(
    turns: Sequence[dict[str, Any]],
    *,
    within_category: bool = False,
    threshold: float = THRESHOLD,
    encoder: SentenceEncoder | None = None,
) -> list[QuestionGroup]:
    """Group unresolved turns (dicts with text, call_id, category) by meaning; largest first.

    Greedy clustering: distinct phrasings, most often said first, each join the group whose
    centre (the mean of its phrasings' unit vectors) is most similar if at least `threshold`,
    else start a group. Across categories by default, because an unresolved turn's category is
    only the best of the suggestions that failed it, so the same new question is often filed
    under different ones; `within_category` keeps categories apart (the weekly report, which is
    read by category). `encoder`: a loaded SentenceEncoder; without one it is loaded, and if it
    is not installed the grouping falls back to rapidfuzz over the normalised text (a warning)."""
    import numpy as np

    from voice.answer.embed import SentenceEncoder, to_written

    if encoder is None:
        try:
            encoder = SentenceEncoder.load()
        except ConfigError as exc:
            log.warning("grouping unresolved utterances by spelling, not meaning: %s", exc)
            return _group_by_spelling(turns, within_category)
    units = _units(turns, to_written, within_category)
    vectors = encoder.encode([u.key for u in units]) if units else np.zeros((0, 512), np.float32)
    clusters: list[list[int]] = []
    for part in dict.fromkeys(u.part for u in units):
        members = [i for i, u in enumerate(units) if u.part == part]
        clusters.extend(_greedy(vectors, members, threshold))
    groups = []
    for cluster in clusters:
        centre = vectors[cluster].sum(axis=0)
        centre /= max(float(np.linalg.norm(centre)), 1e-9)
        # rounded: two phrasings equally central (as in a group of two) keep the order seen
        closeness = {i: round(float(vectors[i] @ centre), 4) for i in cluster}
        groups.append(_group([units[i] for i in sorted(cluster, key=lambda i: -closeness[i])]))
    return sorted(groups, key=lambda g: (-g.count, g.category, g.text))


def _units(turns: Sequence[dict[str, Any]], key: Callable[[str], str],
           within_category: bool) -> list[_Unit]:  # fmt: skip
    """Turns with text collected by (category if within, key of the text); most turns first,
    then first seen, so the commonest phrasings found the groups."""
    units: dict[tuple[str, str], _Unit] = {}
    for turn in turns:
        text = (turn.get("text") or "").strip()
        if not text:
            continue
        part = (turn.get("category") or analytics.UNCATEGORISED) if within_category else ""
        unit_key = key(text) or text  # a text of particles only keeps its own key
        units.setdefault((part, unit_key), _Unit(unit_key, part)).turns.append(turn)
    return sorted(units.values(), key=lambda u: -len(u.turns))  # stable: first seen on ties


def _greedy(vectors: np.ndarray, members: list[int], threshold: float) -> list[list[int]]:
    """Indices of `members` clustered greedily against running group centres."""
    import numpy as np

    clusters: list[list[int]] = []
    # one row per cluster: the sum of its vectors, and that sum as a unit vector (kept up to date
    # row by row, so each utterance costs one matrix-vector product)
    sums = np.zeros((len(members), vectors.shape[1]), dtype=np.float32)
    centres = np.zeros_like(sums)
    for i in members:
        n = len(clusters)
        if n:
            similarity = centres[:n] @ vectors[i]
            best = int(np.argmax(similarity))
            if similarity[best] >= threshold:
                clusters[best].append(i)
                sums[best] += vectors[i]
                centres[best] = sums[best] / max(float(np.linalg.norm(sums[best])), 1e-9)
                continue
        clusters.append([i])
        sums[n] = centres[n] = vectors[i]
    return clusters


def _group_by_spelling(
    turns: Sequence[dict[str, Any]], within_category: bool
) -> list[QuestionGroup]:
    """The fallback: greedy grouping by rapidfuzz ratio against each group's first phrasing."""
    from rapidfuzz import fuzz

    from voice.answer.text import normalize

    clusters: list[list[_Unit]] = []
    for unit in _units(turns, normalize, within_category):
        same = [c for c in clusters if c[0].part == unit.part]
        best = max(same, key=lambda c: fuzz.ratio(unit.key, c[0].key), default=None)
        if best is None or fuzz.ratio(unit.key, best[0].key) < SIMILAR:
            clusters.append([unit])
        else:
            best.append(unit)
    groups = [_group(cluster) for cluster in clusters]
    return sorted(groups, key=lambda g: (-g.count, g.category, g.text))


def _group(units: list[_Unit]) -> QuestionGroup:
    """A group of units given most central first."""
    turns = [turn for unit in units for turn in unit.turns]
    texts = [(turn.get("text") or "").strip() for turn in turns]
    seen = Counter(turn.get("category") or analytics.UNCATEGORISED for turn in turns)
    # a real category beats 未分類 (no KB entry came close): it is the KB owner's best hint
    named = [c for c, _ in seen.most_common() if c != analytics.UNCATEGORISED]
    category = named[0] if named else analytics.UNCATEGORISED
    calls = list(dict.fromkeys(turn["call_id"] for turn in sorted(turns, key=_when)))
    return QuestionGroup(category, texts[0], texts, calls)


def _when(turn: dict[str, Any]) -> str:
    return str(turn.get("ts") or "")


# --- reading the store, writing candidates ----------------------------------------------------


def period(first: str | None, last: str | None,
           today: date | None = None) -> tuple[datetime, datetime]:  # fmt: skip
    """[first 00:00, the day after last 00:00) Hong Kong time, both days inclusive; by default
    the last DEFAULT_DAYS days up to today (HK)."""
    today = today or datetime.now(analytics.HK).date()
    end_day = analytics.parse_day(last, "--to") if last else today
    start_day = (analytics.parse_day(first, "--from") if first
                 else end_day - timedelta(days=DEFAULT_DAYS - 1))  # fmt: skip
    if start_day > end_day:
        raise ConfigError(f"--from {start_day} is after --to {end_day}")
    limit = analytics.MAX_PERIOD["day"].days
    if (end_day - start_day).days >= limit:
        raise ConfigError(f"--from {start_day}: the period is longer than {limit} days")
    start = datetime.combine(start_day, datetime.min.time(), analytics.HK)
    return start, datetime.combine(end_day + timedelta(days=1), datetime.min.time(), analytics.HK)


def unresolved_in(db, start: datetime, end: datetime, categories: Sequence[str] | None = None,
                  limit: int = MAX_TURNS) -> list[dict[str, Any]]:  # fmt: skip
    """The unresolved turns in [start, end) of `categories` (default: every category with turns
    then) from a store's read connection, at most `limit` per category, oldest first."""
    if categories is None:
        categories = analytics.heatmap(db, start, end, "day")["categories"]
    return [turn for category in categories
            for turn in analytics.unresolved_turns(db, start, end, category, limit=limit)]  # fmt: skip


def candidate_rows(groups: Sequence[QuestionGroup], min_count: int = MIN_COUNT,
                   max_questions: int = MAX_QUESTIONS) -> list[list[str]]:  # fmt: skip
    """One KB row per group asked at least `min_count` times, largest first, ids NEW-001...:
    real phrasings as its questions, answer empty for a human, then count and example calls."""
    rows = []
    for group in (g for g in groups if g.count >= min_count):
        # a '|' inside a phrasing would split it into two questions
        questions = [p.replace(SEPARATOR, " ").strip() for p in group.phrasings]
        category = "" if group.category == analytics.UNCATEGORISED else group.category
        distinct = list(dict.fromkeys(q for q in questions if q))[:max_questions]
        rows.append([f"NEW-{len(rows) + 1:03d}", category, SEPARATOR.join(distinct), "", "", "",
                     "normal", str(group.count), " ".join(group.calls[:EXAMPLES])])  # fmt: skip
    return rows


def render_csv(rows: Sequence[Sequence[str]]) -> str:
    """The KB's columns then count and example_calls, formula-guarded, with a BOM so spreadsheet
    programs read the Chinese."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*KB_COLUMNS, *EXTRA_COLUMNS])
    for row in rows:
        writer.writerow([analytics.spreadsheet_safe(str(v)) for v in row])
    return "\ufeff" + buffer.getvalue()


__all__ = [
    "MIN_COUNT",
    "THRESHOLD",
    "QuestionGroup",
    "candidate_rows",
    "group_questions",
    "period",
    "render_csv",
    "unresolved_in",
]
