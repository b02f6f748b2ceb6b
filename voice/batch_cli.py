"""`voice batch transcribe`: archives of recorded calls to resumable JSONL, locally or on Ray."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from voice.cliopts import add_option
from voice.commands import add_asr_args


def register(sub: argparse._SubParsersAction) -> None:
    from voice.batch import BatchOptions

    batch = sub.add_parser("batch", help="transcribe archives of recorded calls (resumable)")
    bsub = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)
    p = bsub.add_parser(
        "transcribe",
        help="files, folders or manifests through VAD + ASR into one JSONL file, resumably",
        description="Each recording is streamed through the same VAD + ASR session as a live call "
        "(as `voice transcribe`). OUT gets one line per utterance (the transcript event, plus "
        "`file`) and a file_done or file_failed line per file; a file is in OUT whole or not at "
        "all, so a rerun skips finished files and redoes an interrupted one. Runs in local "
        "processes, or with --ray on Ray Data actors that each hold a model.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files, folders (searched for .wav/.flac/.ogg) or .jsonl manifests")  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="the results JSONL (appended to)")
    options = BatchOptions()
    add_option(p, "--ray", options, metavar="auto|ADDRESS",
               help="run on Ray: 'auto' joins the cluster in RAY_ADDRESS or one `ray start`ed on "
               "this machine, else starts a local one; or a cluster address (head:6379)")  # fmt: skip
    add_option(p, "--workers", options, type=int, metavar="N",
               help="model copies at once (default %(default)s: CPU cores // --threads; with --ray the "
               "cluster's CPUs // --threads)")  # fmt: skip
    add_option(p, "--threads", options, type=int, metavar="N",
               help="CPU threads per model (with --ray: CPUs per actor)")  # fmt: skip
    add_option(p, "--batch-size", options, type=int, metavar="FILES",
               help="files per Ray Data batch")  # fmt: skip
    add_option(p, "--retry-failed", options, action="store_true",
               help="transcribe files recorded as file_failed again")  # fmt: skip
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar")  # fmt: skip
    add_asr_args(p)
    p.set_defaults(func=run_batch_transcribe)


def run_batch_transcribe(args: argparse.Namespace) -> int:
    from voice.batch import BatchOptions, ModelSpec, run_batch
    from voice.commands import asr_settings_from_args

    model, asr, vad, store = asr_settings_from_args(args)
    options = BatchOptions(
        workers=args.workers,
        threads=args.threads,
        ray=args.ray,
        batch_size=args.batch_size,
        retry_failed=args.retry_failed,
        progress=args.progress,
    )
    summary = run_batch(args.inputs, args.out, ModelSpec(str(model), asr, vad, store), options)
    print(summary, file=sys.stderr)
    return 1 if summary.any_failed else 0
