"""`voice answer` and `voice kb`: answer utterances from a knowledge base; check, evaluate, demo KBs."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "answer",
        help="suggest replies to a caller's utterance from a knowledge base",
        description="Answer one utterance (TEXT), or with --session one utterance per stdin line "
        "in a single call session (language and escalation carry over).",
    )
    p.add_argument("text", nargs="*", metavar="TEXT", help="what the caller said")
    p.add_argument("--kb", help="knowledge base .csv/.xlsx (default: the packaged sample KB)")
    p.add_argument("--json", action="store_true", help="print one JSON object per utterance")
    p.add_argument("--session", action="store_true", help="read utterances from stdin, one a line")
    p.add_argument("--crm", metavar="DB", help="SQLite CRM database (schema: voice/answer/crm.py)")
    p.add_argument("--customer", metavar="ID", help="the caller's customer id in the CRM")
    p.add_argument("--top-k", type=int, default=None, help="suggestions per utterance (default 3)")
    p.add_argument("--threshold", type=float, default=None, help="score to count as resolved")
    p.set_defaults(func=run)

    k = subparsers.add_parser("kb", help="check a knowledge base or create demo data")
    ksub = k.add_subparsers(dest="kb_command", metavar="ACTION", required=True)
    c = ksub.add_parser("check", help="validate a KB file; report every problem by row/column")
    c.add_argument("file", help="knowledge base .csv (UTF-8) or .xlsx")
    c.add_argument("--json", action="store_true", help="print the summary as JSON")
    c.set_defaults(func=run_check)
    s = ksub.add_parser("sample-crm", help="write the demo SQLite CRM used with --crm")
    s.add_argument("out", help="the .db file to write")
    s.set_defaults(func=run_sample_crm)
    _register_eval(ksub)
    _register_suggest(ksub)


def _register_suggest(ksub: argparse._SubParsersAction) -> None:
    from voice.quality.mining import MIN_COUNT, THRESHOLD
    from voice.server.config import default_db_path

    g = ksub.add_parser(
        "suggest",
        help="mine new KB questions: unresolved utterances grouped by meaning, as KB rows",
        description="Group the call store's unresolved utterances in a period by meaning (the "
        "answer engine's sentence embeddings, across categories; by spelling if the encoder is "
        "not installed), rank the groups by how often they were asked and write each as a "
        "knowledge-base row: id NEW-001..., the most common category, the callers' own "
        "phrasings as questions (most central first), priority normal, then count and "
        "example_calls. Fill in `answer` (and `category` where empty; `answer_en`, `keywords` "
        "if wanted) and the rows pass `voice kb check`; append them to the KB (the extra "
        "columns are ignored). The file quotes callers: it is written owner-only.",
    )
    g.add_argument("--db", default=default_db_path(), help="the call store (default %(default)s)")
    g.add_argument("--from", dest="first", metavar="YYYY-MM-DD",
                   help="first day, Hong Kong time (default: 6 days before --to)")  # fmt: skip
    g.add_argument("--to", dest="last", metavar="YYYY-MM-DD",
                   help="last day, inclusive, Hong Kong time (default: today)")  # fmt: skip
    g.add_argument("--out", required=True, help="the candidates .csv to write")
    g.add_argument("--min-count", type=int, default=MIN_COUNT, metavar="N",
                   help="utterances a group needs to become a row (default %(default)s: "
                   "a one-off is noise)")  # fmt: skip
    g.add_argument("--threshold", type=float, default=THRESHOLD, metavar="COSINE",
                   help="similarity (0-1) to a group's centre at which an utterance joins it "
                   "(default %(default)s; higher: tighter, more groups)")  # fmt: skip
    g.set_defaults(func=run_suggest)


def _register_eval(ksub: argparse._SubParsersAction) -> None:
    from voice.answer.kbeval import KbEvalOptions  # light: the engine is imported by `run_eval`

    defaults = KbEvalOptions()
    e = ksub.add_parser(
        "eval",
        help="measure the answer engine on a question set: top-1, MRR, resolution, tone",
        description='Answer each line of QUERIES (JSONL: {"text", "expect": entry id or null, '
        '"lang": "zh"|"en", "negative": bool}) in a fresh session and report top-1, '
        "MRR, resolved precision/recall, off-topic rejection, reply language, tone and latency. "
        "Bad lines are reported by line and field and skipped.",
    )
    e.add_argument("queries", metavar="QUERIES.jsonl", help="the question set, one JSON a line")
    e.add_argument("--kb", help="knowledge base .csv/.xlsx (default: the packaged sample KB)")
    e.add_argument("--json", action="store_true", help="print the result as one JSON object")
    e.add_argument(
        "--top-k", type=int, default=defaults.top_k, metavar="N",
        help=f"suggestions per query that MRR looks through (default: {defaults.top_k})",
    )  # fmt: skip
    e.add_argument(
        "--misses", type=int, default=defaults.misses, metavar="N",
        help=f"misses listed in the readable report (default: {defaults.misses})",
    )  # fmt: skip
    e.add_argument(
        "--no-semantic", dest="semantic", action="store_false",
        help="answer on words and sounds only, without sentence embeddings (a before/after check)",
    )  # fmt: skip
    e.set_defaults(func=run_eval)


def _engine(args: argparse.Namespace):
    from dataclasses import replace

    from voice.answer import SAMPLE_KB, AnswerEngine, AnswerOptions, SqliteCustomerProvider

    options = AnswerOptions()
    if args.top_k is not None:
        options = replace(options, top_k=args.top_k)
    if args.threshold is not None:
        options = replace(options, threshold=args.threshold)
    crm = SqliteCustomerProvider(args.crm) if args.crm else None
    return AnswerEngine.from_file(args.kb or SAMPLE_KB, options, crm)


def _print(answer, as_json: bool) -> None:
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False), flush=True)
        return
    state = "resolved" if answer.resolved else "UNRESOLVED"
    sentiment = answer.sentiment
    print(f"[{answer.language}] {state}  tone {sentiment.label} ({sentiment.score:+.2f})")
    for i, s in enumerate(answer.suggestions, 1):
        print(f"  {i}. {s.id} {s.category} {s.score:.2f}  {s.reply}")
    if not answer.suggestions:
        print(f"  -  {answer.reply}")
    for alert in answer.alerts:
        print(f"  ALERT {alert.kind}: {alert.message}")
    if answer.handoff:
        print(f"  HANDOFF: {answer.handoff}")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from voice.errors import ConfigError

    if args.session and args.text:
        raise ConfigError("give TEXT or --session (utterances on stdin), not both")
    if not args.session and not args.text:
        raise ConfigError("nothing to answer: give TEXT, or --session and utterances on stdin")
    engine = _engine(args)
    session = engine.session(call_id="cli", customer_id=args.customer)
    if not args.session:
        _print(session.answer(" ".join(args.text)), args.json)
        return 0
    for line in sys.stdin:
        if line.strip():
            _print(session.answer(line), args.json)
    return 0


def run_check(args: argparse.Namespace) -> int:
    from voice.answer import load_kb

    kb = load_kb(args.file)  # KBError lists every problem; the CLI exits 2
    categories = Counter(e.category for e in kb.entries)
    high = sum(e.priority == "high" for e in kb.entries)
    english = sum(bool(e.answer_en) for e in kb.entries)
    if args.json:
        summary = {
            "file": str(args.file),
            "entries": len(kb),
            "categories": dict(categories),
            "high_priority": high,
            "with_english": english,
        }
        print(json.dumps(summary, ensure_ascii=False))
        return 0
    print(
        f"{args.file}: OK, {len(kb)} entries in {len(categories)} categories, "
        f"{high} high priority, {english} with an English answer"
    )
    for name, count in categories.most_common():
        print(f"  {name}: {count}")
    return 0


def run_sample_crm(args: argparse.Namespace) -> int:
    from voice.answer.crm import create_sample_db

    path = create_sample_db(args.out)
    print(f"wrote {path} (customers C1001-C1004; orders 85321, A12345, 90210, ...)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from voice.answer.kbeval import KbEvalOptions, evaluate_file, format_report

    options = KbEvalOptions(top_k=args.top_k, misses=args.misses, semantic=args.semantic)
    result = evaluate_file(args.queries, args.kb, options)  # ConfigError/KBError: exit 2
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
    else:
        print(format_report(result, options.misses))
    return 0


def run_suggest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from voice.errors import ConfigError
    from voice.files import write_atomic
    from voice.quality import mining
    from voice.server.store import open_existing

    start, end = mining.period(args.first, args.last)  # bad dates refused before the store opens
    if args.min_count < 1:
        raise ConfigError(f"--min-count {args.min_count}: must be at least 1")
    if not 0 < args.threshold <= 1:
        raise ConfigError(f"--threshold {args.threshold}: must be above 0 and at most 1")
    store = open_existing(args.db)
    try:
        turns = mining.unresolved_in(store.db, start, end)
    finally:
        store.close()
    groups = mining.group_questions(turns, threshold=args.threshold)
    rows = mining.candidate_rows(groups, args.min_count)
    path = write_atomic(Path(args.out), mining.render_csv(rows), private=True)
    print(
        f"{len(turns)} unresolved utterances, {len(groups)} groups, {len(rows)} asked at least "
        f"{args.min_count} times: wrote {path} (fill in answer, and category where empty)"
    )
    return 0
