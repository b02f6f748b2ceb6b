"""Where one utterance's time goes on this machine: VAD, features, encoder, decoder, answer engine
(search, voice pitch), JSON and the store write; then ASR throughput under other settings
(compute type, CTranslate2 workers x threads, batch size). Tables for BENCHMARKS.md.

    python -m voice.server.profile --out BENCHMARKS.md [--model base] [--batch 1,8] [--settings]

Stages are timed in this process on the load test's synthetic calls, each stage alone, medians
over every utterance: the per-utterance budget a live server spends, without its event loop.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from voice.markdown import update_section

SECTION = "## Where the time goes per utterance"
SETTINGS_SECTION = "## ASR throughput by settings"
# (compute type, CTranslate2 workers, threads each, batch): what a 2-core server could run
SETTINGS = (("int8", 1, 2, 1), ("float32", 1, 2, 1), ("int8", 1, 2, 8), ("float32", 1, 2, 8),
            ("int8", 2, 1, 8), ("int8", 1, 2, 16))  # fmt: skip


class _Clock:
    """Milliseconds per named stage: `with clock("encoder"): ...` adds one sample."""

    def __init__(self):
        self.samples: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        yield
        self.samples.setdefault(stage, []).append(1000 * (time.perf_counter() - started))


def profile(model: str, batches: list[int], kb: str | None) -> dict:
    import ctranslate2

    from voice.answer.engine import AnswerEngine
    from voice.answer.kb import SAMPLE_KB
    from voice.asr import Transcriber
    from voice.features import encoder_input
    from voice.pipeline import CallSession, StreamFormat
    from voice.prosody import AgitationTracker, preload
    from voice.server.loadtest import make_calls
    from voice.server.store import Store
    from voice.types import TranscriptEvent

    calls = make_calls(4)
    transcriber = Transcriber.load(model)
    engine = AnswerEngine.from_file(kb or SAMPLE_KB)
    preload()
    clock = _Clock()
    segments = []
    for i, call in enumerate(calls):
        session = CallSession(f"p{i}", None, stream=StreamFormat("mulaw", 8000))
        step = 160  # 20 ms of 8 kHz mu-law, as bridges send it
        started = time.perf_counter()
        for pos in range(0, len(call.mulaw), step):
            segments += session.feed(call.mulaw[pos : pos + step])
        segments += session.feed_end()
        clock.samples.setdefault("VAD + G.711 decoding, per second of call audio", []).append(
            1000 * (time.perf_counter() - started) / call.duration
        )
    transcriber.transcribe_batch(segments[:1])  # warm-up: first-call costs stay out
    ct2 = transcriber._model
    session = engine.session("p")
    tracker = AgitationTracker()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "p.sqlite3")
        store.open_call("p", "stream", None, None, {})
        for n, seg in enumerate(segments, 1):
            window = transcriber.window_for(seg.duration)
            with clock("log-mel features"):
                feats = np.stack([encoder_input(seg.samples, window, transcriber.n_mels)])
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
            with clock(f"encoder ({window} s window)"):
                encoded = ct2.encode(view, to_cpu=False)
            with clock("decoder (greedy, no-speech probability)"):
                ct2.generate(encoded, [transcriber._prompt], beam_size=1,
                             max_length=transcriber._token_cap(seg.duration) * 2,
                             suppress_blank=True, return_no_speech_prob=True,
                             suppress_tokens=transcriber._suppress)  # fmt: skip
            with clock("whole transcriber call (all of the above + text guards)"):
                text = transcriber.transcribe_batch([seg])[0].text or "喂"
            with clock("answer engine: search (BM25 + Jyutping + embedding)"):
                engine.search(text)
            with clock("answer engine: voice pitch and energy (pYIN)"):
                tracker.push(seg.samples)
            event = TranscriptEvent("p", seg.start, seg.end, text, 0.0)
            with clock("answer engine: whole turn"):
                payload = [event, *session.events(event, seg.samples)]
            with clock("JSON of the turn's events"):
                for e in payload:
                    json.dumps(e.to_dict(), ensure_ascii=False)
            with clock("store writes of the turn's events (SQLite, WAL)"):
                for k, e in enumerate(payload):
                    store.add_event("p", 10 * n + k, e.to_dict())
        store.close()
    for b in batches:
        if b == 1:
            continue
        group = (segments * (1 + b // max(1, len(segments))))[:b]
        started = time.perf_counter()
        transcriber.transcribe_batch(group)
        per_utterance = 1000 * (time.perf_counter() - started) / b
        clock.samples[f"transcriber call for a batch of {b} (per utterance)"] = [per_utterance]
    rows = clock.samples
    return {"rows": {k: float(np.median(v)) for k, v in rows.items()},
            "utterances": len(segments)}  # fmt: skip


def _utterances(count: int = 4) -> list:
    from voice.pipeline import CallSession, StreamFormat
    from voice.server.loadtest import make_calls

    segments = []
    for i, call in enumerate(make_calls(count)):
        session = CallSession(f"p{i}", None, stream=StreamFormat("mulaw", 8000))
        segments += session.feed(call.mulaw) + session.feed_end()
    return segments


def throughput(model: str) -> list[dict]:
    """Utterances per second the transcriber decodes under each of SETTINGS: batches of the load
    test's utterances, `workers` of them decoded at once (CTranslate2's inter_threads)."""
    from concurrent.futures import ThreadPoolExecutor

    from faster_whisper import WhisperModel

    from voice.asr import AsrOptions, Transcriber

    segments = _utterances() * 2
    rows = []
    for compute, workers, threads, batch in SETTINGS:
        transcriber = Transcriber.load(model, AsrOptions(cpu_threads=threads, compute_type=compute))
        if workers > 1:  # a model that decodes `workers` batches at once
            whisper = WhisperModel(str(transcriber.model_dir), device="cpu", compute_type=compute,
                                   cpu_threads=threads, num_workers=workers)  # fmt: skip
            transcriber._model = whisper.model
        transcriber.transcribe_batch(segments[:1])  # warm-up
        groups = [segments[i : i + batch] for i in range(0, len(segments), batch)]
        started = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(transcriber.transcribe_batch, groups))
        took = 1000 * (time.perf_counter() - started)
        rows.append({"compute": compute, "workers": workers, "threads": threads, "batch": batch,
                     "per_s": len(segments) / (took / 1000), "ms": took / len(segments)})  # fmt: skip
        print(
            f"  {compute}, {workers} x {threads} threads, batch {batch}: "
            f"{rows[-1]['per_s']:.2f} utterances/s",
            file=sys.stderr,
            flush=True,
        )
    return rows


def render_settings(rows: list[dict], command: str, model: str) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"{SETTINGS_SECTION} ({model})", "",
        f"Command: `{command}`", "",
        f"Machine: {os.cpu_count()} CPU cores, load average {load} at the end. The load test's "
        "utterances twice over, decoded back to back in batches; workers decode batches at once "
        "(CTranslate2 inter_threads), each with its threads.", "",
        "| compute type | workers x threads | batch | utterances/s | ms per utterance |",
        "|---|---|---:|---:|---:|",
    ]  # fmt: skip
    lines += [f"| {r['compute']} | {r['workers']} x {r['threads']} | {r['batch']} | "
              f"{r['per_s']:.2f} | {r['ms']:.0f} |" for r in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def render(result: dict, command: str, model: str) -> str:
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    lines = [
        f"{SECTION} ({model})", "",
        f"Command: `{command}`", "",
        f"Machine: {os.cpu_count()} CPU cores, no GPU, load average {load} at the end. "
        f"{result['utterances']} utterances of the load test's 4 synthetic calls; each stage "
        "timed alone in one process, median ms.", "",
        "| stage | median ms |", "|---|---:|",
    ]  # fmt: skip
    lines += [f"| {name} | {ms:.1f} |" for name, ms in result["rows"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--model", default="base")
    p.add_argument("--batch", default="1,8", help="batch sizes to time (default 1,8)")
    p.add_argument("--kb", default=None, help="knowledge base (default: the sample KB)")
    p.add_argument(
        "--settings",
        action="store_true",
        help="also time ASR throughput under other compute types, workers and batches",
    )
    args = p.parse_args(argv)
    result = profile(args.model, [int(b) for b in args.batch.split(",")], args.kb)
    command = ("python -m voice.server.profile " + " ".join(argv or sys.argv[1:])).strip()
    section = render(result, command, args.model)
    print(section)
    update_section(args.out, f"{SECTION} ({args.model})", section)
    if args.settings:
        section = render_settings(throughput(args.model), command, args.model)
        print(section)
        update_section(args.out, f"{SETTINGS_SECTION} ({args.model})", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
