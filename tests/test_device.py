"""`--device auto|cpu|cuda`: auto takes the CPU when there is no GPU, cuda without one fails with
one clear message before any model, data or port is touched (eval, batch, serve, finetune), and
the compute type follows the device. The libraries' GPU counts are set here, so the tests mean
the same on a machine with a GPU; no test runs anything on a GPU."""

import json

import pytest

from voice.cli import main
from voice.device import ct2_compute_type, ct2_device, torch_device, torch_precision
from voice.errors import ConfigError

NO_CUDA = "--device cuda: CTranslate2 sees no CUDA device"


@pytest.fixture
def no_gpu(monkeypatch):
    """Neither CTranslate2 nor torch sees a GPU (as on this project's CI machine)."""
    import ctranslate2
    import torch

    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture
def one_gpu(monkeypatch):
    """CTranslate2 reports one GPU with its usual CUDA compute types (nothing runs on it)."""
    import ctranslate2

    cuda = {"float32", "float16", "bfloat16", "int8", "int8_float16", "int8_bfloat16",
            "int8_float32"}  # fmt: skip
    cpu = {"float32", "int8", "int8_float32"}
    monkeypatch.setattr(ctranslate2, "get_cuda_device_count", lambda: 1)
    monkeypatch.setattr(
        ctranslate2, "get_supported_compute_types", lambda d: cuda if d == "cuda" else cpu
    )


# --- the resolver -------------------------------------------------------------------------------


def test_auto_is_the_cpu_without_a_gpu_and_cuda_says_what_to_do(no_gpu):
    assert ct2_device("auto") == ct2_device("cpu") == "cpu"
    with pytest.raises(ConfigError, match=NO_CUDA) as error:
        ct2_device("cuda")
    assert "CUDA 12 runtime" in str(error.value) and "use --device cpu or auto" in str(error.value)
    assert torch_device("auto") == "cpu" and torch_precision("cpu") == "float32"
    with pytest.raises(ConfigError, match="--device cuda: PyTorch sees no CUDA device"):
        torch_device("cuda")
    with pytest.raises(ConfigError, match="expected one of auto, cpu, cuda"):
        ct2_device("gpu")


def test_auto_takes_a_gpu_when_ctranslate2_sees_one(one_gpu):
    assert ct2_device("auto") == ct2_device("cuda") == "cuda"
    assert ct2_device("cpu") == "cpu"


@pytest.mark.parametrize(
    ("device", "asked", "used"),
    [
        ("cpu", None, "int8"),  # today's CPU default, unchanged
        ("cpu", "float32", "float32"),
        ("cpu", "int8_float32", "int8_float32"),
        ("cuda", None, "float16"),
        ("cuda", "int8", "int8_float16"),  # int8 weights, float16 activations on a GPU
        ("cuda", "float32", "float32"),
        ("cuda", "bfloat16", "bfloat16"),
        ("cpu", "auto", "auto"),  # CTranslate2's own choice, valid anywhere
    ],
)
def test_compute_type_follows_the_device(one_gpu, device, asked, used):
    assert ct2_compute_type(device, asked) == used


def test_a_compute_type_the_device_cannot_run_is_refused(one_gpu):
    with pytest.raises(ConfigError, match="--compute-type float16: .* on the CPU .*float32, int8"):
        ct2_compute_type("cpu", "float16")


# --- every command that loads a model -----------------------------------------------------------


def test_cpu_auto_loads_on_the_cpu_and_says_so(no_gpu, tiny_model_dir):
    from voice.asr import AsrOptions, Transcriber

    transcriber = Transcriber.load(tiny_model_dir, AsrOptions())
    assert (transcriber.options.device, transcriber.options.compute_type) == ("cpu", "int8")


def test_eval_with_cuda_and_no_gpu_exits_2_before_loading_a_model(no_gpu, tmp_path, capsys):
    manifest = tmp_path / "m.jsonl"
    (tmp_path / "a.wav").write_bytes(b"")  # never read: the device is checked first
    manifest.write_text('{"audio_filepath": "a.wav", "text": "唔該"}\n', "utf-8")
    argv = ["eval", str(manifest), "--model", "nosuchmodel", "--device", "cuda", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert NO_CUDA in err and "nosuchmodel" not in err


def test_batch_with_cuda_and_no_gpu_exits_2_and_writes_nothing(no_gpu, tmp_path, capsys):
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    out = tmp_path / "out.jsonl"
    argv = ["batch", "transcribe", str(tmp_path / "a.wav"), "--out", str(out),
            "--model", "nosuchmodel", "--device", "cuda", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert NO_CUDA in err and "nosuchmodel" not in err
    assert not out.exists()


def test_batch_records_the_device_it_ran_on(no_gpu, tiny_model_dir, demo_call, tmp_path):
    out = tmp_path / "out.jsonl"
    argv = ["batch", "transcribe", str(demo_call.path), "--out", str(out), "--model",
            str(tiny_model_dir), "--compute-type", "float32", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    done = [r for r in map(json.loads, out.read_text().splitlines()) if r["type"] == "file_done"]
    assert [(d["device"], d["compute_type"]) for d in done] == [("cpu", "float32")]


def test_serve_with_cuda_and_no_gpu_exits_2_before_binding_a_port(
    no_gpu, monkeypatch, tmp_path, capsys
):
    import uvicorn

    def bind(*args, **kwargs):
        raise AssertionError("the server must not start")

    monkeypatch.setattr(uvicorn.Server, "run", bind)
    monkeypatch.setattr("voice.server.logs.configure", lambda *a, **k: None)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    argv = ["serve", "--insecure-no-auth", "--port", "0", "--device", "cuda",
            "--model", "nosuchmodel"]  # fmt: skip
    assert main(argv) == 2
    assert NO_CUDA in capsys.readouterr().err


def test_finetune_with_cuda_and_no_gpu_exits_2_before_reading_data(no_gpu, tmp_path, capsys):
    out = tmp_path / "model"
    argv = ["finetune", "--manifest", str(tmp_path / "nosuch.jsonl"), "--out", str(out),
            "--device", "cuda", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--device cuda: PyTorch sees no CUDA device" in err and "use --device cpu" in err
    assert "nosuch.jsonl" not in err  # the manifest was never opened
    assert not out.exists() and not (tmp_path / ".model.work").exists()


def test_finetune_options_reject_an_unknown_device():
    from finetune.config import FinetuneOptions

    assert FinetuneOptions().device == "auto"
    with pytest.raises(ConfigError, match="--device 'gpu'"):
        FinetuneOptions(device="gpu")
