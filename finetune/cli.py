"""`voice finetune` / `python -m finetune`: manifest in, fine-tuned CTranslate2 model out."""

from __future__ import annotations

import argparse
from dataclasses import fields

DEFAULT_MANIFEST = "recordings/synth/manifest.jsonl"

_HELP = {
    "mode": "top-encoder (lower layers cached, top layers + decoder trained) | decoder (encoder "
    "frozen, CTranslate2 outputs cached) | full | lora",
    "window": "encoder window: auto (utterance rounded up to 5 s) or whole seconds (longer clips "
    "use the next multiple of 5)",
    "max_minutes": "training time budget in minutes (caching and export not counted)",
    "augment_copies": "cached modes: extra augmented copies of each clip to cache",
    "mask_time": "cached modes: fraction of each clip's cached encoder frames zeroed in 2 spans "
    "per step (SpecAugment-style time masking; the cache itself cannot be re-augmented)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `finetune`, one flag per FinetuneOptions field."""
    from finetune.config import FinetuneOptions

    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="JSONL manifest")
    parser.add_argument("--out", required=True, help="output model directory, e.g. models/NAME")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--clean", action="store_true",
        help="after a successful export, delete the work directory .NAME.work beside --out "
        "(encoder cache and checkpoints; kept by default so the next run skips caching)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = FinetuneOptions()
    for f in fields(FinetuneOptions):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = f"{_HELP.get(f.name, f.name.replace('_', ' '))} (default: {default})"
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=default,
                                help=help_text)  # fmt: skip
        elif f.name == "window":
            parser.add_argument(flag, default=str(default), help=help_text)
        else:
            parser.add_argument(flag, type=type(default), default=default, help=help_text)


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        help="fine-tune Whisper on a manifest (CPU) and export a CTranslate2 model",
        description="Fine-tune the packaged Whisper on a manifest's train split, early-stop on "
        "dev CER, export to CTranslate2 with a model card (dev and test CER).",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def options_from_args(args: argparse.Namespace):
    from finetune.config import FinetuneOptions, parse_window

    values = {f.name: getattr(args, f.name) for f in fields(FinetuneOptions)}
    values["window"] = parse_window(str(values["window"]))
    return FinetuneOptions(**values)


def run(args: argparse.Namespace) -> int:
    from finetune.train import finetune

    result = finetune(
        args.manifest, args.out, options_from_args(args), force=args.force, resume=args.resume,
        progress=not args.no_progress, clean=args.clean,
    )  # fmt: skip
    card = result.card
    test = "n/a" if card["test_cer"] is None else f"{card['test_cer']:.3f}"
    print(f"{result.out}: dev CER {card['dev_cer']:.3f}, test CER {test}, "
          f"{card['training_minutes']:.1f} min training")  # fmt: skip
    return 0


__all__ = ["add_arguments", "register", "run"]
