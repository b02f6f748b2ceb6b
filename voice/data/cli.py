"""`voice data synth | check | import`: make, check and bring in recording manifests."""

from __future__ import annotations

import argparse
import logging
import os
import sys

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `data` command and its subcommands."""
    data = subparsers.add_parser("data", help="make, check and import recording manifests")
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    data.set_defaults(func=lambda args: (data.print_help(), 2)[1])

    synth = sub.add_parser("synth", help="generate a synthetic Cantonese call corpus")
    synth.add_argument("--calls", type=int, default=500, help="number of calls (default 500)")
    synth.add_argument("--out", default="recordings/synth", help="output folder")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="processes (default: all cores)"
    )
    synth.add_argument("--speakers", type=int, default=60, help="synthetic speakers (default 60)")
    synth.add_argument(
        "--hold-out-templates",
        action="store_true",
        help="give dev and test their own call-centre phrasings too (by default only the "
        "HKCanCor chat is held out by sentence; templates are shared, slots filled afresh)",
    )
    synth.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    synth.set_defaults(func=run_synth)

    export = sub.add_parser(
        "export-corrections",
        help="people's transcript corrections (from the call store) as a training manifest",
        description="Cuts each corrected utterance out of its call's recording (voice serve "
        "--record-dir) and writes OUT/manifest.jsonl with the corrected text, split by call, "
        "speakers as hashes of the caller's number. Train on it with `voice finetune "
        "--corrections OUT/manifest.jsonl`. The folder holds callers' voices: owner-only.",
    )  # fmt: skip
    export.add_argument("--db", required=True, help="the server's call store")
    export.add_argument("--record-dir", required=True, help="the server's --record-dir")
    export.add_argument("--out", required=True, help="folder to write (manifest.jsonl, audio/)")
    export.add_argument("--from", dest="first", metavar="YYYY-MM-DD",
                        help="calls started on or after this day (Hong Kong time)")  # fmt: skip
    export.add_argument("--to", dest="last", metavar="YYYY-MM-DD",
                        help="calls started on or before this day")  # fmt: skip
    export.add_argument("--force", action="store_true", help="replace an existing --out")
    export.set_defaults(func=run_export_corrections)

    check = sub.add_parser("check", help="report on a manifest; exit 1 if it cannot be trained on")
    check.add_argument("manifest", help="manifest JSONL file")
    check.add_argument(
        "--max-problems", type=int, default=100, help="problems to list (default 100)"
    )
    check.add_argument("--strict", action="store_true", help="fail on warnings too")
    check.set_defaults(func=run_check)

    imp = sub.add_parser(
        "import",
        help="build a manifest from a folder of audio + .txt, a CSV or a JSONL manifest",
        description="SOURCE is a folder of audio files with same-named .txt transcripts, a "
        "CSV with file and transcript columns and optional start/end (seconds), speaker, "
        "call_id, split, or a JSONL manifest (NeMo style) whose long lines are cut into "
        "utterances at pauses with their text aligned.",
    )
    from voice.data.importer import ImportOptions

    defaults = ImportOptions()  # flags default to the options' own defaults
    imp.add_argument("source", help="folder, CSV or JSONL file")
    imp.add_argument("--out", required=True, help="manifest to write (e.g. recordings/mine.jsonl)")
    imp.add_argument(
        "--channel",
        default=None,
        help="stereo calls: the customer's channel (0-based), or 'mix' to mix down",
    )
    imp.add_argument(
        "--split",
        default=defaults.split,
        choices=["auto", "speaker", "train", "dev", "test"],
        help="auto: the source's split column, else 80/10/10 by speaker (or call); speaker: "
        "whole speakers held out for test and dev (see --test-minutes); or one split for all",
    )
    imp.add_argument(
        "--max-seconds",
        type=float,
        default=defaults.max_seconds,
        help=f"JSONL: cut longer lines at pauses (default {defaults.max_seconds:g})",
    )
    imp.add_argument(
        "--cut-turns",
        action="store_true",
        help="JSONL: cut lines that carry `turns` [{spk, text}] at every turn boundary; each "
        "piece's speaker becomes call_id:spk",
    )
    speaker_split_help = {  # ImportOptions fields used by --split speaker; defaults from there
        "test_minutes": "minutes of test audio at least",
        "test_speakers": "test speakers at least",
        "dev_minutes": "minutes of dev audio at least",
        "seed": "seeds the speaker order",
    }
    for name, text in speaker_split_help.items():
        default = getattr(defaults, name)
        imp.add_argument(
            "--" + name.replace("_", "-"), type=type(default), default=default,
            help=f"--split speaker: {text} (default {default:g})",
        )  # fmt: skip
    imp.set_defaults(func=run_import)


def run_synth(args: argparse.Namespace) -> int:
    from voice.data.check import check_manifest
    from voice.data.synth import SynthOptions, generate_corpus
    from voice.data.synth.text import ScriptOptions

    options = SynthOptions(
        calls=args.calls,
        seed=args.seed,
        workers=args.workers,
        speakers=args.speakers,
        script=ScriptOptions(hold_out_templates=args.hold_out_templates),
        progress=not args.no_progress,
    )
    manifest = generate_corpus(args.out, options)
    report = check_manifest(manifest)
    print(report.format(max_problems=20))
    return 0 if report.ok else 1


def run_export_corrections(args: argparse.Namespace) -> int:
    from voice.quality.export import export_corrections
    from voice.server.analytics import day_period, parse_day
    from voice.server.store import open_existing

    since = until = None  # every correction unless a day is given
    if args.first:
        first = parse_day(args.first, "--from")
        since = day_period(first, first)[0]
    if args.last:
        last = parse_day(args.last, "--to")
        until = day_period(last, last)[1]
    store = open_existing(args.db)
    try:
        summary = export_corrections(store.db, args.record_dir, args.out, since, until,
                                     args.force)  # fmt: skip
    finally:
        store.close()
    for reason in summary.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    splits = ", ".join(f"{k} {v}" for k, v in sorted(summary.splits.items())) or "none"
    print(f"wrote {summary.out}/manifest.jsonl: {summary.utterances} corrected utterances "
          f"({summary.seconds / 60:.1f} min) from {summary.calls} calls ({splits}); "
          f"{len(summary.skipped)} skipped")  # fmt: skip
    return 0 if summary.utterances else 1


def run_check(args: argparse.Namespace) -> int:
    from voice.data.check import check_manifest

    report = check_manifest(args.manifest)
    print(report.format(max_problems=args.max_problems))
    if not report.ok:
        return 1
    return 1 if args.strict and report.warnings else 0


def run_import(args: argparse.Namespace) -> int:
    from voice.data.check import check_manifest
    from voice.data.importer import ImportOptions, import_data

    channel = args.channel
    if channel is not None and channel != "mix":
        try:
            channel = int(channel)
        except ValueError:
            channel = args.channel  # ImportOptions names the bad value
    options = ImportOptions(
        channel=channel, split=args.split, max_seconds=args.max_seconds, cut_turns=args.cut_turns,
        test_minutes=args.test_minutes, test_speakers=args.test_speakers,
        dev_minutes=args.dev_minutes, seed=args.seed,
    )  # fmt: skip
    report = import_data(args.source, args.out, options)
    for problem in report.problems:
        if problem not in report.dropped:
            print(f"{problem.severity}: {problem}", file=sys.stderr)
    errors = [p for p in report.problems if p.severity == "error"]
    print(report.format())
    if report.manifest is None:
        print(f"nothing imported from {args.source}", file=sys.stderr)
        return 1
    if errors:
        print(f"{len(errors)} item(s) left out; fix them and import again", file=sys.stderr)
    print(check_manifest(report.manifest).format(max_problems=20))
    return 1 if errors else 0
