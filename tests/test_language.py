"""Register detection: Cantonese, Mandarin or English from the text, with the call's register."""

from __future__ import annotations

import pytest

from voice.answer.engine import AnswerOptions
from voice.answer.language import chinese_register, detect_language, markers
from voice.types import CMN, EN, YUE

OPTIONS = AnswerOptions(semantic=False)


def detect(text: str, current: str = YUE) -> str:
    return detect_language(text, current, OPTIONS)


@pytest.mark.parametrize(
    "text",
    [
        "我唔記得咗密碼",
        "點解我張單貴咗咁多",
        "部手機上唔到網呀",
        "你哋門市喺邊度",
        "我想問下而家有咩計劃",
    ],
)
def test_clear_cantonese_is_yue_from_any_register(text):
    assert detect(text, YUE) == detect(text, CMN) == detect(text, EN) == YUE


@pytest.mark.parametrize(
    "text",
    [
        "我忘記密碼了，怎麼辦",
        "為什麼我的帳單這麼貴",
        "我的手機不能上網了",
        "你們的門市在哪裡",
        "現在有什麼方案嗎",
    ],
)
def test_clear_mandarin_is_cmn_from_any_register(text):
    assert detect(text, YUE) == detect(text, CMN) == detect(text, EN) == CMN


@pytest.mark.parametrize(
    "text", ["I forgot my password", "how much is my bill", "Where is my order"]
)
def test_clear_english_is_en_from_any_register(text):
    assert detect(text, YUE) == detect(text, CMN) == detect(text, EN) == EN


@pytest.mark.parametrize("current", [YUE, CMN, EN])
@pytest.mark.parametrize("text", ["好", "OK", "ok thanks", "嗯", "12345"])
def test_short_neutral_utterances_keep_the_register(text, current):
    expected = EN if text == "ok thanks" else current  # two English words are English
    assert detect(text, current) == expected


def test_one_strong_marker_switches_a_short_chinese_reply():
    assert detect("係", CMN) == YUE  # 係 alone is Cantonese
    assert detect("是的", YUE) == CMN  # two Mandarin markers
    assert detect("好的", YUE) == YUE  # one stray 的 (Cantonese ASR writes it for 嘅) is not
    assert detect("係", EN) == EN  # too little Chinese to leave English


def test_code_switched_lines_follow_the_chinese_grammar():
    assert detect("我想 cancel 個 plan", YUE) == YUE  # bare classifier 個: Cantonese, not English
    assert detect("我想 cancel 個 plan", CMN) == CMN  # one weak marker: the register stays
    assert detect("我個 account login 唔到", EN) == YUE
    assert detect("我想cancel我的plan，要怎麼做", YUE) == CMN
    assert detect("Hi, I lost my phone, 唔該", YUE) == EN  # an English line with a thank-you


def test_mixed_registers_go_to_the_heavier_side():
    assert detect("我的手機唔見了，怎麼辦", YUE) == CMN  # Mandarin with one Cantonese word
    assert detect("我想問下點解我的帳單咁貴", CMN) == YUE  # Cantonese with an ASR 的


def test_no_marker_keeps_the_chinese_register_or_defaults_to_cantonese():
    assert detect("信用卡自動轉賬", CMN) == CMN
    assert detect("信用卡自動轉賬", YUE) == YUE
    assert detect("信用卡自動轉賬", EN) == YUE  # back from English: the call centre's default


def test_triggers_decide_whatever_the_markers_say():
    assert detect("唔該講普通話", YUE) == CMN
    assert detect("請說普通話", YUE) == CMN
    assert detect("可不可以講廣東話", CMN) == YUE
    assert detect("in English please", CMN) == EN
    assert detect("speak Mandarin please", EN) == CMN
    assert detect("可唔可以說英文", YUE) == EN  # 說 is written 説 after normalisation


def test_markers_and_score():
    yue, cmn = markers("我唔記得咗"), markers("我忘記了")
    assert yue.cantonese > 0 and yue.mandarin == 0 and yue.score == 1.0
    assert cmn.mandarin > 0 and cmn.cantonese == 0 and cmn.score == -1.0
    assert markers("帳單金額").score == 0.0
    mixed = markers("我的手機唔見了")
    assert -1.0 < mixed.score < 1.0


def test_shared_words_count_for_neither_side():
    assert markers("冇關係").mandarin == 0.0 and markers("冇關係").cantonese == 2.0  # 冇 only
    assert markers("了解不過是否").mandarin == 0.0
    assert markers("我想還款，最遲幾時找數，有冇人跟進").mandarin == 0.0  # call-centre Cantonese
    assert markers("三個月").cantonese == 0.0  # a counted classifier is not Cantonese
    assert markers("今個月").cantonese == 1.0 + 0.0  # 今個月: bare 個 (Mandarin says 這個月)


def test_simplified_input_is_read_as_traditional():
    assert detect("为什么我的账单这么贵", YUE) == CMN


def test_min_weight_is_the_switching_bar():
    assert chinese_register("我的", YUE, 1.0) == CMN
    assert chinese_register("我的", YUE, 2.0) == YUE
