"""Build the synthetic call corpus: scripts, espeak-ng voices, phone line, WAVs and manifests."""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from voice.channel import ChannelOptions
from voice.data.manifest import SPLITS, DataError, ManifestEntry, write_manifest
from voice.data.synth.text import ScriptOptions
from voice.data.synth.voices import Speaker, make_speakers
from voice.tts import Voice
from voice.types import SAMPLE_RATE

log = logging.getLogger(__name__)

CALLS_DIR = "calls"  # WAVs go in <out>/calls/, one per call


@dataclass(frozen=True)
class SynthOptions:
    """What `generate_corpus` makes. The same options and seed give the same corpus."""

    calls: int = 500  # number of calls (one 8 kHz mu-law WAV each)
    seed: int = 0  # everything random derives from this
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)  # processes
    speakers: int = 60  # synthetic callers, split about 80/10/10
    pause: tuple[float, float] = (0.6, 2.5)  # seconds between utterances (the agent talking)
    long_pause_rate: float = 0.2  # chance a gap is a long one (agent explains, hold)
    long_pause: tuple[float, float] = (3.0, 7.0)
    lead: tuple[float, float] = (0.3, 1.5)  # silence before the first and after the last line
    pad: float = 0.15  # seconds of line kept around each utterance's speech in the manifest
    script: ScriptOptions = ScriptOptions()
    channel: ChannelOptions = ChannelOptions()
    progress: bool = True  # tqdm progress bar on stderr

    def __post_init__(self) -> None:
        if self.calls < 1:
            raise ValueError(f"calls must be >= 1, got {self.calls}")
        if self.workers < 1:
            raise ValueError(f"workers must be >= 1, got {self.workers}")
        if min(self.pause) < 2 * self.pad:
            raise ValueError("pauses must be at least twice the pad, or utterances overlap")


@dataclass(frozen=True)
class CallPlan:
    """Everything needed to render one call, decided up front in the parent process."""

    index: int
    call_id: str
    split: str
    topic: str
    speaker: str
    voice: Voice
    lines: tuple[str, ...]


def plan_calls(options: SynthOptions) -> list[CallPlan]:
    """Decide every call's split, speaker and lines (cheap; no audio)."""
    from voice.data.synth.espeak import unpronounceable
    from voice.data.synth.hkcancor import utterances
    from voice.data.synth.text import ScriptWriter, template_chars

    bad = unpronounceable(template_chars())
    if bad:
        log.warning("espeak-ng yue cannot say %s (used in templates)", "".join(sorted(bad)))
    chat = utterances()
    bad |= unpronounceable("".join(chat))
    chat = [u for u in chat if not bad.intersection(u)]
    writer = ScriptWriter(chat, options.script)
    speakers = make_speakers(options.speakers, options.seed)
    by_split: dict[str, list[Speaker]] = {s: [x for x in speakers if x.split == s] for s in SPLITS}
    rng = random.Random(f"splits-{options.seed}")
    for group in by_split.values():
        rng.shuffle(group)
    n = options.calls
    n_held = max(1, round(n * 0.1)) if n >= 3 else 0
    splits = ["dev"] * n_held + ["test"] * n_held + ["train"] * (n - 2 * n_held)
    rng.shuffle(splits)
    seen = dict.fromkeys(SPLITS, 0)
    plans = []
    for index, split in enumerate(splits):
        speaker = by_split[split][seen[split] % len(by_split[split])]
        seen[split] += 1
        topic, lines = writer.call(random.Random(f"call-{options.seed}-{index}"), split)
        lines = [line for line in lines if not bad.intersection(line)]
        plans.append(
            CallPlan(
                index, f"c{index + 1:04d}", split, topic, speaker.id, speaker.voice, tuple(lines)
            )
        )
    return plans


def render_call(plan: CallPlan, out_dir: Path, options: SynthOptions) -> list[dict]:
    """Speak one call's lines, join them with pauses, pass the phone line, write the WAV.

    Returns the manifest records for the call (offsets in seconds, rounded to ms).
    """
    from voice.audio import PHONE_RATE, write_wav
    from voice.channel import phone_line
    from voice.tts import synthesize

    rng = np.random.default_rng([options.seed, plan.index])
    pieces: list[np.ndarray] = []
    spans: list[tuple[int, int]] = []
    pos = 0

    def gap(low: float, high: float) -> None:
        nonlocal pos
        n = int(rng.uniform(low, high) * SAMPLE_RATE)
        pieces.append(np.zeros(n, dtype=np.float32))
        pos += n

    gap(*options.lead)
    for i, line in enumerate(plan.lines):
        if i:
            long = rng.random() < options.long_pause_rate
            gap(*(options.long_pause if long else options.pause))
        speech = synthesize(line, plan.voice)
        if speech.size == 0:
            raise DataError(f"{plan.call_id}: espeak-ng produced no audio for {line!r}")
        pieces.append(speech)
        spans.append((pos, pos + speech.size))
        pos += speech.size
    gap(*options.lead)
    audio = phone_line(np.concatenate(pieces), rng, options.channel)
    wav = out_dir / CALLS_DIR / f"{plan.call_id}.wav"
    write_wav(wav, audio, PHONE_RATE, subtype="ULAW")
    total = audio.size / PHONE_RATE
    records = []
    for line, (start, end) in zip(plan.lines, spans, strict=True):
        begin = max(0.0, start / SAMPLE_RATE - options.pad)
        finish = min(total, end / SAMPLE_RATE + options.pad)
        offset = round(begin, 3)
        records.append(
            {
                "audio_filepath": f"{CALLS_DIR}/{plan.call_id}.wav",
                "offset": offset,
                "duration": round(finish - offset, 3),
                "text": line,
                "call_id": plan.call_id,
                "speaker": plan.speaker,
                "split": plan.split,
                "topic": plan.topic,
            }
        )
    return records


def _render(job: tuple[CallPlan, Path, SynthOptions]) -> list[dict]:
    return render_call(*job)


def generate_corpus(out_dir: str | Path, options: SynthOptions = SynthOptions()) -> Path:
    """Write `options.calls` synthetic calls under `out_dir`; returns the manifest path.

    Writes calls/cNNNN.wav, manifest.jsonl (every utterance), train/dev/test.jsonl and
    corpus.json (the options and figures), manifests atomically after all audio is written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    plans = plan_calls(options)
    jobs = [(plan, out_dir, options) for plan in plans]
    workers = min(options.workers, len(plans))
    log.info("synthesising %d calls with %d worker(s) into %s", len(plans), workers, out_dir)
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), unit="call", disable=not options.progress, desc="synth")
    results: list[list[dict]] = []
    if workers == 1:
        for job in jobs:
            results.append(_render(job))
            bar.update()
    else:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for records in pool.imap(_render, jobs, chunksize=2):
                results.append(records)
                bar.update()
    bar.close()
    entries = [
        _entry(out_dir, record, line)
        for line, record in enumerate((r for call in results for r in call), start=1)
    ]
    manifest = write_manifest(out_dir / "manifest.jsonl", entries)
    for split in SPLITS:
        write_manifest(out_dir / f"{split}.jsonl", [e for e in entries if e.split == split])
    stale = {p.name for p in (out_dir / CALLS_DIR).glob("c*.wav")} - {
        f"{p.call_id}.wav" for p in plans
    }
    if stale:
        log.warning("%d older call WAVs in %s are not in the new manifest", len(stale), out_dir)
    info = {
        "options": asdict(options) | {"workers": workers},
        "calls": len(plans),
        "utterances": len(entries),
        "distinct_sentences": len({e.text for e in entries}),
        "speakers": len({e.speaker for e in entries}),
        "seconds": round(time.monotonic() - started, 1),
    }
    tmp = out_dir / ".corpus.json.tmp"
    tmp.write_text(json.dumps(info, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    tmp.replace(out_dir / "corpus.json")
    log.info(
        "wrote %d calls, %d utterances (%d distinct sentences) in %.0f s: %s",
        info["calls"],
        info["utterances"],
        info["distinct_sentences"],
        info["seconds"],
        manifest,
    )
    return manifest


def _entry(out_dir: Path, record: dict, line: int) -> ManifestEntry:
    extra = {"topic": record["topic"]}
    return ManifestEntry(
        audio_path=(out_dir / record["audio_filepath"]).resolve(),
        audio_filepath=record["audio_filepath"],
        text=record["text"],
        offset=record["offset"],
        duration=record["duration"],
        call_id=record["call_id"],
        speaker=record["speaker"],
        split=record["split"],
        line=line,
        extra=extra,
    )
