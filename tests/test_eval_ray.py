"""`voice eval --ray`: the same scores as a local run, on a local Ray with 2 CPUs and the tiny
random model, over two manifests with --json, in utterance and call mode."""

import json

import pytest
from finetune_fixtures import make_manifest

from voice.cli import main

TIMING = {"rtf", "latency_p50_ms", "latency_p95_ms"}  # wall-clock measurements


@pytest.fixture(scope="module")
def manifests(tmp_path_factory):
    root = tmp_path_factory.mktemp("manifests")
    a = make_manifest(
        root / "a", sentences=("我想查下我張單", "唔該"), voices={"test": ("yue+m2",)}
    )
    b = make_manifest(root / "b", sentences=("幾時可以送貨",), voices={"test": ("yue+f2",)})
    return str(a), str(b)


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(address="local", num_cpus=2, include_dashboard=False)  # never a `ray start`ed one
    yield
    ray.shutdown()


def scores(capsys, *argv) -> list[dict]:
    assert main(["eval", *argv, "--json", "--no-progress"]) == 0
    entries = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"]
    return [{k: v for k, v in e.items() if k not in TIMING} for e in entries]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own context fields
@pytest.mark.parametrize("mode", ["utterance", "call"])
def test_ray_scores_equal_a_local_run(manifests, tiny_model_dir, local_ray, capsys, mode):
    argv = [*manifests, "--model", str(tiny_model_dir), "--compute-type", "float32", "--mode", mode]
    local = scores(capsys, *argv)
    on_ray = scores(capsys, *argv, "--ray", "auto", "--threads", "1")
    assert [(e["manifest"], e["model"]) for e in on_ray] == [
        (manifests[0], str(tiny_model_dir)),
        (manifests[1], str(tiny_model_dir)),
    ]
    assert on_ray == local
    assert all(e["device"] == "cpu" and e["compute_type"] == "float32" for e in on_ray)
    assert [e["utterances"] for e in on_ray] == [2, 1]
    # the tiny model writes text (random, but text): equal figures are not two empty transcripts
    assert any(e["substitutions"] + e["insertions"] for e in on_ray)


@pytest.mark.slow
def test_ray_with_cuda_and_no_gpus_in_the_cluster_exits_2(manifests, tiny_model_dir, local_ray,
                                                         capsys):  # fmt: skip
    argv = ["eval", manifests[0], "--model", str(tiny_model_dir), "--ray", "auto",
            "--device", "cuda", "--no-progress"]  # fmt: skip
    assert main(argv) == 2
    assert "--device cuda: the Ray cluster has no GPUs; use --device cpu or auto" in (
        capsys.readouterr().err
    )
