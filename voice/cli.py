"""The `voice` command: one CLI whose subcommands are thin layers over the packages."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from voice import __version__
from voice.errors import VoiceError

# Each module defines `register(subparsers)`, adding its subcommand(s) with `func=run(args) -> int`.
# Modules are imported here, but must keep heavy imports (torch, faster-whisper) inside `run`.
COMMAND_MODULES = (
    "voice.commands",
    "voice.batch_cli",
    "voice.data.cli",
    "eval.cli",
    "finetune.cli",
    "voice.answer.cli",
    "voice.server.cli",
    "voice.integrations.cli",
    "voice.quality.cli",
)

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice",
        description="Cantonese voice front-end for Hong Kong call centres: phone audio in, "
        "utterances, Traditional-Chinese transcripts and suggested replies out.",
    )
    parser.add_argument("--version", action="version", version=f"voice {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(message)s",
        stream=sys.stderr,
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except VoiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
