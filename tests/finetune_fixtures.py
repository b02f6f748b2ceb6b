"""Tiny espeak-ng manifests for the fine-tuning tests (phone channel, 8 kHz mu-law WAVs)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SENTENCES = (
    "我想查下我張單",
    "唔該幫我轉接客服",
    "我個 account login 唔到",
    "幾時可以送貨",
    "我想取消訂單",
    "網絡好慢呀",
)
SPLIT_VOICES = {"train": ("yue+f1", "yue+m1", "yue+m3"), "dev": ("yue+f2",), "test": ("yue+m2",)}


def make_manifest(folder: Path, sentences=SENTENCES, voices=SPLIT_VOICES, seed: int = 0) -> Path:
    """Write one WAV per (sentence, voice) through a phone line and a manifest over them."""
    from voice.audio import write_wav
    from voice.channel import phone_line
    from voice.tts import Voice, synthesize

    folder = Path(folder)
    rng = np.random.default_rng(seed)
    lines = []
    for split, names in voices.items():
        for name in names:
            for i, text in enumerate(sentences):
                call = f"{name.replace('+', '_')}_{i:02d}"
                audio = phone_line(synthesize(text, Voice(name)), rng)
                write_wav(folder / "calls" / f"{call}.wav", audio, 8000, subtype="ULAW")
                record = {"audio_filepath": f"calls/{call}.wav", "offset": 0.0,
                          "duration": round(len(audio) / 8000, 3), "text": text,
                          "call_id": call, "speaker": name, "split": split}  # fmt: skip
                lines.append(json.dumps(record, ensure_ascii=False))
    path = folder / "manifest.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
