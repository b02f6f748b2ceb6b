"""eval: normalisation and CER/MER/WER on hand-made cases with hand-computed answers."""

import math

import pytest

from eval.errors import EvalError
from eval.metrics import (
    CorpusScore,
    EditCounts,
    cer_tokens,
    edit_counts,
    mer_tokens,
    paired_bootstrap,
    score_utterance,
    wer_tokens,
)
from eval.normalize import NormalizeOptions, normalize
from eval.vadscore import score_vad
from voice.errors import VoiceError
from voice.numerals import chinese_to_int, numbers_to_digits

# --- normalisation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("我個 Account，login 唔到！", "我個account login唔到"),  # CJK punctuation, case, spaces
        ("我个account login唔到", "我個account login唔到"),  # Simplified -> HK Traditional
        ("ＡＢＣ１２３，你好\u3000世界", "abc123你好世界"),  # full-width forms, ideographic space
        ("I don't know 呀!", "i dont know呀"),  # in-word apostrophe dropped, ASCII punctuation
        ("裡面", "裏面"),  # Traditional variants fold together...
        ("里面", "裏面"),  # ...and with the Simplified form
        ("「你好」……《報告》【重要】", "你好報告重要"),  # CJK brackets and ellipsis
        ("100% OK", "百分之100 ok"),
        ("  ，。  ", ""),
        ("my  account", "my account"),  # Latin words keep one space
        ("我 想 查", "我想查"),  # spaces between Han characters go
    ],
)
def test_normalize_hard_cases(text, expected):
    assert normalize(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("八五三二", "8532"),  # digit strings read digit by digit
        ("打去九一二三四五六七", "打去91234567"),
        ("二零二四年", "2024年"),
        ("一百蚊", "100蚊"),  # quantities
        ("三千五百", "3500"),
        ("一萬二千", "12000"),
        ("兩百", "200"),
        ("廿三", "23"),
        ("卅", "30"),
        ("一百零五", "105"),
        ("一千零十", "1010"),
        ("三千五", "3500"),  # Cantonese abbreviations: the last digit takes the next lower unit
        ("一萬二", "12000"),
        ("百二", "120"),
        ("一億二千萬", "120000000"),
        ("3千5", "3500"),  # Arabic digits mixed with Chinese units
        ("100萬", "1000000"),
        ("兩個人", "2個人"),  # one numeral before a measure word
        ("第一", "第1"),  # after an ordinal prefix
        ("十分鐘", "10分鐘"),
        ("三點五", "3點5"),  # decimals are spoken 點
        ("3.5", "3點5"),
        ("1,000蚊", "1000蚊"),
        ("我哋一齊去", "我哋一齊去"),  # 一 inside words is not a number
        ("一定", "一定"),
        ("統一", "統一"),
        ("十分好", "十分好"),
        ("萬一", "萬一"),  # idioms are kept
        ("三十五六", "三十五六"),  # malformed quantities are left as written
        ("2024年", "2024年"),
    ],
)
def test_chinese_numbers_become_digits(text, expected):
    assert numbers_to_digits(text) == expected


def test_chinese_to_int_rejects_malformed_runs():
    assert chinese_to_int("十十") is None
    assert chinese_to_int("三十五六") is None
    assert chinese_to_int("二十五") == 25


def test_normalize_is_configurable():
    keep = NormalizeOptions(numbers="keep")
    assert normalize("一百蚊", keep) == "一百蚊"
    assert normalize("我个", NormalizeOptions(to_hk_traditional=False)) == "我个"
    assert normalize("你好。", NormalizeOptions(remove_punctuation=False)) == "你好。"
    assert normalize("ABC", NormalizeOptions(lowercase=False)) == "ABC"
    with pytest.raises(ValueError):
        NormalizeOptions(numbers="words")
    assert "v1" in NormalizeOptions().describe()


def test_normalize_is_idempotent():
    for text in ["我個Account，login唔到！", "一百蚊", "三點五", "打去 9123 4567", "I don't"]:
        once = normalize(text)
        assert normalize(once) == once


# --- tokenisers ---------------------------------------------------------------------------------


def test_tokenisers_on_code_switched_text():
    text = normalize("我個account login唔到")
    assert mer_tokens(text) == ["我", "個", "account", "login", "唔", "到"]
    assert cer_tokens(text) == list("我個accountlogin唔到")
    assert wer_tokens(text) == ["我", "個", "account", "login", "唔", "到"]
    assert mer_tokens("100蚊") == ["100", "蚊"]


# --- scores -------------------------------------------------------------------------------------

# (reference, hypothesis, metric, (hits, substitutions, deletions, insertions)), computed by hand
CASES = [
    ("我想查單", "我想查單", "cer", (4, 0, 0, 0)),  # identical
    ("我想查單", "我想查冊", "cer", (3, 1, 0, 0)),  # one substitution in 4: 0.25
    ("我想查單", "我想查", "cer", (3, 0, 1, 0)),
    ("我想查單", "我想查張單", "cer", (4, 0, 0, 1)),
    # code-switched: CER counts the letter, MER the word (1 of 6 tokens)
    ("我個account login唔到", "我個acount login唔到", "cer", (15, 0, 1, 0)),
    ("我個account login唔到", "我個acount login唔到", "mer", (5, 1, 0, 0)),
    ("我個account login唔到", "我個acount login唔到", "wer", (5, 1, 0, 0)),
    ("我個account login唔到", "我個 ACCOUNT，Login 唔到！", "mer", (6, 0, 0, 0)),
    # digits against Chinese numerals
    ("打去八五三二", "打去8532", "cer", (6, 0, 0, 0)),
    ("一百蚊", "100蚊", "cer", (4, 0, 0, 0)),
    ("三千五百蚊", "3500蚊", "mer", (2, 0, 0, 0)),
    ("兩百個", "200個", "cer", (4, 0, 0, 0)),
    # Simplified hypothesis against Traditional reference
    ("我想查下張單，點解咁貴", "我想查下张单，点解咁贵", "cer", (10, 0, 0, 0)),
    ("裡面係咩", "里面系咩", "cer", (4, 0, 0, 0)),
    # punctuation and full-width forms ignored
    ("唔該，我想查下。", "唔該我想查下", "cer", (6, 0, 0, 0)),
    ("ＯＫ，好", "ok好", "cer", (3, 0, 0, 0)),
    # empty hypothesis: every reference token deleted
    ("我想查單", "", "cer", (0, 0, 4, 0)),
    ("我個account", "", "mer", (0, 0, 3, 0)),
    ("我想查單", "，。", "cer", (0, 0, 4, 0)),
]


@pytest.mark.parametrize("reference, hypothesis, metric, expected", CASES)
def test_edit_counts_table(reference, hypothesis, metric, expected):
    score = score_utterance(reference, hypothesis)
    assert score.counts(metric) == EditCounts(*expected)


@pytest.mark.parametrize(
    "reference, hypothesis, rate",
    [
        ("我想查單", "我想查單", 0.0),
        ("我想查單", "我想查冊", 0.25),
        ("我想查單", "", 1.0),
        ("我想查單", "我想查張單", 0.25),
        ("好", "好好好", 2.0),  # insertions can push a rate above 1
    ],
)
def test_cer_rates(reference, hypothesis, rate):
    assert score_utterance(reference, hypothesis).cer.rate == pytest.approx(rate)


def test_mer_of_code_switched_substitution_is_one_in_six():
    score = score_utterance("我個account login唔到", "我個acount login唔到")
    assert score.mer.rate == pytest.approx(1 / 6)
    assert score.cer.rate == pytest.approx(1 / 16)  # 2 Han + 7 + 5 letters + 2 Han


@pytest.mark.parametrize("reference", ["", "   ", "，。！", "?!"])
def test_empty_reference_is_rejected(reference):
    with pytest.raises(EvalError, match="empty reference"):
        score_utterance(reference, "你好", id="u7")
    assert issubclass(EvalError, VoiceError) and issubclass(EvalError, ValueError)


def test_score_keeps_raw_and_normalised_strings():
    score = score_utterance("我個Account，", "我个account", id="u1", speaker="s1", call_id="c1")
    assert (score.reference, score.hypothesis) == ("我個Account，", "我个account")
    assert score.ref_norm == score.hyp_norm == "我個account"
    data = score.to_dict()
    assert data["id"] == "u1" and data["speaker"] == "s1" and data["cer"]["rate"] == 0.0


def test_edit_counts_arithmetic():
    a, b = EditCounts(1, 1, 0, 0), EditCounts(8, 0, 0, 0)
    total = a + b
    assert total == EditCounts(9, 1, 0, 0)
    assert (total.reference_length, total.errors, total.rate) == (10, 1, 0.1)
    assert EditCounts().rate == 0.0
    assert math.isnan(EditCounts(insertions=2).rate)
    assert edit_counts([], ["a"]) == EditCounts(insertions=1)


def test_corpus_rate_is_total_edits_over_total_reference_tokens():
    one_in_two = score_utterance("查單", "查冊")  # 1/2
    none_in_eight = score_utterance("我想查下我張單呀", "我想查下我張單呀")  # 0/8
    corpus = CorpusScore.of([one_in_two, none_in_eight])
    assert corpus.utterances == 2
    assert corpus.cer.rate == pytest.approx(0.1)  # not (0.5 + 0) / 2 = 0.25
    assert corpus.cer == EditCounts(9, 1, 0, 0)


# --- paired bootstrap ---------------------------------------------------------------------------


def _scores(pairs):
    return [score_utterance(r, h, id=f"u{i}") for i, (r, h) in enumerate(pairs)]


def test_paired_bootstrap_interval_is_ordered_and_contains_the_difference():
    refs = ["我想查下張單", "點解咁貴", "我個account login唔到", "唔該晒", "好啦", "我想轉台"] * 5
    a = _scores([(r, r[:-1]) for r in refs])  # one deletion each
    b = _scores([(r, r) if i % 3 else (r, "") for i, r in enumerate(refs)])
    diff, lo, hi = paired_bootstrap(a, b, "cer", n=500, seed=1)
    true = CorpusScore.of(b).cer.rate - CorpusScore.of(a).cer.rate
    assert diff == pytest.approx(true)
    assert lo <= diff <= hi
    assert lo < hi
    assert paired_bootstrap(a, b, "cer", n=500, seed=1) == (diff, lo, hi)  # seeded: reproducible


def test_paired_bootstrap_of_a_model_against_itself_is_zero():
    a = _scores([("我想查單", "我想查冊"), ("點解咁貴", "點解咁貴")])
    assert paired_bootstrap(a, a, n=200) == (0.0, 0.0, 0.0)


def test_paired_bootstrap_needs_the_same_utterances():
    a = _scores([("我想查單", "我想查冊")])
    b = [score_utterance("我想查單", "我想查單", id="other")]
    with pytest.raises(ValueError):
        paired_bootstrap(a, b)


# --- VAD ----------------------------------------------------------------------------------------


def test_vad_missed_and_false_alarm_time():
    reference = [(1.0, 3.0), (5.0, 6.0)]  # 3 s of speech
    detected = [(0.8, 2.5), (4.0, 4.5), (5.0, 6.5)]
    score = score_vad(reference, detected)
    assert score.reference_seconds == pytest.approx(3.0)
    assert score.missed_seconds == pytest.approx(0.5)  # 2.5-3.0
    assert score.false_alarm_seconds == pytest.approx(0.2 + 0.5 + 0.5)
    assert score.miss_rate == pytest.approx(0.5 / 3)
    assert score_vad(reference, []).miss_rate == 1.0
    assert score_vad(reference, reference).false_alarm_rate == 0.0


def test_false_cuts_count_segment_ends_inside_a_reference_utterance():
    reference = [(1.0, 4.0), (6.0, 8.0)]
    whole = score_vad(reference, [(0.9, 4.1), (5.9, 8.2)])
    assert (whole.false_cuts, whole.reference_utterances) == (0, 2)
    cut = score_vad(reference, [(0.9, 2.2), (2.5, 4.1), (5.9, 8.2)])  # first line split at 2.2 s
    assert cut.false_cuts == 1
    assert score_vad(reference, [(0.9, 3.8), (5.9, 8.2)]).false_cuts == 0  # 0.2 s early: timing
