"""Audit reviews of sampled calls: the YAML rubric, reviewers' scores, their agreement, clips."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from collections import Counter
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

DEFAULT_RUBRIC = Path(__file__).resolve().parent / "data" / "rubric.yaml"
TYPES = ("scale", "yes_no", "choice")
SCALE = (1, 2, 3, 4, 5)
LANGS = ("zh", "en")
MAX_COMMENT = 2000  # characters
MAX_CLIP_SECONDS = 60.0  # one utterance, with room: never a whole call in one request
ITEM_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS reviews (id INTEGER PRIMARY KEY AUTOINCREMENT, "
    "call_id TEXT NOT NULL, reviewer TEXT NOT NULL, role TEXT NOT NULL, "
    "rubric_version TEXT NOT NULL, scores TEXT NOT NULL, comment TEXT NOT NULL, "
    "created_at REAL NOT NULL, UNIQUE (call_id, reviewer))",
    "CREATE INDEX IF NOT EXISTS reviews_by_time ON reviews (created_at)",
)


class RubricError(ValueError):
    """A rubric file that cannot be used; the message names the item and the key."""


class ReviewError(ValueError):
    """A review that does not fit the rubric; the message names the field (scores.ITEM)."""


class AlreadyReviewed(Exception):
    """This reviewer has reviewed this call: one review per reviewer, so agreement stays honest."""


class ClipError(ValueError):
    """A bad audio span; the message names the parameter (start or end)."""


# --- the rubric -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    value: str
    label: dict[str, str]


@dataclass(frozen=True)
class Item:
    id: str
    label: dict[str, str]
    type: str
    required: bool
    options: tuple[Option, ...] = ()
    help: dict[str, str] | None = None

    def values(self) -> tuple[Any, ...]:
        """The answers this item takes, in the order a form offers them."""
        if self.type == "scale":
            return SCALE
        if self.type == "yes_no":
            return (True, False)
        return tuple(o.value for o in self.options)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "label": self.label, "type": self.type,
                               "required": self.required, "values": list(self.values())}  # fmt: skip
        if self.options:
            out["options"] = [{"value": o.value, "label": o.label} for o in self.options]
        if self.help:
            out["help"] = self.help
        return out


@dataclass(frozen=True)
class Rubric:
    version: str
    title: dict[str, str]
    items: tuple[Item, ...]
    source: str = field(default="", compare=False)

    def item(self, item_id: str) -> Item | None:
        return next((i for i in self.items if i.id == item_id), None)

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "title": self.title,
                "items": [i.to_json() for i in self.items]}  # fmt: skip

    def check(self, scores: Any) -> dict[str, Any]:
        """`scores` ({item id: answer}) checked against the rubric, in the rubric's order;
        an optional item left out or null is not applicable. Raises ReviewError naming the item."""
        if not isinstance(scores, dict):
            raise ReviewError("scores: an object of {item id: answer}")
        unknown = [k for k in scores if self.item(str(k)) is None]
        if unknown:
            raise ReviewError(f"scores.{unknown[0]}: not an item of rubric {self.version}")
        out: dict[str, Any] = {}
        for item in self.items:
            value = scores.get(item.id)
            if value is None:
                if item.required:
                    raise ReviewError(f"scores.{item.id}: required")
                continue
            # bool is an int in Python: a scale takes 1-5, never true/false
            if item.type == "scale" and (isinstance(value, bool) or value not in SCALE):
                raise ReviewError(f"scores.{item.id}: a whole number from 1 to 5")
            if item.type == "yes_no" and not isinstance(value, bool):
                raise ReviewError(f"scores.{item.id}: true or false")
            if item.type == "choice" and (not isinstance(value, str)
                                          or value not in item.values()):  # fmt: skip
                raise ReviewError(f"scores.{item.id}: one of {', '.join(item.values())}")
            out[item.id] = int(value) if item.type == "scale" else value
        return out


def load_rubric(path: str | Path | None = None) -> Rubric:
    """The rubric in the YAML file at `path` (default: the shipped one); RubricError otherwise."""
    import yaml

    path = Path(path) if path else DEFAULT_RUBRIC
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RubricError(f"{path}: cannot read the rubric ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise RubricError(f"{path}: not valid YAML ({exc})") from None
    return parse_rubric(data, str(path))


def parse_rubric(data: Any, source: str = "rubric") -> Rubric:
    """A Rubric from the parsed YAML; RubricError naming the item and key that are wrong."""
    if not isinstance(data, dict):
        raise RubricError(f"{source}: expected a mapping with `version` and `items`")
    version = data.get("version")
    if not isinstance(version, str | int) or isinstance(version, bool) or not str(version).strip():
        raise RubricError(f"{source}: version: a non-empty string (recorded with every review)")
    title = _label(data.get("title") or {"zh": "審核", "en": "Audit"}, f"{source}: title")
    raw = data.get("items")
    if not isinstance(raw, list) or not raw:
        raise RubricError(f"{source}: items: a non-empty list")
    items: list[Item] = []
    for n, entry in enumerate(raw, 1):
        where = f"{source}: item {n}"
        if not isinstance(entry, dict):
            raise RubricError(f"{where}: a mapping with id, label, type, required")
        item_id = entry.get("id")
        if not isinstance(item_id, str) or not ITEM_ID.match(item_id):
            raise RubricError(f"{where}: id: letters, digits and _ (starting with a letter)")
        where = f"{source}: item {item_id}"
        if any(i.id == item_id for i in items):
            raise RubricError(f"{where}: id: used by an earlier item")
        extra = set(entry) - {"id", "label", "type", "required", "options", "help"}
        if extra:
            raise RubricError(f"{where}: {sorted(extra)[0]}: not a key of an item")
        kind = entry.get("type")
        if kind not in TYPES:
            raise RubricError(f"{where}: type: one of {', '.join(TYPES)}")
        required = entry.get("required")
        if not isinstance(required, bool):
            raise RubricError(f"{where}: required: true or false")
        options: list[Option] = []
        if kind == "choice":
            raw_options = entry.get("options")
            if not isinstance(raw_options, list) or len(raw_options) < 2:
                raise RubricError(f"{where}: options: a list of at least two {{value, label}}")
            for m, option in enumerate(raw_options, 1):
                value = option.get("value") if isinstance(option, dict) else None
                if not isinstance(value, str) or not value.strip():
                    raise RubricError(f"{where}: options {m}: value: a non-empty string")
                if any(o.value == value for o in options):
                    raise RubricError(f"{where}: options {m}: value {value!r} repeated")
                options.append(Option(value, _label(option.get("label"),
                                                    f"{where}: options {m}: label")))  # fmt: skip
        elif "options" in entry:
            raise RubricError(f"{where}: options: only a choice item has options")
        help_text = entry.get("help")
        items.append(Item(item_id, _label(entry.get("label"), f"{where}: label"), kind, required,
                          tuple(options),
                          _label(help_text, f"{where}: help") if help_text else None))  # fmt: skip
    return Rubric(str(version).strip(), title, tuple(items), source)


def _label(value: Any, where: str) -> dict[str, str]:
    """A label in both console languages: {zh: ..., en: ...}."""
    if not isinstance(value, dict):
        raise RubricError(f"{where}: {{zh: ..., en: ...}}")
    for lang in LANGS:
        if not isinstance(value.get(lang), str) or not value[lang].strip():
            raise RubricError(f"{where}.{lang}: a non-empty string")
    return {lang: value[lang].strip() for lang in LANGS}


# --- the store --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Review:
    id: int
    call_id: str
    reviewer: str
    role: str
    rubric_version: str
    scores: dict[str, Any]
    comment: str
    created_at: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


COLUMNS = "id, call_id, reviewer, role, rubric_version, scores, comment, created_at"


def create(db: sqlite3.Connection) -> None:
    # One statement at a time: executescript would commit a transaction it runs in.
    for statement in SCHEMA:
        db.execute(statement)


def forget(db: sqlite3.Connection, calls_sql: str, args: tuple) -> None:
    """Delete the reviews of the calls `calls_sql` selects (retention, with their calls)."""
    db.execute(f"DELETE FROM reviews WHERE call_id IN ({calls_sql})", args)


def add(db: sqlite3.Connection, rubric: Rubric, call_id: str, reviewer: str, role: str,
        scores: Any, comment: Any, now: float) -> Review:  # fmt: skip
    """Store `reviewer`'s review of `call_id` (in a write transaction). ReviewError naming the
    field if it does not fit the rubric; AlreadyReviewed if this reviewer has reviewed the call."""
    checked = rubric.check(scores)
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise ReviewError("comment: a string")
    comment = comment.strip()
    if len(comment) > MAX_COMMENT:
        raise ReviewError(f"comment: at most {MAX_COMMENT} characters")
    try:
        review_id = db.execute(
            "INSERT INTO reviews (call_id, reviewer, role, rubric_version, scores, comment, "
            "created_at) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (call_id, reviewer, role, rubric.version, json.dumps(checked, ensure_ascii=False),
             comment, now),
        ).fetchone()[0]  # fmt: skip
    except getattr(db, "IntegrityError", sqlite3.IntegrityError):  # the store's driver's
        raise AlreadyReviewed(f"{reviewer} has already reviewed call {call_id}") from None
    return Review(review_id, call_id, reviewer, role, rubric.version, checked, comment, now)


def of_call(db: sqlite3.Connection, call_id: str) -> list[Review]:
    """A call's reviews, oldest first."""
    rows = db.execute(f"SELECT {COLUMNS} FROM reviews WHERE call_id=? ORDER BY created_at, id",
                      (call_id,))  # fmt: skip
    return [_review(row) for row in rows]


def _review(row: tuple) -> Review:
    rid, call_id, reviewer, role, version, scores, comment, created_at = row
    return Review(rid, call_id, reviewer, role, version, json.loads(scores), comment, created_at)


# --- agreement --------------------------------------------------------------------------------


def pair_agreement(reviews: list[Review], rubric: Rubric) -> dict[str, Any] | None:
    """How far a call's reviewers agree: for each pair of reviews made under `rubric`'s version,
    the share of rubric items both answered on which their answers are identical; `agreement` is
    the mean over pairs (0 to 1), `by_item` the share of pairs agreeing on each item. None with
    fewer than two such reviews, or when no pair answered a common item."""
    same = [r for r in reviews if r.rubric_version == rubric.version]
    shares, item_hits = [], {i.id: [0, 0] for i in rubric.items}
    for a, b in combinations(same, 2):
        common = [i.id for i in rubric.items
                  if a.scores.get(i.id) is not None and b.scores.get(i.id) is not None]  # fmt: skip
        if not common:
            continue
        hits = [a.scores[i] == b.scores[i] for i in common]
        shares.append(sum(hits) / len(common))
        for item_id, hit in zip(common, hits, strict=True):
            item_hits[item_id][0] += hit
            item_hits[item_id][1] += 1
    if not shares:
        return None
    return {"reviewers": len(same), "pairs": len(shares),
            "agreement": round(sum(shares) / len(shares), 4),
            "by_item": {k: round(h / n, 4) for k, (h, n) in item_hits.items() if n}}  # fmt: skip


def cohen_kappa(pairs: list[tuple[Any, Any]]) -> float | None:
    """Cohen's kappa of (first rater, second rater) answers: (p_o - p_e) / (1 - p_e), p_o the
    share of identical answers, p_e the chance agreement from each rater's own answer shares.
    None without pairs, or when both raters gave one same answer throughout (p_e = 1)."""
    if not pairs:
        return None
    n = len(pairs)
    observed = sum(a == b for a, b in pairs) / n
    first, second = (
        Counter(json.dumps(a) for a, _ in pairs),
        Counter(json.dumps(b) for _, b in pairs),
    )
    expected = sum(first[k] * second[k] for k in first) / (n * n)
    if expected >= 1:
        return None
    return round((observed - expected) / (1 - expected), 4)


def calibration(db: sqlite3.Connection, rubric: Rubric, job_id: str | None = None) -> dict:
    """Agreement across every call reviewed twice or more under `rubric`'s version (only the
    calls of audit job `job_id` if given): for each item, Cohen's kappa between each call's first
    and second review (by time; later reviews are left out, kappa being a two-rater figure) over
    the calls where both answered it, and their percent agreement; `kappa` is the mean of the
    items' defined kappas, `agreement` the mean over calls of pair_agreement."""
    sql = (f"SELECT {COLUMNS} FROM reviews WHERE rubric_version=? AND call_id IN "
           "(SELECT call_id FROM reviews WHERE rubric_version=? GROUP BY call_id "
           "HAVING count(*) >= 2)")  # fmt: skip
    args: list[Any] = [rubric.version, rubric.version]
    if job_id is not None:
        if not _has_audit_tables(db):
            return _empty_calibration(rubric, job_id)
        sql += " AND call_id IN (SELECT call_id FROM audit_samples WHERE job_id=?)"
        args.append(job_id)
    by_call: dict[str, list[Review]] = {}
    for row in db.execute(sql + " ORDER BY call_id, created_at, id", args):
        review = _review(row)
        by_call.setdefault(review.call_id, []).append(review)
    if not by_call:
        return _empty_calibration(rubric, job_id)
    items = {}
    for item in rubric.items:
        pairs = [(rs[0].scores[item.id], rs[1].scores[item.id]) for rs in by_call.values()
                 if rs[0].scores.get(item.id) is not None
                 and rs[1].scores.get(item.id) is not None]  # fmt: skip
        items[item.id] = {"calls": len(pairs), "kappa": cohen_kappa(pairs),
                          "agreement": round(sum(a == b for a, b in pairs) / len(pairs), 4)
                          if pairs else None}  # fmt: skip
    kappas = [v["kappa"] for v in items.values() if v["kappa"] is not None]
    per_call = [a["agreement"] for a in (pair_agreement(rs, rubric) for rs in by_call.values())
                if a is not None]  # fmt: skip
    return {"rubric_version": rubric.version, "job_id": job_id, "calls": len(by_call),
            "kappa": round(sum(kappas) / len(kappas), 4) if kappas else None,
            "agreement": round(sum(per_call) / len(per_call), 4) if per_call else None,
            "items": items}  # fmt: skip


def _empty_calibration(rubric: Rubric, job_id: str | None) -> dict:
    return {"rubric_version": rubric.version, "job_id": job_id, "calls": 0, "kappa": None,
            "agreement": None,
            "items": {i.id: {"calls": 0, "kappa": None, "agreement": None}
                      for i in rubric.items}}  # fmt: skip


# --- audit jobs and who may review ------------------------------------------------------------


def _has_audit_tables(db: sqlite3.Connection) -> bool:
    """Do voice.quality.sampling's tables exist? Not until a first `voice audit sample` (or the
    store creates them): until then no call is sampled and there are no jobs."""
    if hasattr(db, "has_table"):  # the store's connection, SQLite or PostgreSQL
        return db.has_table("audit_jobs") and db.has_table("audit_samples")
    return db.execute("SELECT count(*) FROM sqlite_master WHERE type='table' "
                      "AND name IN ('audit_jobs', 'audit_samples')").fetchone()[0] == 2  # fmt: skip


def sampled(db: sqlite3.Connection, call_id: str) -> bool:
    """Was the call drawn in some audit job?"""
    return (
        _has_audit_tables(db)
        and db.execute("SELECT 1 FROM audit_samples WHERE call_id=? LIMIT 1", (call_id,)).fetchone()
        is not None
    )


def may_review(db: sqlite3.Connection, principal: Any, call_id: str) -> bool:
    """May `principal` (voice.server.auth.Principal) read, play, correct and review this stored
    call? With the `audit` permission: a supervisor (`all_calls`) any call, an auditor only calls
    drawn in an audit sample. False for a call that is not stored."""
    if not principal.can("audit"):
        return False
    if db.execute("SELECT 1 FROM calls WHERE id=?", (call_id,)).fetchone() is None:
        return False
    return principal.can("all_calls") or sampled(db, call_id)


def jobs(db: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every audit job, newest first, with how many of its calls have one and two reviews."""
    if not _has_audit_tables(db):
        return []
    rows = db.execute(
        "SELECT j.id, j.created_at, j.created_by, j.params, j.population, "
        "(SELECT count(*) FROM audit_samples s WHERE s.job_id = j.id), "
        "(SELECT count(*) FROM audit_samples s WHERE s.job_id = j.id AND "
        " (SELECT count(*) FROM reviews r WHERE r.call_id = s.call_id) >= 1), "
        "(SELECT count(*) FROM audit_samples s WHERE s.job_id = j.id AND "
        " (SELECT count(*) FROM reviews r WHERE r.call_id = s.call_id) >= 2) "
        "FROM audit_jobs j ORDER BY j.created_at DESC, j.id"
    )
    return [{"id": job_id, "created_at": created_at, "created_by": by, "params": json.loads(params),
             "population": population, "sampled": n, "reviewed": one, "double_reviewed": two}
            for job_id, created_at, by, params, population, n, one, two in rows]  # fmt: skip


def job(db: sqlite3.Connection, job_id: str, reviewer: str) -> dict[str, Any] | None:
    """A job with its calls as stored now and their review status: how many reviews, by whom,
    whether `reviewer` has reviewed it, how many lines are corrected; None if unknown."""
    found = [j for j in jobs(db) if j["id"] == job_id]
    if not found:
        return None
    rows = db.execute(
        "SELECT s.call_id, s.stratum, c.agent, c.started_at, c.ended_at, c.status, "
        "json_extract(c.meta, '$.recording.seconds'), "
        "(SELECT count(DISTINCT k.seq) FROM corrections k WHERE k.call_id = s.call_id) "
        "FROM audit_samples s LEFT JOIN calls c ON c.id = s.call_id WHERE s.job_id=? "
        "ORDER BY c.started_at IS NULL, c.started_at, s.call_id",  # expired calls last
        (job_id,),
    ).fetchall()
    calls = []
    for call_id, stratum, agent, started, ended, status, seconds, corrected in rows:
        reviewers = [
            r
            for (r,) in db.execute(
                "SELECT reviewer FROM reviews WHERE call_id=? ORDER BY created_at, id", (call_id,)
            )
        ]
        calls.append({"call_id": call_id, "stratum": stratum, "agent": agent,
                      "started_at": started, "ended_at": ended,
                      "status": status or "expired",
                      # PostgreSQL's json_extract gives text: the number SQLite gives
                      "recording_seconds": json.loads(seconds) if isinstance(seconds, str)
                      else seconds,
                      "corrected_lines": corrected, "reviews": len(reviewers),
                      "reviewers": reviewers, "reviewed_by_me": reviewer in reviewers})  # fmt: skip
    return {**found[0], "calls": calls}


# --- what an auditor reads and hears ----------------------------------------------------------


def sheet(db: sqlite3.Connection, call_id: str) -> dict[str, Any] | None:
    """A call as a reviewer works on it: its record without the caller's metadata beyond the
    agent and times, its transcript lines in order (seq, start, end, text, language), each with
    the best suggestion that answered it and the line's corrections (oldest first); None if the
    call is not stored."""
    row = db.execute(
        "SELECT id, protocol, agent, started_at, ended_at, status, "
        "json_extract(meta, '$.recording') FROM calls WHERE id=?",
        (call_id,),
    ).fetchone()
    if row is None:
        return None
    recording = json.loads(row[6]) if row[6] else None
    lines: list[dict[str, Any]] = []
    for seq, kind, data in db.execute(
        "SELECT seq, type, data FROM events WHERE call_id=? AND type IN ('transcript', "
        "'suggestion') ORDER BY seq",
        (call_id,),
    ):
        event = json.loads(data)
        if kind == "transcript":
            lines.append({"seq": seq, "start": event["start"], "end": event["end"],
                          "text": event.get("text") or "", "language": event.get("language"),
                          "suggestion": None, "corrections": []})  # fmt: skip
        elif lines and lines[-1]["suggestion"] is None and event.get("start") == lines[-1]["start"]:
            # a suggestion answers the transcript of the same utterance, which came just before
            best = (event.get("suggestions") or [None])[0]
            lines[-1]["suggestion"] = {"resolved": bool(event.get("resolved")),
                                       "id": best and best.get("id"),
                                       "category": best and best.get("category"),
                                       "reply": best and best.get("reply")}  # fmt: skip
    by_seq = {line["seq"]: line for line in lines}
    for cid, seq, text, reviewer, created_at in db.execute(
        "SELECT id, seq, text, reviewer, created_at FROM corrections WHERE call_id=? "
        "ORDER BY seq, id",
        (call_id,),
    ):
        if seq in by_seq:
            by_seq[seq]["corrections"].append({"id": cid, "text": text, "reviewer": reviewer,
                                               "created_at": created_at})  # fmt: skip
    return {"id": row[0], "protocol": row[1], "agent": row[2], "started_at": row[3],
            "ended_at": row[4], "status": row[5],
            "recording": None if recording is None else
            {"seconds": recording.get("seconds"), "encoding": recording.get("encoding"),
             "sample_rate": recording.get("sample_rate")},
            "lines": lines}  # fmt: skip


def recording_path(db: sqlite3.Connection, record_dir: str | None, call_id: str) -> Path | None:
    """The call's recording file, if recording is on and the file is there."""
    if not record_dir:
        return None
    row = db.execute("SELECT json_extract(meta, '$.recording.file') FROM calls WHERE id=?",
                     (call_id,)).fetchone()  # fmt: skip
    name = row[0] if row else None
    # the name comes from recording.file_name; refuse anything that could leave the folder
    if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith("."):
        return None
    path = Path(record_dir) / name
    return path if path.is_file() else None


def parse_span(start: str | None, end: str | None) -> tuple[float, float | None]:
    """`?start=&end=` in seconds from the start of the call: start default 0, end default start +
    MAX_CLIP_SECONDS (cut at the recording's end); ClipError naming the parameter."""
    try:
        t0 = float(start) if start not in (None, "") else 0.0
    except ValueError:
        raise ClipError("start: seconds from the start of the call, e.g. 1.5") from None
    if not 0 <= t0 < 86_400:  # also refuses NaN and inf
        raise ClipError("start: seconds from the start of the call, 0 or more")
    if end in (None, ""):
        return t0, None
    try:
        t1 = float(end)
    except ValueError:
        raise ClipError("end: seconds from the start of the call, e.g. 4.25") from None
    if not t1 > t0:  # also refuses NaN
        raise ClipError("end: must be after start")
    if t1 - t0 > MAX_CLIP_SECONDS:
        raise ClipError(f"end: at most {MAX_CLIP_SECONDS:g} s after start")
    return t0, t1


def clip(path: Path, start: float, end: float | None) -> bytes:
    """Seconds [start, end) of a recording as a 16-bit PCM WAV at its own rate: decoded from
    G.711 so every browser plays it. ClipError if `start` is past the recording's end."""
    import soundfile as sf

    with sf.SoundFile(str(path)) as f:
        rate, total = f.samplerate, f.frames
        first = int(round(start * rate))
        if first >= total:
            raise ClipError(f"start: after the end of the recording ({total / rate:.2f} s)")
        stop = total if end is None else min(total, int(round(end * rate)))
        stop = min(stop, first + int(MAX_CLIP_SECONDS * rate))
        f.seek(first)
        pcm = f.read(stop - first, dtype="int16")
    out = io.BytesIO()
    sf.write(out, pcm, rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


__all__ = ["DEFAULT_RUBRIC", "MAX_CLIP_SECONDS", "AlreadyReviewed", "ClipError", "Item", "Option",
           "Review", "ReviewError", "Rubric", "RubricError", "add", "calibration", "clip",
           "cohen_kappa", "create", "forget", "job", "jobs", "load_rubric", "may_review",
           "of_call", "pair_agreement", "parse_rubric", "parse_span", "recording_path",
           "sampled", "sheet"]  # fmt: skip
