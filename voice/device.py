"""Where models run: `--device auto|cpu|cuda` resolved once, for CTranslate2 (decoding) and torch
(fine-tuning), with the compute type the device can run.

`auto` takes the GPU when the library sees one, else the CPU; `cuda` without one is a ConfigError
that says so before any model or data is loaded. CPU defaults are unchanged (int8 weights).
"""

from __future__ import annotations

from voice.errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")  # what --device accepts
CPU_COMPUTE_TYPE = "int8"  # CTranslate2 default on the CPU: int8 weights, fastest on 2 cores
CUDA_COMPUTE_TYPE = "float16"  # CTranslate2 default on a GPU
# what a CPU compute type asked for by name becomes on a GPU (int8 weights, float16 activations)
CUDA_EQUIVALENT = {"int8": "int8_float16", "int8_float32": "int8_float16"}
ANY_DEVICE = ("auto", "default")  # CTranslate2 types valid everywhere (its choice / the file's)


def _no_cuda(library: str, why: str) -> ConfigError:
    return ConfigError(
        f"--device cuda: {library} sees no CUDA device ({why}); use --device cpu or auto"
    )


def _check(device: str) -> None:
    if device not in DEVICES:
        raise ConfigError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")


def ct2_device(device: str) -> str:
    """The CTranslate2 device ("cpu" or "cuda") for a --device value."""
    import ctranslate2

    _check(device)
    if device == "cpu":
        return "cpu"
    gpus = ctranslate2.get_cuda_device_count()
    if gpus > 0:
        return "cuda"
    if device == "cuda":
        raise _no_cuda("CTranslate2", "0 GPUs; is the CUDA 12 runtime installed?")
    return "cpu"


def ct2_compute_type(device: str, requested: str | None) -> str:
    """The compute type to load with on `device` ("cpu"/"cuda"): `requested` (None: the device's
    default), a CPU int8 type carried over to its GPU form, refused if the device cannot run it."""
    import ctranslate2

    if requested is None:
        return CUDA_COMPUTE_TYPE if device == "cuda" else CPU_COMPUTE_TYPE
    if device == "cuda":
        requested = CUDA_EQUIVALENT.get(requested, requested)
    if requested in ANY_DEVICE:
        return requested
    supported = ctranslate2.get_supported_compute_types(device)
    if requested not in supported:
        raise ConfigError(
            f"--compute-type {requested}: CTranslate2 cannot run it on the {device.upper()} here; "
            f"use one of {', '.join(sorted(supported))}"
        )
    return requested


def torch_device(device: str) -> str:
    """The torch device ("cpu" or "cuda") for a --device value."""
    import torch

    _check(device)
    if device == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    if device == "cuda":
        why = "this torch is built without CUDA" if torch.version.cuda is None else "0 GPUs"
        raise _no_cuda("PyTorch", f"{why}; torch {torch.__version__}")
    return "cpu"


def torch_precision(device: str) -> str:
    """Mixed precision for training on `device`: "bfloat16" where the GPU has it, "float16" (with
    a gradient scaler) on other GPUs, "float32" on the CPU (unchanged)."""
    import torch

    if device != "cuda":
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


__all__ = [
    "CPU_COMPUTE_TYPE",
    "CUDA_COMPUTE_TYPE",
    "DEVICES",
    "ct2_compute_type",
    "ct2_device",
    "torch_device",
    "torch_precision",
]
