"""Fine-tuning on a tiny random Whisper: trains, exports, loads in faster-whisper, resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from finetune_fixtures import make_manifest

from finetune.config import FinetuneOptions
from voice.errors import VoiceError
from voice.models import ModelStore

pytestmark = pytest.mark.slow  # each fine-tune of the tiny model takes 10-60 s

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
                    threads=2, real_manifest="", check_manifests="")  # fmt: skip
    return FinetuneOptions(**{**defaults, **kw})


def test_tiny_trains_exports_and_transcribes(manifest, tiny_dir, tmp_path, capsys):
    from faster_whisper import WhisperModel

    from finetune.train import finetune
    from voice.cli import main

    out = tmp_path / "models" / "tiny-ft"
    result = finetune(manifest, out, _options(tiny_dir), progress=False)
    losses = result.losses
    assert len(losses) == 8
    assert sum(losses[-2:]) < sum(losses[:2])  # the loss falls
    card = json.loads((out / "model_card.json").read_text(encoding="utf-8"))
    assert CARD_KEYS <= set(card)
    assert card["window_seconds"] == 10 and card["quantization"] == "int8"
    assert card["base_mix"] == {"share": 0.0, "encoder_share": 0.0}  # auto, no real dev speech
    assert card["train_utterances"] == 4 and card["options"]["mode"] == "decoder"
    for name in ("model.bin", "config.json", "tokenizer.json", "preprocessor_config.json"):
        assert (out / name).is_file()
    assert not list(out.parent.glob(".tiny-ft.tmp"))
    model = WhisperModel(str(out), device="cpu", compute_type="int8")
    segments, _ = model.transcribe(str(manifest.parent / "calls" / "yue_f1_00.wav"),
                                   language="zh", beam_size=1, temperature=0.0)  # fmt: skip
    assert all(s.start < s.end for s in segments)  # the export decodes in stock faster-whisper
    # the card's test CER is what `voice eval` reports on the same split: one decoder path
    capsys.readouterr()
    assert main(["eval", str(manifest), "--split", "test", "--model", str(out), "--json",
                 "--no-progress"]) == 0  # fmt: skip
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["models"][0]
    assert evaluated["cer"] == pytest.approx(card["test_cer"], abs=1e-4)
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
    for bad in ("1.0", "-0.1", "half"):
        with pytest.raises(ConfigError, match="base_mix"):
            FinetuneOptions(base_mix=bad)
    with pytest.raises(ConfigError, match="LoRA"):
        FinetuneOptions(mode="lora", base_mix="0.5")
    for bad in ("1", "-0.1", "auto"):
        with pytest.raises(ConfigError, match="base_mix_encoder"):
            FinetuneOptions(base_mix_encoder=bad)
    with pytest.raises(ConfigError, match="LoRA"):
        FinetuneOptions(mode="lora", base_mix_encoder="0.5")


def test_base_mix_moves_trained_weights_back_towards_the_start():
    import torch

    from finetune.train import _mix

    model = torch.nn.Module()  # named like a Hugging Face Whisper: model.encoder / model.decoder
    model.model = torch.nn.Module()
    model.model.encoder = torch.nn.Linear(2, 1)
    model.model.decoder = torch.nn.Linear(2, 1)
    start = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    trained = {n: torch.full_like(p, 2.0) for n, p in model.named_parameters()}
    _mix(model, start, trained, 0.25, 0.0)  # the decoder a quarter back, the encoder as trained
    assert torch.allclose(model.model.decoder.weight, torch.full((1, 2), 1.5))
    assert torch.allclose(model.model.encoder.weight, torch.full((1, 2), 2.0))
    _mix(model, start, trained, 0.0, 0.5)  # from the same trained weights, not the mixed ones
    assert torch.allclose(model.model.decoder.bias, torch.full((1,), 2.0))
    assert torch.allclose(model.model.encoder.bias, torch.full((1,), 1.0))


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
    [("top-encoder", "auto", {"mask_time": 0.2, "label_smoothing": 0.1, "kl_weight": 0.5}),
     ("full", 5, {"kl_weight": 0.5}), ("decoder", "auto", {"kl_weight": 0.5}),
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


@pytest.fixture(scope="module")
def real_manifest(tmp_path_factory) -> Path:
    """Stands in for real speech: other voices, split by speaker, with an attribution sidecar."""
    folder = tmp_path_factory.mktemp("real")
    voices = {"train": ("yue+f3",), "dev": ("yue+m4",), "test": ("yue+f4",)}
    path = make_manifest(folder, sentences=("我想查下我張單", "唔該"), voices=voices, seed=1)
    (folder / "ATTRIBUTION.md").write_text("Readers: f3, m4, f4 (CC BY 4.0)\n", "utf-8")
    sidecar = {"sources": ["test voices"], "licenses": ["CC-BY-4.0"], "files": ["ATTRIBUTION.md"]}
    (folder / "manifest.jsonl.attribution.json").write_text(json.dumps(sidecar), "utf-8")
    return path


def test_real_speech_mix_selects_on_real_dev_and_scores_against_base(
    manifest, real_manifest, tiny_dir, tmp_path
):
    from finetune.train import finetune

    out = tmp_path / "tiny-mixed"
    options = _options(tiny_dir, real_manifest=str(real_manifest), real_fraction=0.5,
                       real_copies=1, mode="top-encoder", top_layers=1, window="auto",
                       kl_weight=0.5, l2_base=0.01, initial_prompt="喂你好")  # fmt: skip
    result = finetune(manifest, out, options, progress=False, allow_regression=True)
    card = result.card
    assert card["selected_on"] == "real dev CER"
    assert card["real_fraction"] == 0.5 and card["real_train_utterances"] == 2
    assert all("real_dev_cer" in h for h in card["dev_cer_history"])
    sets = {row["set"]: row for row in card["evaluations"]}
    assert set(sets) == {"real test"}  # dev sets are scored during training
    # the selected step, then the share of base weights that decodes real dev best (WiSE-FT)
    mix = card["base_mix"]
    assert set(mix["real_dev_cer"]) == {"0.0", "0.25", "0.5", "0.75"}
    assert mix["real_dev_cer"]["0.0"] == min(h["real_dev_cer"] for h in card["dev_cer_history"])
    assert card["real_dev_cer"] == mix["real_dev_cer"][str(mix["share"])]
    assert card["real_dev_cer"] <= min(mix["real_dev_cer"].values()) + 0.005
    assert mix["encoder_share"] == mix["share"]  # by default the encoder moves as the decoder
    real_test = sets["real test"]
    assert real_test["utterances"] == 2 and card["real_test_cer"] == real_test["cer"]
    assert card["base_real_test_cer"] == real_test["base_cer"]
    for key in ("vs_base", "vs_base_prompted"):
        low, high = real_test[key]["ci95"]
        assert low <= real_test[key]["cer_delta"] <= high
    assert card["initial_prompt"] == "喂你好"
    assert (out / "data-attribution" / "ATTRIBUTION.md").is_file()
    assert card["data_attribution"]["files"] == ["data-attribution/ATTRIBUTION.md"]


def test_epoch_rows_mix_real_at_the_fraction():
    import numpy as np

    from finetune.data import epoch_rows

    sources = np.array(["synthetic"] * 90 + ["real"] * 10)
    rows = epoch_rows(sources, 0.25, seed=0, epoch=0)
    real = int((sources[rows] == "real").sum())
    assert real == 30 and len(rows) == 120  # 30 of 120 = 25%: the real set repeated 3 times
    assert sorted(set(rows[sources[rows] == "real"].tolist())) == list(range(90, 100))
    assert (epoch_rows(sources, 0.0, 0, 0) == np.arange(90)).all()
    sources = np.array(["synthetic"] * 80 + ["real"] * 10 + ["nonspeech"] * 5)
    rows = epoch_rows(sources, 0.5, seed=0, epoch=0, nonspeech_fraction=0.1)
    drawn = {
        name: int((sources[rows] == name).sum()) for name in ("synthetic", "real", "nonspeech")
    }
    assert drawn == {"synthetic": 80, "real": 100, "nonspeech": 20}  # 40% / 50% / 10% of 200


def test_start_of_transcript_is_trained_as_language_or_no_speech():
    from finetune.data import collate_labels
    from finetune.decode import EOT, NO_SPEECH, PROMPT

    speech, noise = [11, 12, EOT], [EOT]
    inputs, targets = collate_labels([speech, noise], PROMPT, no_speech=[False, True])
    assert targets[0].tolist() == [PROMPT[1], -100, -100, 11, 12, EOT]
    assert targets[1].tolist() == [NO_SPEECH, -100, -100, -100, -100, -100]
    assert inputs[1, :4].tolist() == list(PROMPT)
    prompted = [50361, 7, 8, *PROMPT]  # previous-text context before the start of transcript
    _, targets = collate_labels([noise], prompted, no_speech=[True])
    assert targets[0, 3].item() == NO_SPEECH and (targets[0, :3] == -100).all()
    _, targets = collate_labels([speech], PROMPT)  # without flags: the prompt is not trained
    assert targets[0, :3].tolist() == [-100, -100, -100]


def test_nonspeech_clips_teach_the_model_to_say_no_speech(manifest, tiny_dir, tmp_path):
    from finetune.nonspeech import nonspeech_rows, nonspeech_samples
    from finetune.train import finetune
    from voice.asr import AsrOptions, Transcriber
    from voice.types import Segment

    clip = nonspeech_rows(1, seed=5, split="test")[0]
    segment = Segment("noise", 0.0, clip["duration"], nonspeech_samples(clip))
    guards_off = AsrOptions(no_speech_threshold=1.0, no_speech_certain=1.0, cpu_threads=2)

    def no_speech_prob(model) -> float:
        return Transcriber.load(model, guards_off).transcribe(segment).no_speech_prob

    out = tmp_path / "tiny-quiet"
    options = _options(tiny_dir, nonspeech_fraction=0.4, max_steps=30, eval_every=30)
    card = finetune(manifest, out, options, progress=False).card
    before, after = no_speech_prob(tiny_dir), no_speech_prob(out)
    # 30 steps of a random tiny model: measured 2e-5 -> 4e-3; a full-size run goes past the
    # transcriber's no-speech bar (BENCHMARKS.md)
    assert after > 30 * before, (before, after)
    assert card["nonspeech_fraction"] == 0.4 and card["nonspeech_train_clips"] == 300
    quiet = card["nonspeech_test"]
    assert quiet["clips"] == 40 and 0 <= quiet["with_text"] <= 40
    assert len(quiet["examples"]) == min(5, quiet["with_text"])


REAL_CLIPS = {  # short HBL pages zero-shot base already hears fairly well (CER ~15%)
    "hbl_00001_01.ogg": "出街玩", "hbl_00008_01.ogg": "星期日嘅沙灘", "hbl_00019_01.ogg": "九龍",
    "hbl_00103p_01.ogg": "我想要嗰個",
}  # fmt: skip


@pytest.fixture(scope="module")
def real_test_manifest(tmp_path_factory) -> Path:
    """espeak train/dev, and a test split of real read speech (bundled HBL pages): a model
    wrecked by a huge learning rate is sure to hear these worse than zero-shot base does."""
    import shutil

    folder = tmp_path_factory.mktemp("real-test")
    voices = {"train": ("yue+f3",), "dev": ("yue+m4",)}
    path = make_manifest(folder, sentences=("我想查下我張單", "唔該"), voices=voices, seed=2)
    lines = []
    for name, text in REAL_CLIPS.items():
        shutil.copy(Path(__file__).parents[1] / "recordings" / "hbl-yue" / "audio" / name, folder)
        lines.append(json.dumps({"audio_filepath": name, "text": text, "speaker": "hbl",
                                 "split": "test"}, ensure_ascii=False) + "\n")  # fmt: skip
    path.write_text(path.read_text("utf-8") + "".join(lines), encoding="utf-8")
    return path


def test_export_refuses_a_model_worse_than_base_on_real_test(real_test_manifest, tmp_path):
    """Do no harm: a model wrecked by training is scored, refused and not published."""
    from finetune.train import RegressionError, finetune

    base = ModelStore().resolve("base")
    out = tmp_path / "wrecked"
    options = FinetuneOptions(
        base_model=str(base), mode="decoder", window=5, max_steps=2, eval_every=2,
        batch_size=2, lr=0.05, warmup_steps=1, threads=2, check_manifests="",
        real_manifest=str(real_test_manifest), eval_utterances=0,
    )  # fmt: skip
    with pytest.raises(RegressionError, match="worse than zero-shot base") as caught:
        finetune(real_test_manifest, out, options, progress=False)
    assert "--allow-regression" in str(caught.value)
    assert not out.exists()
    staged = out.with_name(f".{out.name}.tmp")
    card = json.loads((staged / "model_card.json").read_text(encoding="utf-8"))
    assert card["real_test_cer"] > card["base_real_test_cer"]
    published = finetune(real_test_manifest, out, options, progress=False,
                         allow_regression=True, resume=True)  # fmt: skip
    assert (out / "model.bin").is_file() and published.card["real_test_cer"] > 0


def test_training_prompt_matches_the_transcribers_prompt(tiny_dir):
    """A model trained with the card's prompt is decoded in production with the same tokens."""
    from finetune.ct2_import import load_processor
    from finetune.decode import PROMPT, decoder_prompt
    from voice.asr import CANTONESE_PROMPT, AsrOptions, Transcriber

    tokenizer = load_processor(tiny_dir).tokenizer
    transcriber = Transcriber.load(tiny_dir, AsrOptions(initial_prompt=CANTONESE_PROMPT))
    assert decoder_prompt(tokenizer, CANTONESE_PROMPT) == transcriber._prompt
    assert decoder_prompt(tokenizer, "") == list(PROMPT) == Transcriber.load(tiny_dir)._prompt


@pytest.mark.parametrize(
    ("real", "synthetic", "better"),
    [(0.200, 0.30, True),  # clearly lower real dev CER wins, whatever synthetic does
     (0.215, 0.08, True),  # a tie on real dev (within 0.5 pt): the lower synthetic CER wins
     (0.213, 0.20, False),  # a tie on real dev with higher synthetic CER does not
     (0.230, 0.01, False)],  # clearly worse on real speech: never, however good on synthetic
)  # fmt: skip
def test_selection_is_on_real_dev_with_synthetic_breaking_ties(real, synthetic, better):
    from finetune.train import RunState, Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.select_on = "real"
    state = RunState(best_cer=0.214, best_secondary=0.182, best_step=300)
    assert trainer._better({"real": real, "synthetic": synthetic}, state) is better


def test_reference_transcripts_are_cached_by_model_options_and_audio(manifest, tiny_dir, tmp_path):
    from eval.runner import EvalOptions, eval_utterances
    from finetune.evaluate import CachedTranscriber, score_model, split_entries
    from voice.asr import AsrOptions, Transcriber

    entries = split_entries(manifest, "test")
    cache = tmp_path / "transcripts"
    first = score_model(tiny_dir, entries, "base", threads=2, cache_dir=cache)
    (path,) = cache.iterdir()
    assert path.stat().st_mode & 0o777 == 0o600  # real callers' words: owner only
    again = CachedTranscriber(Transcriber.load(tiny_dir, AsrOptions(cpu_threads=2)), cache)
    assert again.path == path
    second = eval_utterances("base", again, entries, EvalOptions(progress=False))
    assert again.hits == len(entries) and not again.new  # nothing decoded the second time
    assert [s.hypothesis for s in second.scores] == [s.hypothesis for s in first.scores]
    assert second.corpus.cer.rate == first.corpus.cer.rate
    # another prompt decodes differently: a new key, never the plain model's transcripts
    score_model(tiny_dir, entries[:1], "base+prompt", threads=2, prompt="喂", cache_dir=cache)
    assert len(list(cache.iterdir())) == 2
    path.write_text(path.read_text(encoding="utf-8") + '{"torn', encoding="utf-8")
    assert len(CachedTranscriber(again.transcriber, cache).known) == len(again.known)
