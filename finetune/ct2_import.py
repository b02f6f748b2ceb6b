"""Read a CTranslate2 Whisper `model.bin` back into a Hugging Face Whisper model and processor.

The file layout is the one `ModelSpec._serialize` writes (ctranslate2/specs/model_spec.py); the
name mapping inverts the Whisper loader in ctranslate2/converters/transformers.py: fused
self-attention QKV and cross-attention KV projections are split again (Whisper's key projections
have no bias, so their part of the fused bias is dropped) and aliases (the tied output projection)
are resolved.
"""

from __future__ import annotations

import json
import logging
import re
import struct
from pathlib import Path

import numpy as np

from voice.errors import ModelError

log = logging.getLogger(__name__)

SUPPORTED_BINARY_VERSIONS = (5, 6)  # model.bin versions whose layout this reader knows
SOT, TRANSCRIBE, TRANSLATE, NO_TIMESTAMPS, EOT = 50258, 50359, 50358, 50363, 50257
_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BF16 = 5  # bfloat16 has no numpy dtype: widened by hand


def read_model_bin(path: str | Path) -> tuple[str, dict[str, np.ndarray], dict[str, str]]:
    """(spec name, variables, aliases) of a CTranslate2 `model.bin`; int8 weights dequantized."""
    data = Path(path).read_bytes()
    pos = 0

    def take(fmt: str):
        nonlocal pos
        values = struct.unpack_from("<" + fmt, data, pos)
        pos += struct.calcsize("<" + fmt)
        return values[0] if len(values) == 1 else values

    def string() -> str:
        nonlocal pos
        n = take("H")
        text = data[pos : pos + n - 1].decode("utf-8")
        pos += n
        return text

    version = take("I")
    if version not in SUPPORTED_BINARY_VERSIONS:
        raise ModelError(f"{path}: unsupported CTranslate2 model.bin version {version}")
    spec = string()
    take("I")  # revision
    variables: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        rank = take("B")
        shape = [take("I") for _ in range(rank)]
        dtype = take("B")
        nbytes = take("I")
        raw = data[pos : pos + nbytes]
        pos += nbytes
        if dtype == _BF16:
            bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[dtype])
        else:
            raise ModelError(f"{path}: variable {name} has unknown dtype id {dtype}")
        variables[name] = array.reshape(shape)
    aliases = {}
    for _ in range(take("I")):
        alias = string()
        aliases[alias] = string()
    for name in [n for n in variables if n.endswith("/weight_scale")]:
        weight = name[: -len("_scale")]
        scale = variables.pop(name).astype(np.float32)
        q = variables[weight].astype(np.float32)
        variables[weight] = q / scale.reshape(-1, *([1] * (q.ndim - 1)))
    return spec, variables, aliases


def _scalar(value: np.ndarray) -> int:
    return int(np.asarray(value).reshape(-1)[0])


def hf_state_dict(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> dict:
    """Map CTranslate2 Whisper variable names to `WhisperForConditionalGeneration` tensors."""
    import torch

    def t(name: str) -> torch.Tensor:
        name = aliases.get(name, name)
        return torch.from_numpy(np.array(variables[name], dtype=np.float32))

    out: dict[str, torch.Tensor] = {}
    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        out[f"{hf}.embed_positions.weight"] = t(f"{side}/position_encodings/encodings")
        out[f"{hf}.layer_norm.weight"] = t(f"{side}/layer_norm/gamma")
        out[f"{hf}.layer_norm.bias"] = t(f"{side}/layer_norm/beta")
    for conv in ("conv1", "conv2"):
        for p in ("weight", "bias"):
            out[f"model.encoder.{conv}.{p}"] = t(f"encoder/{conv}/{p}")
    out["model.decoder.embed_tokens.weight"] = t("decoder/embeddings/weight")
    out["proj_out.weight"] = t("decoder/projection/weight")

    layer_names = {re.match(r"(\w+/layer_\d+)/", n) for n in variables}
    for match in filter(None, layer_names):
        prefix = match.group(1)
        side, index = prefix.split("/layer_")
        hf = f"model.{side}.layers.{index}"
        attn = "self_attention" if side == "encoder" else "self_attention"
        _split_qkv(out, hf + ".self_attn", t(f"{prefix}/{attn}/linear_0/weight"),
                   t(f"{prefix}/{attn}/linear_0/bias"))  # fmt: skip
        _linear(out, hf + ".self_attn.out_proj", t, f"{prefix}/{attn}/linear_1")
        _norm(out, hf + ".self_attn_layer_norm", t, f"{prefix}/{attn}/layer_norm")
        _linear(out, hf + ".fc1", t, f"{prefix}/ffn/linear_0")
        _linear(out, hf + ".fc2", t, f"{prefix}/ffn/linear_1")
        _norm(out, hf + ".final_layer_norm", t, f"{prefix}/ffn/layer_norm")
        if side == "decoder":
            _linear(out, hf + ".encoder_attn.q_proj", t, f"{prefix}/attention/linear_0")
            kv_w, kv_b = (
                t(f"{prefix}/attention/linear_1/weight"),
                t(f"{prefix}/attention/linear_1/bias"),
            )
            d = kv_w.shape[0] // 2
            out[hf + ".encoder_attn.k_proj.weight"] = kv_w[:d].clone()
            out[hf + ".encoder_attn.v_proj.weight"] = kv_w[d:].clone()
            out[hf + ".encoder_attn.v_proj.bias"] = kv_b[d:].clone()
            _linear(out, hf + ".encoder_attn.out_proj", t, f"{prefix}/attention/linear_2")
            _norm(out, hf + ".encoder_attn_layer_norm", t, f"{prefix}/attention/layer_norm")
    return out


def _split_qkv(out: dict, hf: str, weight, bias) -> None:
    d = weight.shape[0] // 3
    out[hf + ".q_proj.weight"], out[hf + ".q_proj.bias"] = weight[:d].clone(), bias[:d].clone()
    out[hf + ".k_proj.weight"] = weight[d : 2 * d].clone()
    out[hf + ".v_proj.weight"], out[hf + ".v_proj.bias"] = weight[2 * d :].clone(), bias[2 * d :]


def _linear(out: dict, hf: str, t, ct2: str) -> None:
    out[hf + ".weight"] = t(ct2 + "/weight")
    out[hf + ".bias"] = t(ct2 + "/bias")


def _norm(out: dict, hf: str, t, ct2: str) -> None:
    out[hf + ".weight"] = t(ct2 + "/gamma")
    out[hf + ".bias"] = t(ct2 + "/beta")


def whisper_config(variables: dict[str, np.ndarray]):
    """A `WhisperConfig` with the shapes found in the CTranslate2 variables."""
    from transformers import WhisperConfig

    def count(side: str) -> int:
        return len({m.group(1) for n in variables if (m := re.match(rf"{side}/layer_(\d+)/", n))})

    vocab, d_model = variables["decoder/embeddings/weight"].shape
    conv1 = variables["encoder/conv1/weight"]
    heads = {s: _scalar(variables[f"{s}/num_heads"]) if f"{s}/num_heads" in variables else None
             for s in ("encoder", "decoder")}  # fmt: skip
    default_heads = max(1, d_model // 64)
    return WhisperConfig(
        vocab_size=int(vocab),
        num_mel_bins=int(conv1.shape[1]),
        d_model=int(d_model),
        encoder_layers=count("encoder"),
        decoder_layers=count("decoder"),
        encoder_attention_heads=heads["encoder"] or default_heads,
        decoder_attention_heads=heads["decoder"] or default_heads,
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
        decoder_start_token_id=SOT,
        pad_token_id=EOT,
        bos_token_id=EOT,
        eos_token_id=EOT,
        scale_embedding=False,
        activation_function="gelu",
        tie_word_embeddings=True,
    )


def generation_config(ct2_config: dict, tokenizer):
    """Whisper decoding settings (language ids, suppressed tokens) from the CTranslate2 config."""
    from transformers import GenerationConfig

    lang_ids = ct2_config.get("lang_ids", [])
    return GenerationConfig(
        decoder_start_token_id=SOT,
        eos_token_id=EOT,
        pad_token_id=EOT,
        bos_token_id=EOT,
        max_length=448,
        no_timestamps_token_id=NO_TIMESTAMPS,
        is_multilingual=len(lang_ids) > 0,
        lang_to_id={tokenizer.convert_ids_to_tokens(i): i for i in lang_ids},
        task_to_id={"transcribe": TRANSCRIBE, "translate": TRANSLATE},
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=ct2_config.get("alignment_heads"),
    )


def load_processor(model_dir: str | Path, n_mels: int = 80):
    """A `WhisperProcessor` from a CTranslate2 model folder's `tokenizer.json`."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizer

    tokenizer = WhisperTokenizer.from_pretrained(str(model_dir))
    return WhisperProcessor(WhisperFeatureExtractor(feature_size=n_mels), tokenizer)


def load_ct2_whisper(model_dir: str | Path):
    """(WhisperForConditionalGeneration in float32, WhisperProcessor) from a CTranslate2 folder."""
    import torch
    from transformers import WhisperForConditionalGeneration

    model_dir = Path(model_dir)
    spec, variables, aliases = read_model_bin(model_dir / "model.bin")
    if "whisper" not in spec.lower():
        raise ModelError(f"{model_dir}: model.bin holds a {spec}, not a Whisper model")
    config = whisper_config(variables)
    state = hf_state_dict(variables, aliases)
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != "proj_out.weight"]
    if missing or unexpected:
        raise ModelError(
            f"{model_dir}: weights do not match Whisper ({missing[:3]} {unexpected[:3]})"
        )
    model.tie_weights()
    processor = load_processor(model_dir, config.num_mel_bins)
    ct2_config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    model.generation_config = generation_config(ct2_config, processor.tokenizer)
    log.info("read %s: %d parameters", model_dir, sum(p.numel() for p in model.parameters()))
    return model.eval(), processor


__all__ = [
    "hf_state_dict",
    "load_ct2_whisper",
    "load_processor",
    "read_model_bin",
    "whisper_config",
]
