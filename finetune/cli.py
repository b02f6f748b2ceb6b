"""`voice finetune` / `python -m finetune`: manifest in, fine-tuned CTranslate2 model out."""

from __future__ import annotations

import argparse
from dataclasses import fields

DEFAULT_MANIFEST = "recordings/synth/manifest.jsonl"

_HELP = {
    "base_model": "model to start from: a model name (base: the packaged Whisper base) or a "
    "CTranslate2 Whisper directory",
    "top_layers": "top-encoder mode: how many of the top encoder layers train",
    "lora_rank": "lora mode: rank of the LoRA adapters",
    "train_embeddings": "train the token embeddings (tied to the output projection)",
    "dropout": "dropout in the trained decoder layers",
    "lr": "peak AdamW learning rate (linear warm-up, cosine decay over the budget)",
    "warmup_steps": "steps of linear learning-rate warm-up",
    "weight_decay": "AdamW weight decay",
    "batch_size": "utterances per step (each batch holds one encoder window length)",
    "max_steps": "upper bound on steps; the time budget usually ends training sooner",
    "epochs": "upper bound in passes over the training set",
    "eval_every": "steps between dev CER evaluations and checkpoints (the budget's end always "
    "evaluates; a large value evaluates only then)",
    "eval_utterances": "dev utterances per evaluation during training (0: all; the card uses all)",
    "patience": "evaluations without a better dev CER before training stops",
    "seed": "random seed of sampling, batching and augmentation",
    "augment": "on-the-fly modes: speed, noise, gain and codec augmentation",
    "label_smoothing": "cross-entropy label smoothing",
    "max_label_tokens": "transcripts longer than this many tokens are cut",
    "quantization": "CTranslate2 weights of the exported model (the encoder cache uses the same)",
    "cache_dir": "where encoder outputs and features are cached ('': .NAME.work/cache beside --out)",
    "threads": "torch and CTranslate2 threads (0: all cores)",
    "mode": "top-encoder (lower layers cached, top layers + decoder trained) | decoder (encoder "
    "frozen, CTranslate2 outputs cached) | full | lora",
    "window": "encoder window: auto (utterance rounded up to 5 s) or whole seconds (longer clips "
    "use the next multiple of 5)",
    "max_minutes": "training time budget in minutes (caching and export not counted)",
    "augment_copies": "cached modes: extra augmented copies of each clip to cache",
    "real_manifest": "real speech mixed into training (train/dev/test split by speaker); auto: "
    "the bundled HBL read speech, imported on first use; '' for none",
    "real_fraction": "share of training samples drawn from the real train split (the mix ratio)",
    "nonspeech_fraction": "share of training samples that are generated non-speech (line noise, "
    "tones, DTMF, hum, hold music) labelled no-speech, so the model writes nothing on them",
    "real_copies": "cached modes: phone-channel + speed-perturbed copies per real train clip",
    "select_on": "dev CER that early-stops and picks the exported checkpoint: real | synthetic",
    "check_manifests": "more real test sets scored for the card (comma-separated); auto: the "
    "bundled HKCanCor conversation; '' for none",
    "corrections": "manifests from `voice data export-corrections` (comma-separated): corrected "
    "call audio joins the real train and dev share, its test calls are scored on the card",
    "kl_weight": "weight of KL(base || tuned) on the training batches (0: off)",
    "l2_base": "weight of the squared distance to the base weights, L2-SP (0: off)",
    "base_mix": "share of the base model's weights mixed back into the trained decoder at "
    "export (WiSE-FT weight averaging; keeps what base knows): 0 for none, a share below 1, or "
    "auto: 0, 0.25, 0.5 or 0.75, whichever decodes real dev best (ties go to more base)",
    "base_mix_encoder": "share of base mixed into the trained encoder layers: same (as the "
    "decoder's) or a share below 1; 0 keeps synthetic speech (28%% vs 42%% CER in one run) but "
    "heard real conversation worse (72%% vs 68%%)",
    "initial_prompt": "text shown to the decoder as previous context in training and, through "
    "the model card, in decoding (e.g. the spoken-Cantonese voice.asr.CANTONESE_PROMPT)",
    "device": "where training runs: auto (a CUDA GPU when torch sees one, mixed precision), cpu "
    "or cuda",
    "mask_time": "cached modes: fraction of each clip's cached encoder frames zeroed in 2 spans "
    "per step (SpecAugment-style time masking; the cache itself cannot be re-augmented)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of `finetune`, one flag per FinetuneOptions field."""
    from finetune.config import FinetuneOptions
    from voice.cliopts import add_option

    parser.add_argument("--manifest", default=DEFAULT_MANIFEST, help="JSONL manifest")
    parser.add_argument("--out", required=True, help="output model directory, e.g. models/NAME")
    parser.add_argument("--force", action="store_true", help="replace an existing --out")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument(
        "--clean", action="store_true",
        help="after a successful export, delete the work directory .NAME.work beside --out "
        "(encoder cache and checkpoints; kept by default so the next run skips caching)",
    )  # fmt: skip
    parser.add_argument(
        "--allow-regression", action="store_true",
        help="publish the model even if its real-test CER is worse than zero-shot base's "
        "(by default export refuses it)",
    )  # fmt: skip
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    defaults = FinetuneOptions()
    for f in fields(FinetuneOptions):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        help_text = _HELP.get(f.name, f.name.replace("_", " ")) + " (default: %(default)s)"
        if isinstance(default, bool):
            kind = {"action": argparse.BooleanOptionalAction}
        elif f.name == "window":
            kind = {}  # "auto" or seconds: parsed by options_from_args
        else:
            kind = {"type": type(default)}
        add_option(parser, flag, defaults, f.name, help=help_text, **kind)


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
        progress=not args.no_progress, clean=args.clean, allow_regression=args.allow_regression,
    )  # fmt: skip
    card = result.card

    def pct(key: str) -> str:
        return "n/a" if card.get(key) is None else f"{card[key]:.1%}"

    print(f"{result.out}: synthetic dev CER {pct('dev_cer')}, synthetic test CER "
          f"{pct('test_cer')}, {card['training_minutes']:.1f} min training")  # fmt: skip
    mix = card.get("base_mix", {})
    share, encoder = mix.get("share", 0.0), mix.get("encoder_share", 0.0)
    if share or encoder:
        print(f"  weights mixed back towards base: decoder {share:.0%} (--base-mix), encoder "
              f"{encoder:.0%} (--base-mix-encoder); real dev CER {pct('real_dev_cer')}")  # fmt: skip
    for row in card.get("evaluations", []):
        line = f"  {row['set']}: CER {row['cer']:.1%} ({row['utterances']} utt)"
        if "base_cer" in row:
            vs = row["vs_base_prompted"]
            line += (f"; zero-shot base {row['base_cer']:.1%}, base+prompt "
                     f"{row['base_prompted_cer']:.1%} (difference {vs['cer_delta']:+.1%}, 95% CI "
                     f"{vs['ci95'][0]:+.1%} to {vs['ci95'][1]:+.1%})")  # fmt: skip
        print(line)
    quiet = card.get("nonspeech_test")
    if quiet:
        print(
            f"  non-speech clips ({quiet['clips']}, not trained on) with text written: "
            f"{quiet['with_text']} (zero-shot base {quiet['base_with_text']})"
        )
    return 0


__all__ = ["add_arguments", "register", "run"]
