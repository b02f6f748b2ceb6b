"""voice.asr: real CTranslate2 decoding, HK Traditional output, and guards against hallucination."""

import numpy as np
import opencc
import pytest

from voice.asr import (
    AsrOptions,
    Transcriber,
    collapse_repetitions,
    cut_phrase_loop,
    strip_hallucinations,
)
from voice.data.chinese import to_hk
from voice.errors import ConfigError, ModelError
from voice.types import Segment

SR = 16000
_S2HK = opencc.OpenCC("s2hk")


def _segment(samples, start=0.0):
    return Segment("c", start, start + samples.size / SR, samples.astype(np.float32))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("我想查一下账单", "我想查一下賬單"),
        ("为什么登录不了", "為什麼登錄不了"),
        ("我個account login唔到", "我個account login唔到"),  # already HK text and English kept
    ],
)
def test_output_is_converted_to_hk_traditional(raw, expected):
    assert to_hk(raw) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("係係係係係係係係", "係係"),
        ("我想我想我想我想我想", "我想我想"),
        ("好好睇", "好好睇"),  # a real doubled character stays
    ],
)
def test_repetition_loops_are_collapsed(text, expected):
    assert collapse_repetitions(text) == expected


LOOP = "因為我們是在做的, 但是我們是在做的, 因為我們是在做的"  # zero-shot base on real Cantonese


@pytest.mark.parametrize(
    "text, expected",
    [
        (LOOP, "因為我們是在做的"),
        ("因為我們是在做的，但是我們是在做的，因為我們是在做的", "因為我們是在做的"),
        ("我哋而家去睇下我哋而家去睇下啦我哋而家去睇下", "我哋而家去睇下"),  # no punctuation
        (
            "因為我們是在做的, 所以我們是在做的, 但是我們是在做的, 因為我們是在做的",
            "因為我們是在做的",
        ),
        # run to the token cap: one turn is kept, not the longest repeat (a third of the text)
        ("因為我們是在做的，" * 20, "因為我們是在做的"),
        ("好呀，我哋而家去睇下，我哋而家去睇下，我哋而家去睇下，我哋而", "好呀，我哋而家去睇下"),
        ("I want to go, I want to go, I want to go", "I want to go"),
    ],
)
def test_phrase_loops_are_cut_to_what_came_before(text, expected):
    assert cut_phrase_loop(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "唔該唔該",
        "係係係",
        "我想問下我張單幾時到，同埋我想問下點樣改地址",  # a phrase said twice is speech
        "我個account login唔到，account已經鎖咗",
        "我想check下registration同confirmation同notification",  # English words are whole units
        "",
    ],
)
def test_speech_is_not_taken_for_a_phrase_loop(text):
    assert cut_phrase_loop(text) == text


@pytest.mark.parametrize(
    "text, expected",
    [
        ("字幕by索兰娅", ""),
        ("我想查張單。請不吝點贊訂閱轉發打賞", "我想查張單"),
        ("多謝你", "多謝你"),
    ],
)
def test_invented_captions_are_removed(text, expected):
    assert strip_hallucinations(text) == expected


@pytest.mark.slow
def test_tiny_model_decodes_and_batches_like_single_calls(tiny_model_dir):
    t = Transcriber.load(
        tiny_model_dir,
        AsrOptions(
            compute_type="float32", min_rms_dbfs=-90, no_speech_threshold=1.0, no_speech_certain=1.0
        ),
    )
    rng = np.random.default_rng(0)
    segs = [_segment(rng.standard_normal(SR * n).astype(np.float32) * 0.1) for n in (1, 2, 3)]
    single = [t.transcribe(s) for s in segs]
    batch = t.transcribe_batch(segs)
    assert [r.tokens for r in batch] == [r.tokens for r in single]
    assert all(r.asr_ms > 0 for r in batch)
    # token cap follows the segment length (1 s -> at most min cap, 16 tokens)
    assert len(single[0].tokens) <= 16


def test_a_phrase_loop_keeps_its_first_turn_as_the_transcript(tiny_model_dir):
    t = Transcriber.load(tiny_model_dir, AsrOptions(compute_type="float32"))
    result = t._finish((t.tokenizer.encode(LOOP), -0.2, 0.0), 30, 1.0)
    assert (result.text, result.raw_text, result.dropped) == ("因為我們是在做的", LOOP, None)


def test_a_character_cut_by_the_token_cap_is_dropped_not_shown_as_a_box(tiny_model_dir):
    t = Transcriber.load(tiny_model_dir, AsrOptions(compute_type="float32"))
    tokens = t.tokenizer.encode("我個account login五六五九蚊")
    cut = next(n for n in range(len(tokens), 0, -1) if "\ufffd" in t.tokenizer.decode(tokens[:n]))
    result = t._finish((tokens[:cut], -0.2, 0.0), 30, 1.0)
    assert "\ufffd" in result.raw_text and "\ufffd" not in result.text
    assert result.text.startswith("我個account login五六")


def test_window_follows_model_card_and_options(tiny_model_dir):
    stock = Transcriber.load(tiny_model_dir, AsrOptions(compute_type="float32"))
    assert stock.window_for(3.0) == 30
    short = Transcriber.load(tiny_model_dir, AsrOptions(compute_type="float32", window_seconds=10))
    assert short.window_for(3.0) == 10
    assert short.window_for(12.0) == 15  # longer than the window: next 5 s step


def test_silent_segment_is_not_decoded(tiny_model_dir):
    t = Transcriber.load(tiny_model_dir, AsrOptions(compute_type="float32"))
    r = t.transcribe(_segment(np.zeros(SR * 2)))
    assert r.text == "" and r.dropped == "silence"


def test_yue_language_is_rejected_with_a_hint():
    with pytest.raises(ConfigError, match="zh"):
        AsrOptions(language="yue").validate()


def test_missing_model_says_how_to_fix(tmp_path):
    from voice.models import ModelStore

    store = ModelStore(cache_dir=tmp_path / "cache", project_dir=tmp_path / "models")
    with pytest.raises(ModelError, match="voice models pull"):
        Transcriber.load("base", store=store)


def test_corrupt_model_says_how_to_fix(tmp_path, tiny_model_dir):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model_dir, broken)
    data = (broken / "model.bin").read_bytes()
    (broken / "model.bin").write_bytes(data[: len(data) // 3])
    with pytest.raises(ModelError, match="cannot load model"):
        Transcriber.load(broken)


@pytest.mark.slow
def test_ten_seconds_of_line_noise_gives_no_text(base_transcriber):
    from voice.audio import resample
    from voice.channel import phone_line

    rng = np.random.default_rng(3)
    for level in (0.003, 0.02, 0.1):
        noise = rng.standard_normal(SR * 10).astype(np.float32) * level
        line = resample(phone_line(noise, rng, speech_rms=0.05), 8000, SR)
        result = base_transcriber.transcribe(_segment(line))
        assert result.text == "", (level, result)


@pytest.mark.slow
def test_a_decoder_prompt_does_not_turn_noise_into_its_own_words(base_model_dir):
    """With the spoken-Cantonese prompt, base is sure of the prompt's words on non-speech
    (我哋喺度等緊我哋...) while P(no speech) stays near 1: such segments are dropped."""
    from voice.asr import Transcriber

    prompted = Transcriber.load(f"{base_model_dir}+prompt")
    rng = np.random.default_rng(0)
    t = np.arange(2 * SR) / SR
    clips = {
        "white noise": rng.standard_normal(2 * SR) * 10 ** (-45 / 20),
        "DTMF 5": 0.05 * (np.sin(2 * np.pi * 770 * t) + np.sin(2 * np.pi * 1336 * t)),
        "mains hum": 0.1 * np.sin(2 * np.pi * 50 * t) + 0.01 * rng.standard_normal(2 * SR),
    }
    for name, clip in clips.items():
        result = prompted.transcribe(_segment(clip.astype(np.float32)))
        assert result.text == "" and result.dropped == "no_speech", (name, result)


@pytest.mark.slow
def test_base_model_returns_traditional_characters(base_transcriber, demo_call):
    from voice.audio import read_audio

    audio = read_audio(demo_call.path)
    texts = []
    for start, end, _ in demo_call.lines:
        seg = _segment(audio[int(start * SR) : int(end * SR)], start)
        texts.append(base_transcriber.transcribe(seg).text)
    joined = "".join(texts)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in joined)
    assert _S2HK.convert(joined) == joined  # nothing left to convert: HK Traditional already


@pytest.mark.parametrize("window", ["auto", 5, 7, 10, 30])
def test_training_and_serving_choose_the_same_window(window):
    """One rule (voice.features.encoder_window): a model card's window means in serving what it
    meant in training, for every utterance length."""
    from types import SimpleNamespace

    from finetune.data import window_for as training_window
    from voice.asr import AsrOptions, Transcriber

    serving = SimpleNamespace(options=AsrOptions(), card={"window_seconds": window})
    for tenths in range(1, 320, 7):
        duration = tenths / 10
        assert training_window(duration, window) == Transcriber.window_for(serving, duration)
    assert Transcriber.window_for(serving, 6.0) == (10 if window in ("auto", 5) else window)
