"""Load test: N concurrent real-time calls into `voice serve`, latency per N, into BENCHMARKS.md.

    python -m voice.server.loadtest --out BENCHMARKS.md [--calls 1,2,4,8] [--model base]

Starts the server in a subprocess on 127.0.0.1, then for each N plays N synthetic espeak-ng
calls (8 kHz mu-law over a simulated phone line) into /stream at real time, 20 ms a message,
with random start offsets. Latency is measured by the client: from sending the last chunk of a
line's audio (known from the line timings) to receiving that line's transcript. It includes the
VAD's end-of-speech wait (stop_ms), queueing and ASR.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.answer.kb import SAMPLE_KB
from voice.audio import float_to_pcm16, mulaw_encode
from voice.markdown import update_section

CHUNK_MS = 20  # what telephony bridges send
TARGET_P95_S = 1.5  # the latency a call centre tolerates for live suggestions
LEVEL_TIMEOUT_S = 120.0  # one level of the test is abandoned after this long
SCRAPE_TIMEOUT_S = 30.0  # /metrics between levels
OPEN_TIMEOUT_S = 30.0  # a call whose WebSocket is not open by then counts as failed
LINES = (
    "喂，你好，我想查下我張單。",
    "點解我今個月嘅月費貴咗咁多㗎？",
    "仲有，我個account login唔到，個密碼唔啱。",
    "好啦，唔該晒。",
)
VOICES = ("yue+f3", "yue+m2", "yue+f1", "yue+m5")
SECTION = "## Load test"


@dataclass(frozen=True)
class CallAudio:
    """One synthetic call: mu-law bytes and its lines' (start, end) seconds."""

    mulaw: bytes
    lines: tuple[tuple[float, float], ...]

    @property
    def duration(self) -> float:
        return len(self.mulaw) / 8000


def make_calls(count: int, seed: int = 11) -> list[CallAudio]:
    """`count` distinct calls (different voices and pauses)."""
    from voice.demo import render_call
    from voice.tts import Voice

    calls = []
    for i in range(count):
        rng = np.random.default_rng(seed + i)
        audio, timings = render_call(LINES, Voice(VOICES[i % len(VOICES)], speed=160), rng)
        calls.append(CallAudio(mulaw_encode(float_to_pcm16(audio)),
                               tuple((s, e) for s, e, _ in timings)))  # fmt: skip
    return calls


async def play_call(url: str, call_id: str, call: CallAudio, offset: float) -> dict:
    """Stream one call at real time; returns per-line latencies (s) and counts. A call the
    server refused or dropped counts as failed, with its lines missed."""
    import websockets

    await asyncio.sleep(offset)
    sent_at: dict[int, float] = {}  # line index -> wall time its last chunk was sent
    received: dict[int, float] = {}
    suggested: dict[int, float] = {}  # line index -> wall time its suggestion arrived
    server_ms: list[float] = []
    tally = {"warnings": 0}
    failed = ""
    try:
        await _stream(url, call_id, call, sent_at, received, suggested, server_ms, tally)
    except (OSError, TimeoutError, websockets.exceptions.WebSocketException) as exc:
        failed = f"{type(exc).__name__}: {exc}"  # counted: its lines are missed, the level goes on
    latencies = [received[j] - sent_at[j] for j in received if j in sent_at]
    to_suggestion = [suggested[j] - sent_at[j] for j in suggested if j in sent_at]
    return {"latencies": latencies, "to_suggestion": to_suggestion,
            "missed": len(call.lines) - len(received), "failed": failed,
            "server_ms": server_ms, "warnings": tally["warnings"]}  # fmt: skip


async def _stream(url, call_id, call, sent_at, received, suggested, server_ms, tally) -> None:
    from websockets.asyncio.client import connect

    step = 8 * CHUNK_MS
    async with connect(url, max_size=None, open_timeout=OPEN_TIMEOUT_S) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "mulaw",
                                  "sample_rate": 8000}))  # fmt: skip

        async def reader() -> None:
            async for message in ws:
                data = json.loads(message)
                if data["type"] == "warning":
                    tally["warnings"] += 1
                if data["type"] not in ("transcript", "suggestion"):
                    continue
                now = time.perf_counter()
                overlap = [max(0.0, min(e, data["end"]) - max(s, data["start"]))
                           for s, e in call.lines]  # fmt: skip
                line = int(np.argmax(overlap))
                if overlap[line] <= 0:
                    continue
                if data["type"] == "suggestion":
                    suggested.setdefault(line, now)
                else:
                    received[line] = now
                    server_ms.append(data["latency_ms"])

        task = asyncio.create_task(reader())
        started = time.perf_counter()
        for i, pos in enumerate(range(0, len(call.mulaw), step)):
            due = started + i * CHUNK_MS / 1000
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            await ws.send(call.mulaw[pos : pos + step])
            chunk_end = (pos + step) / 8000
            for j, (_, end) in enumerate(call.lines):
                if j not in sent_at and chunk_end >= end:
                    sent_at[j] = time.perf_counter()
        await ws.send(json.dumps({"type": "stop"}))
        await task


async def run_level(url: str, n: int, calls: list[CallAudio], rng: np.random.Generator,
                    rounds: int = 1, tag: str = "") -> dict:  # fmt: skip
    """`rounds` times in a row, N calls at once (call i plays calls[(round + i) % len]); the
    figures pool every round's lines."""
    results = []
    for r in range(rounds):
        tasks = [play_call(url, f"load{tag}-{n}-{r}-{i}", calls[(r + i) % len(calls)],
                           float(rng.uniform(0, 3))) for i in range(n)]  # fmt: skip
        try:
            results += await asyncio.wait_for(asyncio.gather(*tasks), LEVEL_TIMEOUT_S)
        except TimeoutError:  # the server could not keep up at all: every line of the round lost
            results += [{"latencies": [], "to_suggestion": [], "missed": len(c.lines),
                         "failed": "level timed out", "warnings": 0}
                        for c in (calls[(r + i) % len(calls)] for i in range(n))]  # fmt: skip
    lat = [x for res in results for x in res["latencies"]]
    sug = [x for res in results for x in res["to_suggestion"]]
    return {
        "calls": n,
        "rounds": rounds,
        "lines": sum(
            len(calls[(r + i) % len(calls)].lines) for r in range(rounds) for i in range(n)
        ),  # fmt: skip
        "transcribed": len(lat),
        "missed": sum(res["missed"] for res in results),
        "warnings": sum(res["warnings"] for res in results),
        "failed": sum(1 for res in results if res["failed"]),
        "p50": float(np.percentile(lat, 50)) if lat else float("nan"),
        "p95": float(np.percentile(lat, 95)) if lat else float("nan"),
        "max": max(lat) if lat else float("nan"),
        "suggestion_p50": float(np.percentile(sug, 50)) if sug else float("nan"),
        "suggestion_p95": float(np.percentile(sug, 95)) if sug else float("nan"),
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, db: Path, extra: list[str]) -> subprocess.Popen:
    """`voice serve` on loopback, its log in a file beside `db`: never a pipe nobody reads, whose
    full buffer would block the server's next log line and so its event loop."""
    import httpx

    cmd = [sys.executable, "-m", "voice", "serve", "--insecure-no-auth", "--port", str(port),
           "--model", model, "--db", str(db), "--max-calls", "64", *extra]  # fmt: skip
    log_path = db.with_name("server.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log)
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server failed: {log_path.read_text(errors='replace')[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("server did not start within 120 s")


def scrape(port: int) -> dict[str, float]:
    """A few server-side figures from /metrics (NaN if the server does not answer in time: an
    overloaded server's event loop may be that far behind, which the table then shows)."""
    import httpx

    names = ("voice_segments_shed_total", "voice_asr_batch_size_sum", "voice_asr_batch_size_count")
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=SCRAPE_TIMEOUT_S).text
    except httpx.HTTPError as exc:
        print(f"  /metrics did not answer ({type(exc).__name__}): figures unknown", flush=True)
        return dict.fromkeys(names, float("nan"))
    out = {}
    for name in names:
        m = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
        out[name] = float(m.group(1)) if m else 0.0
    return out


def render(rows: list[dict], command: str, meta: dict) -> str:
    ok = [r["calls"] for r in rows
          if r["p95"] < TARGET_P95_S and not r["missed"] and not r["failed"]]  # fmt: skip
    lines = [
        f"{SECTION} ({meta['title']})",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {meta['cpus']} CPU cores, no GPU, load average {meta['load']} at start "
        "(a shared machine: figures are noisy). Model "
        f"`{meta['model']}`, greedy, int8; VAD webrtc, stop_ms 400, utterances decoded "
        "from a 210 ms pause, unless the command says otherwise.",
        "Each call: 4 espeak-ng Cantonese lines over a simulated phone line, ~17 s, streamed at "
        "real time in 20 ms mu-law messages to /stream, start offsets random in 0-3 s (N=1: "
        "the 4 voices' calls one after another). Latency: last chunk of a line sent -> its "
        "transcript (suggestion) received, measured by the client; the server answers from the "
        "sample KB.",
        "",
        "| calls | lines | transcribed | p50 (s) | p95 (s) | max (s) | suggestion p50 (s) | "
        "suggestion p95 (s) | mean batch | shed | warnings | calls failed |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['calls']} | {r['lines']} | {r['transcribed']} | {r['p50']:.2f} | "
            f"{r['p95']:.2f} | {r['max']:.2f} | {r['suggestion_p50']:.2f} | "
            f"{r['suggestion_p95']:.2f} | {r['mean_batch']:.2f} | {r['shed']:.0f} | "
            f"{r['warnings']} | {r['failed']} |"
        )
    lines += ["", f"Largest N with p95 under {TARGET_P95_S} s and no line lost: "
              f"**{max(ok) if ok else 'none'}** (of those tried).", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("BENCHMARKS.md"))
    p.add_argument("--calls", default="1,2,4,8", help="comma-separated N (default 1,2,4,8)")
    p.add_argument("--model", default="base")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument(
        "--label",
        default="",
        help="names this run's section in --out beside the model (e.g. 'no turn-taking')",
    )
    p.add_argument("--single-rounds", type=int, default=4, metavar="R",
                   help="N=1 is played R times in a row with different voices, so its p95 has "
                   "4R lines (default 4)")  # fmt: skip
    p.add_argument("--kb", default=str(SAMPLE_KB),
                   help="knowledge base the server suggests replies from (default: the sample KB); "
                   "'' for transcripts only")  # fmt: skip
    p.add_argument(
        "--server-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra `voice serve` argument, repeatable (e.g. --server-arg=--vad-stop-ms=300)",
    )
    args = p.parse_args(argv)
    levels = [int(x) for x in args.calls.split(",") if x.strip()]
    print(f"rendering {len(VOICES)} synthetic calls with espeak-ng…", flush=True)
    calls = make_calls(len(VOICES))  # one call per voice; level N plays them in turn
    port = _free_port()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        extra = (["--kb", args.kb] if args.kb else []) + args.server_arg
        proc = start_server(args.model, port, Path(tmp) / "load.sqlite3", extra)
        try:
            rng = np.random.default_rng(args.seed)
            url = f"ws://127.0.0.1:{port}/stream"
            asyncio.run(run_level(url, 1, calls[:1], rng, tag="w"))  # warm-up, not reported
            for k, n in enumerate(levels):
                before = scrape(port)
                rounds = args.single_rounds if n == 1 else 1
                row = asyncio.run(run_level(url, n, calls, rng, rounds, tag=str(k)))
                after = scrape(port)
                batches = after["voice_asr_batch_size_count"] - before["voice_asr_batch_size_count"]
                segs = after["voice_asr_batch_size_sum"] - before["voice_asr_batch_size_sum"]
                row["mean_batch"] = segs / batches if batches else float("nan")
                row["shed"] = (
                    after["voice_segments_shed_total"] - before["voice_segments_shed_total"]
                )
                rows.append(row)
                print(f"N={n}: p50 {row['p50']:.2f} s, p95 {row['p95']:.2f} s, max "
                      f"{row['max']:.2f} s, {row['transcribed']}/{row['lines']} lines, mean batch "
                      f"{row['mean_batch']:.2f}, shed {row['shed']:.0f}, failed calls {row['failed']}",
                      flush=True)  # fmt: skip
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    title = f"{args.model}, {args.label}" if args.label else args.model
    meta = {"cpus": os.cpu_count(), "load": load, "model": args.model, "title": title}
    command = "python -m voice.server.loadtest " + " ".join(argv or sys.argv[1:])
    section = render(rows, command.strip(), meta)
    print("\n" + section)
    update_section(args.out, f"{SECTION} ({title})", section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
