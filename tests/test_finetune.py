"""Fine-tuning on a tiny random Whisper: trains, exports, loads in faster-whisper, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import make_manifest

from finetune.config import FinetuneOptions
from voice.errors import VoiceError
from voice.models import ModelStore

CARD_KEYS = {
    "name", "base_model", "window_seconds", "created", "manifest", "manifest_sha256",
    "train_hours", "train_utterances", "options", "dev_cer", "test_cer", "quantization",
    "training_minutes",
}  # fmt: skip


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    voices = {"train": ("yue+f1", "yue+m1"), "dev": ("yue+f2",), "test": ("yue+m2",)}
    return make_manifest(tmp_path_factory.mktemp("calls"), sentences=("我想查下我張單", "唔該"),
                         voices=voices)  # fmt: skip


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    from finetune.tiny import make_tiny_whisper

    base = ModelStore().resolve("base")
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "tiny", base)


def _options(tiny_dir: Path, **kw) -> FinetuneOptions:
    defaults = dict(base_model=str(tiny_dir), mode="decoder", window=10, max_steps=8,
                    eval_every=4, batch_size=2, lr=3e-3, warmup_steps=1, quantization="int8",
                    threads=2)  # fmt: skip
    return FinetuneOptions(**{**defaults, **kw})


def test_tiny_trains_exports_and_transcribes(manifest, tiny_dir, tmp_path):
    from faster_whisper import WhisperModel

    from finetune.train import finetune

    out = tmp_path / "models" / "tiny-ft"
    result = finetune(manifest, out, _options(tiny_dir), progress=False)
    losses = result.losses
    assert len(losses) == 8
    assert sum(losses[-2:]) < sum(losses[:2])  # the loss falls
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert CARD_KEYS <= set(card)
    assert card["window_seconds"] == 10 and card["quantization"] == "int8"
    assert card["train_utterances"] == 4 and card["options"]["mode"] == "decoder"
    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).is_file()
    assert not list(out.parent.glob(".tiny-ft.tmp"))
    model = WhisperModel(str(out), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(manifest.parent / "calls" / "yue_f1_00.wav"),
                                   language="zh", beam_size=1, temperature=0.0)  # fmt: skip
    assert isinstance(" ".join(s.text for s in segments), str)
    store = ModelStore(project_dir=out.parent)
    assert store.resolve("tiny-ft") == out
    assert any(e.name == "tiny-ft" and e.card["dev_cer"] == card["dev_cer"] for e in store.list())
    with pytest.raises(VoiceError, match="already exists"):
        finetune(manifest, out, _options(tiny_dir), progress=False)


def test_resume_continues_from_checkpoint(manifest, tiny_dir, tmp_path):
    from finetune.train import finetune

    out = tmp_path / "tiny-resume"

    def interrupt(step: int, loss: float) -> None:
        if step == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(manifest, out, _options(tiny_dir), progress=False, on_step=interrupt)
    assert not out.exists()
    result = finetune(manifest, out, _options(tiny_dir), resume=True, progress=False)
    assert result.start_step == 5 and result.steps == 8
    assert len(result.losses) == 3
    fresh = finetune(manifest, tmp_path / "fresh", _options(tiny_dir), progress=False)
    assert result.losses == pytest.approx(fresh.losses[5:], rel=1e-4)  # same batches, same steps


def test_bad_manifest_names_the_line(tiny_dir, tmp_path):
    from finetune.train import finetune

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"audio_filepath": "a.wav", "text": "喂"}\n{"text": "冇檔案"}\n', "utf-8")
    with pytest.raises(VoiceError, match=r"bad.jsonl:2.*audio_filepath"):
        finetune(bad, tmp_path / "m", _options(tiny_dir), progress=False)


def test_options_reject_bad_values():
    from voice.errors import ConfigError

    with pytest.raises(ConfigError):
        FinetuneOptions(mode="everything")
    with pytest.raises(ConfigError):
        FinetuneOptions(window=45)
    assert FinetuneOptions(window="auto").window == "auto"
    with pytest.raises(ConfigError, match="mask_time"):
        FinetuneOptions(mask_time=1.5)


def test_mask_time_zeroes_spans_and_leaves_the_cache_alone():
    import numpy as np
    import torch

    from finetune.train import mask_time

    states = torch.ones(3, 100, 8)
    masked = mask_time(states, 0.2, np.random.default_rng(0))
    zeroed = (masked == 0).all(dim=2).sum(dim=1)
    assert all(10 <= int(z) <= 20 for z in zeroed)  # two 10-frame spans, maybe overlapping
    assert bool((states == 1).all())  # the cached tensor itself is untouched
    again = mask_time(states, 0.2, np.random.default_rng(0))
    assert torch.equal(masked, again)


def test_window_for_rounds_up_and_keeps_minimum():
    from finetune.data import window_for

    assert window_for(3.0, 10) == 10
    assert window_for(12.0, 10) == 15
    assert window_for(3.0, "auto") == 5
    assert window_for(40.0, 10) == 30


@pytest.mark.parametrize(
    ("mode", "window", "extra"),
    [("top-encoder", "auto", {"mask_time": 0.2, "label_smoothing": 0.1}), ("full", 5, {}),
     ("lora", 10, {})],
)  # fmt: skip
def test_other_modes_train_and_export(manifest, tiny_dir, tmp_path, mode, window, extra):
    from faster_whisper import WhisperModel

    from finetune.train import finetune

    out = tmp_path / f"tiny-{mode}"
    options = _options(
        tiny_dir, mode=mode, window=window, top_layers=1, max_steps=4, eval_every=2, **extra
    )
    result = finetune(manifest, out, options, progress=False, clean=mode == "full")
    assert len(result.losses) == 4 and result.losses[-1] < result.losses[0]
    work = out.with_name(f".{out.name}.work")  # cache + checkpoints: kept unless clean
    assert work.is_dir() == (mode != "full")
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert card["window_seconds"] == window and card["options"]["mode"] == mode
    WhisperModel(str(out), device="cpu", compute_type="int8")


def test_top_layers_must_leave_a_frozen_layer(manifest, tiny_dir, tmp_path):
    from finetune.train import finetune

    with pytest.raises(VoiceError, match="top_layers"):
        options = _options(tiny_dir, mode="top-encoder", top_layers=2)
        finetune(manifest, tmp_path / "m", options, progress=False)
