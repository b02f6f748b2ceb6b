"""`make bench`: VAD speed, ASR real-time factor and end-of-utterance latency, 30 s vs short windows.

Latency is measured in simulated real time: the session's clock is the stream position of the
audio pushed so far plus the compute time spent since that push, so a transcript's latency is
the VAD's end-of-speech wait plus decoding, as on an idle machine receiving a live call.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.markdown import update_section

SAMPLE_LINES = (
    "喂，你好，我想查下我張單。", "點解我今個月嘅月費貴咗咁多㗎？", "我個account login唔到，個密碼唔啱。",
    "我上個禮拜訂咗部電話，到而家都未收到。", "可唔可以幫我改送貨地址？", "屋企個WiFi成日斷線，好麻煩。",
    "我想退款，件貨爛咗。", "我下個月去日本，想開通漫遊。", "有冇平啲嘅plan可以轉？", "我想投訴你哋嘅服務。",
    "頭先有人打嚟話我中咗獎，係咪呃人㗎？", "我想約時間去門市整電話。", "你哋門市今日幾點閂門？", "好啦，唔該晒。",
)  # fmt: skip


@dataclass(frozen=True)
class CallRun:
    """One streamed call: its audio length and per-utterance timings."""

    audio_s: float
    wall_s: float
    latencies_ms: list[float]
    asr_ms: list[float]

    @property
    def rtf(self) -> float:
        return sum(self.asr_ms) / 1000 / self.audio_s


def make_call(path: Path, minutes: float, seed: int) -> Path:
    from voice.audio import PHONE_RATE, write_wav
    from voice.demo import render_call
    from voice.tts import VOICE_VARIANTS, Voice

    rng = np.random.default_rng(seed)
    lines: list[str] = []
    while len(lines) * 3.8 < minutes * 60:  # measured: ~3.8 s of call per line with its pause
        lines += list(rng.permutation(SAMPLE_LINES))
    voice = Voice(VOICE_VARIANTS[seed % len(VOICE_VARIANTS)], speed=165)
    audio, _ = render_call(tuple(lines), voice, rng)
    write_wav(path, audio, PHONE_RATE, subtype="ULAW")
    return path


def stream_call(path: Path, transcriber, vad_options) -> CallRun:
    """Stream a call in 20 ms chunks through a CallSession with a simulated real-time clock."""
    from voice.audio import float_to_pcm16, read_audio
    from voice.pipeline import CallSession, stream_format_for

    fmt = stream_format_for(path)
    pcm = float_to_pcm16(read_audio(path, target_rate=fmt.sample_rate)).astype("<i2").tobytes()
    step = 2 * fmt.sample_rate // 50
    state = {"stream_s": 0.0, "pushed_at": time.perf_counter()}

    def clock() -> float:
        return state["stream_s"] + (time.perf_counter() - state["pushed_at"])

    session = CallSession(path.stem, transcriber, vad_options, fmt, clock=clock)
    events = []
    started = time.perf_counter()
    for offset in range(0, len(pcm), step):
        state["stream_s"] = (offset + step) / 2 / fmt.sample_rate
        state["pushed_at"] = time.perf_counter()
        events += session.push(pcm[offset : offset + step])
    events += session.flush()
    wall = time.perf_counter() - started
    transcripts = [e for e in events if e.type == "transcript"]
    return CallRun(
        audio_s=len(pcm) / 2 / fmt.sample_rate,
        wall_s=wall,
        latencies_ms=[e.latency_ms for e in transcripts],
        asr_ms=[e.asr_ms for e in transcripts],
    )


def vad_speed(path: Path, backend: str) -> float:
    """VAD alone, x real time."""
    from voice.audio import read_audio
    from voice.vad import Segmenter, VadOptions

    audio = read_audio(path)
    seg = Segmenter("bench", VadOptions(backend=backend))
    started = time.perf_counter()
    for i in range(0, audio.size, 320):
        seg.push(audio[i : i + 320])
    seg.flush()
    return audio.size / 16000 / (time.perf_counter() - started)


def _p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run(model: str = "base", minutes: float = 10.0, out: Path | None = None) -> str:
    from voice.asr import AsrOptions, Transcriber
    from voice.demo import make_demo_call
    from voice.vad import VadOptions

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sample = make_demo_call(Path(tmp) / "sample_call.wav").path
        long_call = make_call(Path(tmp) / f"call_{minutes:g}min.wav", minutes, seed=11)
        calls = {"sample call": sample, f"{minutes:g}-min call": long_call}
        vad_rows = [
            (name, backend, vad_speed(path, backend))
            for name, path in calls.items()
            for backend in ("webrtc", "silero")
        ]
        vad = VadOptions()
        for window in (30, 10):
            transcriber = Transcriber.load(model, AsrOptions(window_seconds=window))
            for name, path in calls.items():
                print(f"  {name}, {window} s window…", file=sys.stderr, flush=True)
                r = stream_call(path, transcriber, vad)
                rows.append((name, window, r))
    lines = [
        "## Streaming pipeline (issue 2)",
        "",
        f"Command: `make bench` (`python -m eval.bench --model {model} --minutes {minutes:g}`). "
        f"Machine: {_machine()}. Model: {model}, int8, greedy, webrtc VAD (stop 400 ms).",
        "Latency = end of the utterance's audio -> transcript event, in simulated real time "
        "(VAD end-of-speech wait + decoding), median and p95 over the call's utterances.",
        "",
        "| VAD | call | speed (x real time) |",
        "|---|---|---|",
        *[f"| {backend} | {name} | {speed:,.0f}x |" for name, backend, speed in vad_rows],
        "",
        "| call | encoder window | utterances | ASR RTF | ASR ms/utt (median) | latency p50 ms | latency p95 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, window, r in rows:
        lines.append(
            f"| {name} ({r.audio_s:.0f} s) | {window} s | {len(r.asr_ms)} | {r.rtf:.3f} | "
            f"{statistics.median(r.asr_ms):.0f} | {_p(r.latencies_ms, 50):.0f} | {_p(r.latencies_ms, 95):.0f} |"
        )
    by = {(n, w): r for n, w, r in rows}
    for name in calls:
        ratio = statistics.median(by[(name, 30)].asr_ms) / statistics.median(by[(name, 10)].asr_ms)
        lines.append(
            f"\n{name}: 10 s window decodes {ratio:.1f}x faster than 30 s (median ms per utterance)."
        )
    lines.append(
        "\nQuality at short windows is not assumed: stock Whisper base was trained on 30 s windows; "
        "see the fine-tuning section for CER at each window."
    )
    section = "\n".join(lines) + "\n"
    if out:
        update_section(out, "## Streaming pipeline (issue 2)", section)
    return section


def _machine() -> str:
    import os
    import platform

    return f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, Python {platform.python_version()}"


ANALYTICS_HEADING = "## Console analytics queries (issue 14)"


def analytics_section(rows: int) -> str:
    """BENCHMARKS.md section: the supervisor console's queries over `rows` generated utterances
    (target: each under 200 ms), at 20 and at 5 utterances per call (KPIs scale with calls)."""
    from voice.server.analytics_bench import bench_analytics

    body = (
        f"{ANALYTICS_HEADING}\n\nCommand: `make bench`. {rows:,} generated utterances over 30 days "
        "in the store's rollup tables (`voice.server.analytics_bench`), median of 5 runs each; "
        "target: every query under 200 ms.\n\n"
        "| utterances per call | calls | heatmap by hour, 7 days | heatmap by day, 30 days | "
        "KPIs, 30 days | drill-down list, 7 days |\n|---|---|---|---|---|---|\n"
    )
    for per_call in (20, 5):
        r = bench_analytics(rows, turns_per_call=per_call)
        body += (
            f"| {per_call} | {int(r['calls']):,} | {r['heatmap_hour_7d_ms']:.0f} ms | "
            f"{r['heatmap_day_30d_ms']:.0f} ms | {r['kpis_30d_ms']:.0f} ms | "
            f"{r['unresolved_7d_ms']:.0f} ms |\n"
        )
    return body


OUTBOX_HEADING = "## Store writes with the integrations outbox (issue 15)"


ANSWER_HEADING = "## Answer engine latency on 5,000 entries (make bench)"


def outbox_section() -> str:
    """BENCHMARKS.md section: what writing the outbox in each event's transaction costs."""
    from voice.integrations.bench import bench_writes

    rows = [("no integrations", bench_writes(with_outbox=False)),
            ("2 webhooks (all events) + Zendesk + a routing rule", bench_writes(with_outbox=True))]  # fmt: skip
    body = (
        f"{OUTBOX_HEADING}\n\nCommand: `make bench` (`voice.integrations.bench`). 200 calls of 10 "
        "turns written through `Store.add_event` on a file database (transcript + suggestion per "
        "turn, a high-priority alert every third turn, the end): microseconds per event on the "
        "store thread, off the event loop. The p95 is WAL checkpoints, which the outbox's extra "
        "rows make more frequent.\n\n"
        "| integrations | events | deliveries queued | median | p95 | transcript | suggestion | "
        "alert | end |\n|---|---|---|---|---|---|---|---|---|\n"
    )
    for name, r in rows:
        t = r["by_type"]
        body += (f"| {name} | {r['events']} | {r['deliveries']} | {r['median_us']:.0f} | "
                 f"{r['p95_us']:.0f} | {t['transcript']:.0f} | {t['suggestion']:.0f} | "
                 f"{t['alert']:.0f} | {t['end']:.0f} |\n")  # fmt: skip
    return body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m eval.bench", description=__doc__)
    parser.add_argument("--model", default="base")
    parser.add_argument(
        "--minutes", type=float, default=10.0, help="length of the long synthetic call"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="Markdown file to update (BENCHMARKS.md)"
    )
    parser.add_argument(
        "--skip-answer", action="store_true", help="skip the answer-engine latency bench"
    )
    parser.add_argument(
        "--analytics-rows", type=int, default=1_000_000,
        help="stored utterances for the console's analytics queries (0: skip that bench)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print(run(args.model, args.minutes, args.out))
    if args.analytics_rows:
        body = analytics_section(args.analytics_rows)
        print(body)
        if args.out:
            update_section(args.out, ANALYTICS_HEADING, body)
    body = outbox_section()
    print(body)
    if args.out:
        update_section(args.out, OUTBOX_HEADING, body)
    if not args.skip_answer:
        try:
            from voice.answer.bench import run_bench
        except ImportError:
            return 0
        rows = [run_bench(semantic=semantic) for semantic in (False, True)]
        body = (
            f"{ANSWER_HEADING}\n\nCommand: `make bench` (`python -m voice.answer.bench`). "
            f"{rows[0]['entries']}-entry synthetic knowledge base (the sample KB's entries "
            f"repeated over topics), {rows[0]['queries']} queries with homophone slips. Load "
            "times are each measured in a new process, as at a server's start: first start = "
            "empty cache, restart = cache filled, edited = restart after one entry gained a "
            "question. The hand-written history is in 'Answer engine (issue 6)'.\n\n"
            "| retrieval | answer median | answer p95 | first start | restart | edited | "
            "top-1 (topic) |\n|---|---|---|---|---|---|---|\n"
        )
        for r in rows:
            name = "words + sounds + meaning" if r["semantic"] else "words + sounds (lexical)"
            load = f" + {r['encoder_load_s']:.1f} s encoder" if r["semantic"] else ""
            body += (
                f"| {name} | {r['median_ms']:.2f} ms | {r['p95_ms']:.2f} ms | "
                f"{r['build_s']:.1f} s{load} | {r['build_cached_s']:.2f} s | "
                f"{r['build_edited_s']:.1f} s | {r['top1_topic_accuracy']:.1%} |\n"
            )
        print(body)
        if args.out:
            update_section(args.out, ANSWER_HEADING, body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
