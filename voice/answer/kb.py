"""The knowledge base: load a CSV/XLSX table of entries, validate every row, report by row/column."""

from __future__ import annotations

import csv
import logging
import string
from dataclasses import dataclass, field
from pathlib import Path

from voice.errors import VoiceError
from voice.types import CMN, EN

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("id", "category", "questions", "answer")  # must exist and be non-empty
# answer_zh: the reply in standard written Chinese (Traditional) for Mandarin callers; without
# it they get `answer` (colloquial Cantonese) and the engine logs a warning naming the entry.
OPTIONAL_COLUMNS = ("keywords", "answer_en", "priority", "answer_zh")
PRIORITIES = ("normal", "high")  # `high` raises an alert whenever the entry matches
SEPARATOR = "|"  # between questions, and between keywords
# Slots an answer may use; they are filled from the CRM (see voice.answer.crm).
SLOTS = ("customer_name", "honorific", "order_id", "order_status", "order_item", "order_eta")
SAMPLE_KB = Path(__file__).parent / "data" / "sample_kb.csv"  # the packaged demo KB


class KBError(VoiceError):
    """A knowledge base cannot be used; `problems` lists each as `FILE row N column X: ...`."""

    def __init__(self, path: Path | str, problems: list[str]):
        self.path = str(path)
        self.problems = list(problems)
        shown = "\n  ".join(problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"knowledge base {path} has {len(problems)} problem(s):\n  {shown}{more}")


@dataclass(frozen=True)
class Entry:
    """One row of the knowledge base: a topic, the ways callers ask about it, and the reply."""

    id: str
    category: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...] = ()
    answer_en: str = ""
    priority: str = "normal"
    row: int = 0  # the row in the source table (header is row 1), for messages
    answer_zh: str = ""  # standard written Chinese, for Mandarin callers

    def reply(self, language: str) -> str:
        """The reply template in `language` (a BCP 47 tag): `answer_en` for English,
        `answer_zh` for Mandarin, `answer` for Cantonese and whenever the other is empty."""
        if language == EN and self.answer_en:
            return self.answer_en
        if language == CMN and self.answer_zh:
            return self.answer_zh
        return self.answer


@dataclass(frozen=True)
class KnowledgeBase:
    """A validated set of entries, with the file it came from (so it can be reloaded)."""

    entries: tuple[Entry, ...]
    path: Path | None = None
    mtime: float = 0.0
    by_id: dict[str, Entry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not self.by_id:
            object.__setattr__(self, "by_id", {e.id: e for e in self.entries})

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def categories(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e.category for e in self.entries))


def _split(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(SEPARATOR) if part.strip())


def _template_slots(text: str) -> list[str]:
    try:
        return [name for _, name, _, _ in string.Formatter().parse(text) if name is not None]
    except ValueError as exc:
        raise ValueError(f"bad template ({exc}); write a literal brace as {{{{ or }}}}") from exc


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            return [row for row in csv.reader(fh)]
    except UnicodeDecodeError as exc:
        raise KBError(path, [f"{path}: not UTF-8 ({exc.reason}); save the CSV as UTF-8"]) from exc


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # Excel stores the id 101 as 101.0
    return str(value)


def _read_xlsx(path: Path) -> list[list[str]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for a bad file
        raise KBError(path, [f"{path}: cannot read as XLSX ({exc})"]) from exc
    try:
        sheet = book.worksheets[0]
        return [[_cell(cell) for cell in row] for row in sheet.iter_rows(values_only=True)]
    finally:
        book.close()


def parse_rows(rows: list[list[str]], source: str = "<table>") -> tuple[list[Entry], list[str]]:
    """Validate a table (first row the header) into entries; returns (entries, problems)."""
    problems: list[str] = []
    if not rows:
        return [], [f"{source}: the table is empty; expected a header row {REQUIRED_COLUMNS}"]
    header = [str(h).strip().lower() for h in rows[0]]
    columns = {name: i for i, name in reversed(list(enumerate(header))) if name}
    for name in REQUIRED_COLUMNS:
        if name not in columns:
            problems.append(f"{source} row 1 column {name}: required column is missing")
    for name in columns:
        if header.count(name) > 1:
            problems.append(f"{source} row 1 column {name}: column appears more than once")
        if name not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            log.warning("%s row 1 column %s: unknown column ignored", source, name)
    if problems:
        return [], problems

    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(rows[1:], start=2):
        cells = {
            n: (str(raw[i]).strip() if i < len(raw) and raw[i] is not None else "")
            for n, i in columns.items()
        }
        if not any(cells.values()):
            continue  # blank line
        where = f"{source} row {number}"
        for name in REQUIRED_COLUMNS:
            if not cells[name]:
                problems.append(f"{where} column {name}: required value is empty")
        entry_id = cells["id"]
        if entry_id:
            if entry_id in seen:
                problems.append(
                    f"{where} column id: duplicate id {entry_id!r} (first on row {seen[entry_id]})"
                )
            else:
                seen[entry_id] = number
        questions = _split(cells["questions"])
        if cells["questions"] and not questions:
            problems.append(f"{where} column questions: no question between the '|' separators")
        priority = (cells.get("priority") or "normal").lower()
        if priority not in PRIORITIES:
            problems.append(
                f"{where} column priority: unknown priority {cells['priority']!r} "
                f"(use {' or '.join(PRIORITIES)})"
            )
        for name in ("answer", "answer_en", "answer_zh"):
            try:
                unknown = [s for s in _template_slots(cells.get(name, "")) if s not in SLOTS]
            except ValueError as exc:
                problems.append(f"{where} column {name}: {exc}")
                continue
            if unknown:
                problems.append(
                    f"{where} column {name}: unknown slot {{{unknown[0]}}} "
                    f"(known: {', '.join(SLOTS)})"
                )
        entries.append(
            Entry(
                id=entry_id,
                category=cells["category"],
                questions=questions,
                answer=cells["answer"],
                keywords=_split(cells.get("keywords", "")),
                answer_en=cells.get("answer_en", ""),
                priority=priority,
                row=number,
                answer_zh=cells.get("answer_zh", ""),
            )
        )
    if not entries and not problems:
        problems.append(f"{source}: the table has a header but no entries")
    return entries, problems


def load_kb(path: str | Path) -> KnowledgeBase:
    """Load and validate a knowledge base (`.csv` UTF-8 or `.xlsx`); raise KBError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise KBError(path, [f"{path}: no such file"])
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _read_csv(path)
    elif suffix in (".xlsx", ".xlsm"):
        rows = _read_xlsx(path)
    else:
        raise KBError(path, [f"{path}: unknown format {suffix!r}; use .csv (UTF-8) or .xlsx"])
    entries, problems = parse_rows(rows, str(path))
    if problems:
        raise KBError(path, problems)
    log.debug("loaded %d entries from %s", len(entries), path)
    return KnowledgeBase(tuple(entries), path=path, mtime=path.stat().st_mtime)


__all__ = [
    "Entry",
    "KnowledgeBase",
    "KBError",
    "load_kb",
    "parse_rows",
    "REQUIRED_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PRIORITIES",
    "SLOTS",
    "SAMPLE_KB",
]
