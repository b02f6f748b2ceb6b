"""Hugging Face Whisper -> CTranslate2 model directory with a model card, written atomically."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

from voice.errors import VoiceError
from voice.files import write_atomic

log = logging.getLogger(__name__)

COPIED_FROM_BASE = ("config.json", "tokenizer.json", "vocabulary.txt")  # decoding settings


def staging_dir(out: Path) -> Path:
    """Where an export is built before the rename: `models/.NAME.tmp`."""
    return out.with_name(f".{out.name}.tmp")


def check_target(out: Path, force: bool) -> None:
    """Refuse to write over an existing directory unless forced (checked before training too)."""
    if out.exists() and not force:
        raise VoiceError(f"{out} already exists; pass --force to replace it")


def convert(model, processor, base_dir: Path, stage: Path, quantization: str = "int8") -> Path:
    """Write `model` as a CTranslate2 Whisper directory at `stage` (replaced if present).

    The encoder's position table is the full 30 s one (training never changes it), so
    CTranslate2 accepts any window up to 30 s. Decoding settings (suppressed tokens, language
    ids, alignment heads) and the tokenizer are copied from the base model unchanged.
    """
    import ctranslate2

    if stage.exists():
        shutil.rmtree(stage)
    stage.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=stage.parent, prefix=".hf-") as tmp:
        hf_dir = Path(tmp)
        model.save_pretrained(hf_dir)
        processor.save_pretrained(hf_dir)
        processor.feature_extractor.save_pretrained(hf_dir)  # preprocessor_config.json
        ctranslate2.converters.TransformersConverter(
            str(hf_dir), copy_files=["preprocessor_config.json"]
        ).convert(str(stage), quantization=quantization, force=True)
    for name in COPIED_FROM_BASE:
        if (base_dir / name).is_file():
            shutil.copy2(base_dir / name, stage / name)
    vocab_json = stage / "vocabulary.json"
    if (stage / "vocabulary.txt").is_file() and vocab_json.is_file():
        vocab_json.unlink()  # keep one vocabulary file, as the base model has
    return stage


def write_card(stage: Path, card: dict) -> None:
    """model_card.json, UTF-8, keys as written."""
    write_atomic(stage / "model_card.json", json.dumps(card, ensure_ascii=False, indent=2) + "\n")


def publish(stage: Path, out: Path, force: bool) -> Path:
    """Rename the finished staging directory to `out` (replacing it only when forced)."""
    check_target(out, force)
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.replace(old)
        stage.replace(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        stage.replace(out)
    log.info("model written to %s", out)
    return out


__all__ = ["check_target", "convert", "publish", "staging_dir", "write_card"]
