"""Reading the packaged CTranslate2 Whisper base into transformers: parity with faster-whisper."""

from __future__ import annotations

import numpy as np
import pytest

from voice.models import ModelStore

pytestmark = pytest.mark.slow

FP16_TOLERANCE = 1e-2  # encoder outputs: the base weights are fp16; measured max abs diff ~7e-4


@pytest.fixture(scope="module")
def base():
    from finetune.ct2_import import load_ct2_whisper

    path = ModelStore().resolve("base")
    model, processor = load_ct2_whisper(path)
    return path, model, processor


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    from voice.audio import resample
    from voice.channel import phone_line
    from voice.tts import Voice, synthesize

    speech = synthesize("我想查下我張單幾時到期", Voice("yue+f2"))
    return resample(phone_line(speech, np.random.default_rng(0)), 8000, 16000)


def test_parameters_and_tokenizer(base):
    _, model, processor = base
    assert sum(p.numel() for p in model.parameters()) == 72_593_920
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert processor.tokenizer.convert_tokens_to_ids("<|zh|>") == 50260


@pytest.mark.parametrize("window", [30, 10])
def test_encoder_and_greedy_tokens_match_ctranslate2(base, clip, window):
    import torch
    from faster_whisper import WhisperModel

    from finetune.decode import ct2_transcribe_tokens, greedy_decode, run_encoder
    from voice.features import encoder_input

    path, model, _ = base
    fw = WhisperModel(str(path), device="cpu", compute_type="float32", cpu_threads=2)
    features = encoder_input(clip, window)[None]
    with torch.no_grad():
        ours = run_encoder(model, torch.from_numpy(features))
    import ctranslate2

    theirs = np.array(fw.model.encode(ctranslate2.StorageView.from_array(features), to_cpu=True))
    assert theirs.shape == tuple(ours.shape)
    assert np.abs(theirs - ours.numpy()).max() < FP16_TOLERANCE
    assert greedy_decode(model, ours) == ct2_transcribe_tokens(fw.model, features)


def test_greedy_transcript_matches_faster_whisper(base, clip):
    import torch
    from faster_whisper import WhisperModel

    from finetune.decode import greedy_decode, run_encoder
    from voice.features import encoder_input

    path, model, processor = base
    fw = WhisperModel(str(path), device="cpu", compute_type="float32", cpu_threads=2)
    segments, _ = fw.transcribe(clip, language="zh", beam_size=1, temperature=0.0,
                                without_timestamps=True, condition_on_previous_text=False,
                                no_speech_threshold=None, log_prob_threshold=None,
                                compression_ratio_threshold=None,
                                vad_filter=False)  # fmt: skip
    expected = "".join(s.text for s in segments).strip()
    with torch.no_grad():
        states = run_encoder(model, torch.from_numpy(encoder_input(clip, 30)[None]))
    tokens = greedy_decode(model, states)[0]
    assert processor.tokenizer.decode(tokens, skip_special_tokens=True).strip() == expected
