"""The built-in demo: a short Cantonese call spoken by espeak-ng over a simulated phone line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.audio import PHONE_RATE, write_wav
from voice.channel import phone_line
from voice.tts import Voice, synthesize
from voice.types import SAMPLE_RATE

DEMO_LINES = (
    "喂，你好，我想查下我張單。",
    "點解我今個月嘅月費貴咗咁多㗎？",
    "仲有，我個account login唔到，個密碼唔啱。",
    "好啦，唔該晒。",
)


@dataclass(frozen=True)
class ScriptedCall:
    """A generated call and where each line really is in it."""

    path: Path
    lines: tuple[tuple[float, float, str], ...]  # (start s, end s, text)


def render_call(
    lines: tuple[str, ...],
    voice: Voice,
    rng: np.random.Generator,
    pauses: tuple[float, float] = (0.7, 1.6),
    lead: float = 0.8,
) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    """Speak `lines` with pauses between them and pass the call through a phone line.

    Returns 8 kHz audio (after mu-law) and each line's (start, end, text) in it.
    """
    parts = [np.zeros(int(lead * SAMPLE_RATE), np.float32)]
    timings, t = [], lead
    for text in lines:
        speech = synthesize(text, voice)
        parts.append(speech)
        timings.append((round(t, 3), round(t + speech.size / SAMPLE_RATE, 3), text))
        t += speech.size / SAMPLE_RATE
        gap = int(rng.uniform(*pauses) * SAMPLE_RATE)
        parts.append(np.zeros(gap, np.float32))
        t += gap / SAMPLE_RATE
    audio = np.concatenate(parts)
    return phone_line(audio, rng), timings


def make_demo_call(out_path: str | Path, seed: int = 7) -> ScriptedCall:
    """Write the demo call as an 8 kHz G.711 mu-law WAV, as a telephony bridge would record it."""
    rng = np.random.default_rng(seed)
    audio, timings = render_call(DEMO_LINES, Voice("yue+f3", speed=160, pitch=55), rng)
    write_wav(out_path, audio, PHONE_RATE, subtype="ULAW")
    return ScriptedCall(Path(out_path), tuple(timings))
