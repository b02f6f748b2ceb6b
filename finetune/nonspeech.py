"""Non-speech training clips (line noise, tones, DTMF, hum, clicks, hold music) labelled <|nocaptions|>.

Fine-tuning only ever shows the model speech, so a fine-tuned model writes a word or two on
anything that gets past the VAD. These clips teach it the answer Whisper was pre-trained to
give on them: the no-speech token at the start-of-transcript position, which is the
probability the transcriber's no-speech guard reads (`AsrOptions.no_speech_threshold`).
Each clip is generated from the recipe (kind, seed) its row carries, so clips need no files and
every run sees the same ones.
"""

from __future__ import annotations

import zlib

import numpy as np

from voice.types import SAMPLE_RATE

KINDS = ("white", "pink", "brown", "tone", "dtmf", "hum", "clicks", "music", "breath", "line")
NONSPEECH_TRAIN_CLIPS = 300  # generated once per run and cached like the speech rows
NONSPEECH_TEST_CLIPS = 40  # other clips (split "test"), scored for the model card
DURATION_RANGE = (1.0, 6.0)  # seconds: the lengths of short utterances the VAD cuts
LEVEL_DB = (-60.0, -20.0)  # clip level (dBFS) before the phone line
PREFIX = "nonspeech:"  # `audio` of a generated row: nonspeech:KIND:SEED
NOMINAL_SPEECH_RMS = 0.1  # the level the phone line takes for speech: louder clips come out louder
DTMF_ROWS, DTMF_COLS = (697, 770, 852, 941), (1209, 1336, 1477)


def nonspeech_rows(count: int, seed: int, split: str = "train") -> list[dict]:
    """`count` table rows of generated non-speech (source "nonspeech", empty text), the kinds in
    turn; `nonspeech_samples` makes each one's audio from the recipe in its `audio` field."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode())])  # test clips differ from train
    rows = []
    for i in range(count):
        kind = KINDS[i % len(KINDS)]
        rows.append(
            {
                # the clip's recipe stands where a file path would (same table columns)
                "audio": f"{PREFIX}{kind}:{int(rng.integers(2**31))}",
                "offset": 0.0,
                "duration": round(float(rng.uniform(*DURATION_RANGE)), 2),
                "text": "",
                "call_id": f"nonspeech-{split}-{i}",
                "speaker": "",
                "split": split,
                "line": 0,
                "source": "nonspeech",
            }
        )
    return rows


def recipe(row: dict) -> tuple[str, int]:
    """(kind, seed) of a `nonspeech_rows` row, from its `audio` field nonspeech:KIND:SEED."""
    kind, seed = row["audio"].removeprefix(PREFIX).split(":")
    return kind, int(seed)


def nonspeech_samples(row: dict) -> np.ndarray:
    """16 kHz float32 audio of a `nonspeech_rows` row, through the simulated phone line."""
    from voice.audio import PHONE_RATE, resample
    from voice.channel import phone_line

    kind, seed = recipe(row)
    rng = np.random.default_rng(seed)
    n = int(row["duration"] * SAMPLE_RATE)
    x = _clip(kind, n, rng)
    x = x / (np.sqrt(np.mean(x**2)) + 1e-9) * 10 ** (rng.uniform(*LEVEL_DB) / 20)
    line = phone_line(x.astype(np.float32), rng, speech_rms=NOMINAL_SPEECH_RMS)
    return np.clip(resample(line, PHONE_RATE, SAMPLE_RATE), -1.0, 1.0)


def _clip(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / SAMPLE_RATE
    white = rng.standard_normal(n)
    if kind == "white":
        return white
    if kind == "pink":  # 1/f power: white noise shaped in the frequency domain
        spectrum = np.fft.rfft(white)
        spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
        return np.fft.irfft(spectrum, n=n)
    if kind == "brown":
        walk = np.cumsum(white)
        return walk - np.convolve(walk, np.ones(400) / 400, "same")
    if kind == "tone":  # a ring-back or busy tone, or a beep
        on = (t % rng.uniform(0.5, 3.0)) < rng.uniform(0.2, 1.0)
        return np.sin(2 * np.pi * rng.uniform(300, 3000) * t) * on
    if kind == "dtmf":  # key presses: two tones each, with gaps
        x = np.zeros(n)
        step = int(rng.uniform(0.15, 0.4) * SAMPLE_RATE)
        for start in range(0, n, step):
            end = min(n, start + int(step * rng.uniform(0.4, 0.7)))
            f1, f2 = rng.choice(DTMF_ROWS), rng.choice(DTMF_COLS)
            x[start:end] = np.sin(2 * np.pi * f1 * t[start:end]) + np.sin(
                2 * np.pi * f2 * t[start:end]
            )
        return x
    if kind == "hum":  # mains hum and its harmonics over a little noise
        mains = rng.choice((50.0, 60.0))
        x = sum(np.sin(2 * np.pi * mains * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 6))
        return x + 0.05 * white
    if kind == "clicks":
        return (
            np.where(rng.random(n) < rng.uniform(2e-4, 2e-3), rng.choice((-1.0, 1.0), n), 0.0)
            + 0.01 * white
        )
    if kind == "music":  # hold music: a few chords of sines with soft attacks
        x = np.zeros(n)
        chord = int(rng.uniform(0.4, 1.2) * SAMPLE_RATE)
        for start in range(0, n, chord):
            root = 220 * 2 ** (rng.integers(-5, 8) / 12)
            seg = t[start : start + chord] - t[start]
            envelope = np.minimum(1.0, seg / 0.05) * np.exp(-seg * rng.uniform(0.5, 3.0))
            for ratio in (1.0, 1.26, 1.5, 2.0):
                x[start : start + chord] += np.sin(2 * np.pi * root * ratio * seg) * envelope
        return x
    if kind == "breath":  # breathing into the handset: band-limited noise swelling and fading
        swell = np.clip(
            np.sin(2 * np.pi * t / rng.uniform(1.5, 3.5) + rng.uniform(0, 6.3)), 0, None
        )
        spectrum = np.fft.rfft(white)
        freqs = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
        spectrum[(freqs < 200) | (freqs > 2000)] = 0
        return np.fft.irfft(spectrum, n=n) * swell
    return 1e-3 * white  # "line": an open line, only the phone line's own noise on top


__all__ = [
    "KINDS",
    "NONSPEECH_TEST_CLIPS",
    "NONSPEECH_TRAIN_CLIPS",
    "nonspeech_rows",
    "nonspeech_samples",
    "recipe",
]
