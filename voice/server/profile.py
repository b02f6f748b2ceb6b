"""Where one utterance's time goes on this machine: VAD, features, encoder, decoder, answer engine
(search, voice pitch), JSON and the store write; a table for BENCHMARKS.md.

    python -m voice.server.profile --out BENCHMARKS.md [--model base] [--batch 1,8]

Stages are timed in this process on the load test's synthetic calls, each stage alone, medians
over every utterance: the per-utterance budget a live server spends, without its event loop.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from voice.markdown import update_section

SECTION = "## Where the time goes per utterance"


def _ms(fn, *args) -> tuple[float, object]:
    started = time.perf_counter()
    out = fn(*args)
    return 1000 * (time.perf_counter() - started), out


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
    rows: dict[str, list[float]] = {}
    segments = []
    audio_s = 0.0
    for i, call in enumerate(calls):
        session = CallSession(f"p{i}", None, stream=StreamFormat("mulaw", 8000))
        step = 160  # 20 ms of 8 kHz mu-law, as bridges send it
        vad_ms = 0.0
        for pos in range(0, len(call.mulaw), step):
            took, found = _ms(session.feed, call.mulaw[pos : pos + step])
            vad_ms += took
            segments += found
        segments += session.feed_end()
        audio_s += call.duration
        rows.setdefault("VAD + G.711 decoding, per second of call audio", []).append(
            vad_ms / call.duration
        )
    transcriber.transcribe_batch(segments[:1])  # warm-up: first-call costs stay out
    model_ = transcriber._model
    session = engine.session("p")
    tracker = AgitationTracker()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "p.sqlite3")
        store.open_call("p", "stream", None, None, {})
        for n, seg in enumerate(segments, 1):
            window = transcriber.window_for(seg.duration)
            took, feats = _ms(lambda s=seg, w=window: np.stack([encoder_input(s.samples, w, transcriber.n_mels)]))
            rows.setdefault("log-mel features", []).append(took)
            view = ctranslate2.StorageView.from_array(np.ascontiguousarray(feats, dtype=np.float32))
            took, encoded = _ms(lambda: model_.encode(view, to_cpu=False))
            rows.setdefault(f"encoder ({window} s window)", []).append(took)
            took, _ = _ms(lambda: model_.generate(encoded, [transcriber._prompt], beam_size=1,
                                                  max_length=transcriber._token_cap(seg.duration) * 2,
                                                  suppress_blank=True, return_no_speech_prob=True,
                                                  suppress_tokens=transcriber._suppress))  # fmt: skip
            rows.setdefault("decoder (greedy, no-speech probability)", []).append(took)
            took, result = _ms(transcriber.transcribe_batch, [seg])
            rows.setdefault("whole transcriber call (all of the above + text guards)", []).append(took)
            text = result[0].text or "喂"
            took, _ = _ms(engine.search, text)
            rows.setdefault("answer engine: search (BM25 + Jyutping + embedding)", []).append(took)
            took, _ = _ms(tracker.push, seg.samples)
            rows.setdefault("answer engine: voice pitch and energy (pYIN)", []).append(took)
            event = TranscriptEvent("p", seg.start, seg.end, text, 0.0)
            took, answer_events = _ms(session.events, event, seg.samples)
            rows.setdefault("answer engine: whole turn", []).append(took)
            payload = [event, *answer_events]
            took, _ = _ms(lambda: [json.dumps(e.to_dict(), ensure_ascii=False) for e in payload])
            rows.setdefault("JSON of the turn's events", []).append(took)
            took, _ = _ms(lambda: [store.add_event("p", 10 * n + k, e.to_dict())
                                   for k, e in enumerate(payload)])  # fmt: skip
            rows.setdefault("store writes of the turn's events (SQLite, WAL)", []).append(took)
        store.close()
    for b in batches:
        if b == 1:
            continue
        group = (segments * (1 + b // max(1, len(segments))))[:b]
        took, _ = _ms(transcriber.transcribe_batch, group)
        rows[f"transcriber call for a batch of {b} (per utterance)"] = [took / b]
    return {"rows": {k: float(np.median(v)) for k, v in rows.items()},
            "utterances": len(segments), "audio_s": audio_s}  # fmt: skip


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
    args = p.parse_args(argv)
    result = profile(args.model, [int(b) for b in args.batch.split(",")], args.kb)
    command = "python -m voice.server.profile " + " ".join(argv or sys.argv[1:])
    section = render(result, command.strip(), args.model)
    print(section)
    update_section(args.out, f"{SECTION} ({args.model})", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
