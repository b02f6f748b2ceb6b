"""A tiny randomly initialised Whisper, converted to CTranslate2, for fast tests of real code paths."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyWhisperOptions:
    """Shape of the tiny model; the vocabulary is the real multilingual Whisper one."""

    d_model: int = 64
    layers: int = 2
    heads: int = 2
    ffn_dim: int = 128
    seed: int = 0
    quantization: str = "float32"


def tiny_hf_whisper(options: TinyWhisperOptions = TinyWhisperOptions()):
    """A randomly initialised `WhisperForConditionalGeneration` with Whisper's real vocabulary size."""
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(options.seed)
    config = WhisperConfig(
        vocab_size=51865,
        num_mel_bins=80,
        d_model=options.d_model,
        encoder_layers=options.layers,
        decoder_layers=options.layers,
        encoder_attention_heads=options.heads,
        decoder_attention_heads=options.heads,
        encoder_ffn_dim=options.ffn_dim,
        decoder_ffn_dim=options.ffn_dim,
        max_source_positions=1500,
        max_target_positions=448,
        decoder_start_token_id=50258,
        pad_token_id=50257,
        bos_token_id=50257,
        eos_token_id=50257,
        scale_embedding=False,
    )
    return WhisperForConditionalGeneration(config).eval()


def make_tiny_whisper(
    out_dir: str | Path, base_dir: str | Path, options: TinyWhisperOptions = TinyWhisperOptions()
) -> Path:
    """Write a tiny random CTranslate2 Whisper to `out_dir`, taking tokenizer and decoding
    settings (suppressed tokens, language ids) from the packaged model in `base_dir`."""
    import ctranslate2
    from transformers import WhisperTokenizer

    out_dir, base_dir = Path(out_dir), Path(base_dir)
    model = tiny_hf_whisper(options)
    tokenizer = WhisperTokenizer.from_pretrained(str(base_dir))
    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        model.save_pretrained(hf_dir)
        tokenizer.save_pretrained(hf_dir)
        staged = Path(tmp) / "ct2"
        ctranslate2.converters.TransformersConverter(str(hf_dir)).convert(
            str(staged), quantization=options.quantization, force=True
        )
        config = json.loads((base_dir / "config.json").read_text())
        config["alignment_heads"] = [[options.layers - 1, 0]]
        (staged / "config.json").write_text(json.dumps(config))
        shutil.copy2(base_dir / "tokenizer.json", staged / "tokenizer.json")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(out_dir))
    return out_dir
