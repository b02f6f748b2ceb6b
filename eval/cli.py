"""`voice eval`: CER/MER/WER, latency and RTF of one or more models on one or more manifests."""

from __future__ import annotations

import argparse
import json
import sys

from voice.cliopts import add_option, on_off
from voice.commands import add_asr_args

EXIT_ABOVE_BAR = 1  # --fail-above: some model's CER is above the bar
EXIT_BAD_INPUT = 2  # bad manifest or options (as every VoiceError)


def register(sub: argparse._SubParsersAction) -> None:
    from eval.normalize import NUMBER_MODES, NormalizeOptions
    from eval.runner import MODES, EvalOptions

    p = sub.add_parser(
        "eval",
        help="measure models on manifests: CER/MER/WER, latency, RTF, reports",
        description="Transcribes the audio of one or more manifests with each model through the "
        "production code and scores it on normalised Hong Kong Traditional text: CER (primary), "
        "MER (Han characters + English words), WER (pycantonese words), as corpus-level "
        "fractions. Each model is loaded once and run over every manifest; results are "
        "reported per (manifest, model). Every manifest is checked before any model loads. "
        "Utterance mode scores each line's span; call mode streams whole calls through VAD + "
        "ASR and also scores the VAD.",
        conflict_handler="resolve",
    )
    p.add_argument(
        "manifests", nargs="+", metavar="MANIFEST",
        help="JSONL manifest(s) (format: recordings/README.md); --split, --limit, --seen-in and --mode apply "
        "to each",
    )  # fmt: skip
    add_asr_args(p)
    p.add_argument(
        "--model", dest="models", action="append", metavar="M",
        help="model name or directory; repeat to compare models (default: base). M+prompt "
        "(e.g. base+prompt, models/x+prompt) is model M decoded with the built-in "
        "spoken-Cantonese prompt, reported under that name",
    )  # fmt: skip
    add_option(p, "--mode", EvalOptions(), choices=MODES,
               help="utterance: each line's span; call: whole files through VAD + ASR")  # fmt: skip
    p.add_argument("--split", choices=("train", "dev", "test"), help="only lines of this split")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N lines (quick checks)")
    add_option(p, "--numbers", NormalizeOptions(), choices=NUMBER_MODES,
               help="digits: Chinese numerals to Arabic digits before scoring; keep: as "
               "written")  # fmt: skip
    add_normalize_args(p)
    p.add_argument(
        "--json", action="store_true",
        help='end stdout with one JSON object: {"models": [...]}, one entry per (manifest, model) '
        'with its "manifest"; models after the first on a manifest add "cer_delta_vs_first" and '
        '"cer_delta_ci95" (paired bootstrap)',
    )  # fmt: skip
    p.add_argument(
        "--seen-in", metavar="TRAIN_MANIFEST",
        help="also score separately the lines whose text occurs in this manifest's train split "
        "(every line if none is marked train): a gap between seen and unseen text is "
        "memorisation. Utterance mode only",
    )  # fmt: skip
    p.add_argument(
        "--report", metavar="DIR",
        help="write JSONL, Markdown and HTML reports here (several manifests: one subfolder per "
        "manifest, named after its file, and DIR/index.md)",
    )  # fmt: skip
    p.add_argument(
        "--fail-above", type=float, metavar="CER",
        help="exit 1 if any model's CER on any manifest (a fraction, e.g. 0.15) is above this",
    )  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    add_ray_args(p)
    p.set_defaults(func=run)


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """`--ray` and its pool's sizes, with `voice batch transcribe`'s defaults (BatchOptions)."""
    from voice.batch import BatchOptions

    pool = BatchOptions()
    add_option(p, "--ray", pool, metavar="auto|ADDRESS",
               help="decode on a Ray Data actor pool, as `voice batch transcribe --ray` (same "
               "scores as a local run): 'auto' joins the cluster in RAY_ADDRESS or one `ray "
               "start`ed here, else starts a local one; or a cluster address (head:6379)")  # fmt: skip
    add_option(p, "--workers", pool, type=int, metavar="N",
               help="with --ray: model copies (default %(default)s: the cluster's CPUs // "
               "--threads)")  # fmt: skip
    add_option(p, "--threads", pool, type=int, metavar="N",
               help="with --ray: CPU threads per model (CPUs per actor)")  # fmt: skip
    add_option(p, "--batch-size", pool, type=int, metavar="ITEMS",
               help="with --ray: manifest lines (calls in call mode) per actor call")  # fmt: skip


_NORMALIZE_HELP = {
    "fullwidth_to_halfwidth": "full-width letters, digits and spaces to half-width",
    "to_hk_traditional": "OpenCC to Hong Kong Traditional on both sides",
    "fold_variants": "fold character variants (裡/裏, 綫/線) before comparing",
    "lowercase": "lower-case Latin letters",
    "remove_punctuation": "drop punctuation and symbols",
    "collapse_whitespace": "keep single spaces between Latin words only",
}


def add_normalize_args(parser: argparse.ArgumentParser) -> None:
    """One --X / --no-X flag per on/off normalisation step (all on: the published scoring)."""
    from dataclasses import fields

    from eval.normalize import NormalizeOptions

    for f in fields(NormalizeOptions):
        if f.name in _NORMALIZE_HELP:
            parser.add_argument(
                "--" + f.name.replace("_", "-"), action=argparse.BooleanOptionalAction,
                default=f.default, help=f"{_NORMALIZE_HELP[f.name]} (default: {on_off(f.default)})",
            )  # fmt: skip


def normalize_from_args(args: argparse.Namespace):
    from eval.normalize import NormalizeOptions

    steps = {name: getattr(args, name) for name in _NORMALIZE_HELP}
    return NormalizeOptions(numbers=args.numbers, **steps)


def _load_manifest(path: str):
    """A manifest's entries, or None after printing its problems."""
    from voice.data.manifest import load_manifest

    entries, problems = load_manifest(path)
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        for problem in errors[:100]:
            print(f"error: {problem}", file=sys.stderr)
        if len(errors) > 100:
            print(f"... and {len(errors) - 100} more", file=sys.stderr)
        print(f"{path}: {len(errors)} problem(s); fix them and rerun", file=sys.stderr)
        return None
    return entries


def load_seen(path: str):
    """The train-split entries of `path` (every entry if none is marked train), or None."""
    entries = _load_manifest(path)
    if entries is None:
        return None
    train = [e for e in entries if e.split == "train"]
    return train or entries


def load_entries(path: str, args: argparse.Namespace):
    """A manifest's entries to evaluate, or None after printing the manifest's problems."""
    entries = _load_manifest(path)
    if entries is None:
        return None
    if args.split:
        entries = [e for e in entries if e.split == args.split]
    if args.limit is not None:
        entries = entries[: max(0, args.limit)]
    return entries


def run(args: argparse.Namespace) -> int:
    from eval.errors import EvalError
    from eval.results import summary_json
    from eval.runner import EvalOptions, evaluate_manifests, seen_texts
    from voice.commands import asr_from_args

    paths = list(args.manifests)
    repeated = sorted({p for p in paths if paths.count(p) > 1})
    if repeated:
        raise EvalError(f"manifest given more than once: {', '.join(repeated)}")
    manifests = [(path, load_entries(path, args)) for path in paths]  # every problem reported
    if any(entries is None for _, entries in manifests):
        return EXIT_BAD_INPUT
    for path, entries in manifests:
        if not entries:
            raise EvalError(
                f"{path}: no lines to evaluate" + (f" in split {args.split}" if args.split else "")
            )
    models = args.models or ["base"]
    normalize = normalize_from_args(args)
    seen = frozenset()
    if args.seen_in:
        train = load_seen(args.seen_in)
        if train is None:
            return EXIT_BAD_INPUT
        seen = seen_texts(train, normalize)
    options = EvalOptions(
        mode=args.mode, normalize=normalize, progress=not args.no_progress, seen_texts=seen
    )

    def load(model: str):
        return asr_from_args(argparse.Namespace(**{**vars(args), "model": model}))

    several = len(manifests) > 1
    results = []
    if args.ray:
        runs = _on_ray(args, models, manifests, options)
    else:
        runs = evaluate_manifests(models, load, manifests, options)
    for result in runs:
        results.append(result)  # model by model: each model is loaded once
        if not args.json:
            print(_line(result, several), flush=True)
    results.sort(key=lambda r: paths.index(r.manifest))  # manifest by manifest, models in order
    if args.report:
        from eval.report import write_reports

        write_reports(args.report, results)
        print(f"report written to {args.report}", file=sys.stderr)
    summary = summary_json(results)
    if args.json:
        print(json.dumps(summary, ensure_ascii=False))
    if args.fail_above is not None:
        above = [m for m in summary["models"] if m["cer"] is None or m["cer"] > args.fail_above]
        for m in above:
            where = f" on {m['manifest']}" if several else ""
            print(f"FAIL: {m['model']}{where} CER {m['cer']} is above {args.fail_above}",
                  file=sys.stderr)  # fmt: skip
        if above:
            return EXIT_ABOVE_BAR
    return 0


def _on_ray(args: argparse.Namespace, models, manifests, options):
    """Results as `evaluate_manifests` gives them, decoded on Ray (eval.raypool)."""
    from eval.raypool import evaluate_on_ray
    from voice.batch import BatchOptions, ModelSpec
    from voice.commands import asr_settings_from_args

    def spec_of(model: str) -> ModelSpec:
        name, asr, vad, store = asr_settings_from_args(
            argparse.Namespace(**{**vars(args), "model": model})
        )
        return ModelSpec(str(name), asr, vad, store)

    pool = BatchOptions(workers=args.workers, threads=args.threads, ray=args.ray,
                        batch_size=args.batch_size, progress=options.progress)  # fmt: skip
    return evaluate_on_ray(models, spec_of, manifests, options, pool)


def _line(result, with_manifest: bool = False) -> str:
    """One console line for a (manifest, model) result; prefixed by the manifest if asked."""
    prefix = f"{result.manifest}: " if with_manifest else ""
    return prefix + _scores(result)


def _scores(result) -> str:
    c = result.corpus
    if not c.utterances:
        return f"{result.model}: nothing scored ({len(result.failures)} failed)"
    rtf = f"{result.rtf:.3f}" if result.rtf is not None else "-"
    p50 = result.latency_percentile(50)
    p95 = result.latency_percentile(95)
    lat = f"{p50:.0f}/{p95:.0f} ms" if p50 is not None else "-"
    extra = ""
    if result.vad is not None:
        extra = (
            f"  VAD miss {result.vad.miss_rate:.1%} false alarm {result.vad.false_alarm_rate:.1%}"
            f" cuts {result.vad.false_cuts}/{result.vad.reference_utterances}"
        )
    novelty = result.by_novelty
    if novelty:
        extra += "".join(
            f"  {group}-text CER {score.cer.rate:.2%} ({score.utterances} utt)"
            for group, score in novelty.items()
            if score.utterances
        )
    failed = f"  ({len(result.failures)} failed)" if result.failures else ""
    return (
        f"{result.model}: CER {c.cer.rate:.2%} (S {c.cer.substitutions} D {c.cer.deletions} "
        f"I {c.cer.insertions} / {c.cer.reference_length})  MER {c.mer.rate:.2%}  "
        f"WER {c.wer.rate:.2%}  {result.utterances} utt  RTF {rtf}  p50/p95 {lat}{extra}{failed}"
    )
