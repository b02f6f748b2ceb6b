"""Which register a caller speaks, from the text: Cantonese (yue), Mandarin (cmn) or English."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

from voice.answer.text import english_ratio, normalize
from voice.types import CMN, EN, YUE

# The rule (README "Answer engine", "Reply language"):
#   1. a language-switch phrase decides ("講廣東話" -> yue, "說普通話" -> cmn, "in English" -> en);
#   2. English: at least `english_min_words` English words and words * `english_word_weight`
#      more than the Chinese characters plus their marker weights (below), so the Chinese
#      grammar around borrowed words (我想cancel個plan) keeps a code-switched line Chinese;
#   3. Chinese: written-Cantonese markers (嘅 咗 唔 係 喺 冇 ...) against Mandarin ones (的 了 不
#      是 在 沒 嗎 怎麼 什麼 ...), each weighed. The side with the larger weight wins if it reaches
#      `register_min_weight`; otherwise the call keeps its Chinese register (Cantonese by default);
#   4. anything else (too short, numbers, "OK") keeps the current language.
# Cantonese markers weigh more than Mandarin ones because they are one-sided: 嘅/咗/唔 never
# appear in Mandarin, while 的/了/不/是 turn up in Hong Kong written-style speech and in what
# Cantonese ASR writes for 嘅/咗/唔/係. So one Cantonese word outweighs one stray 的.
CANTONESE_MARKERS: dict[str, float] = {
    **dict.fromkeys("嘅咗唔喺冇哋佢嘢啲咁噉咩嚟睇攞嗰乜俾畀搵諗啱嬲喎囉㗎噃吖晒冚揾咪", 2.0),
    "係": 2.0,
    **dict.fromkeys(
        ["點解", "點樣", "點算", "而家", "依家", "幾多", "邊度", "邊個", "頭先", "琴日", "尋日",
         "聽日", "呢個", "呢度", "呢期", "呢排", "呢間", "呢張", "呢部", "呢次", "呢條", "唔該"],
        2.0,
    ),
    **dict.fromkeys(["今日", "仲", "喇"], 1.0),
}  # fmt: skip
MANDARIN_MARKERS: dict[str, float] = {
    **dict.fromkeys("的了不是在這那他她說看給還吃找拿剛掉裡裏吧跟嗎很", 1.0),
    **dict.fromkeys("們哪沒啥咱", 2.0),
    **dict.fromkeys(
        ["怎麼", "怎樣", "什麼", "甚麼", "沒有", "東西", "現在", "一下", "多少", "幹嘛", "為何"],
        2.0,
    ),
}  # fmt: skip
# Words shared by both registers that contain a marker: matched first (longest match wins) so
# their 不/了/是/在/係 count for neither side.
NEUTRAL_WORDS = (
    "關係", "聯係", "了解", "不過", "不同", "不斷", "不便", "不少", "不足", "不良", "不適",
    "是否", "於是", "是但", "實在", "存在", "在線", "正在", "的士", "的確", "目的", "看法",
    "除了", "為了", "到了", "不如", "跟進", "還款", "還錢", "找數", "找錢",
)  # fmt: skip
# A bare classifier before a noun (我想cancel個plan, 個app) is Cantonese: Mandarin needs
# 這/那/一 in front. Words such as 個人 or 個案 are not classifiers.
BARE_CLASSIFIER = re.compile(
    r"(?<![這那一二三四五六七八九十百千0-9幾兩每哪某整各半呢嗰])個(?![人別案性體])"
)
BARE_CLASSIFIER_WEIGHT = 1.0


class LanguageSettings(Protocol):
    """What the detector reads from the engine's options (voice.answer.engine.AnswerOptions)."""

    english_triggers: tuple[str, ...]
    chinese_triggers: tuple[str, ...]
    mandarin_triggers: tuple[str, ...]
    english_min_words: int
    english_word_weight: float
    chinese_min_chars: int
    register_min_weight: float


@dataclass(frozen=True)
class Markers:
    """The weighed register markers in one text."""

    cantonese: float = 0.0
    mandarin: float = 0.0

    @property
    def score(self) -> float:
        """+1 all Cantonese, -1 all Mandarin, 0 neither or balanced."""
        total = self.cantonese + self.mandarin
        return (self.cantonese - self.mandarin) / total if total else 0.0


@lru_cache(maxsize=1)
def _marker_pattern() -> tuple[re.Pattern[str], dict[str, tuple[float, float]]]:
    # keys normalised as the text will be (說 is written 説 in HK Traditional)
    weights: dict[str, tuple[float, float]] = {normalize(w): (0.0, 0.0) for w in NEUTRAL_WORDS}
    for word, weight in CANTONESE_MARKERS.items():
        weights[normalize(word)] = (weight, 0.0)
    for word, weight in MANDARIN_MARKERS.items():
        weights[normalize(word)] = (0.0, weight)
    alternatives = sorted(weights, key=len, reverse=True)  # longest first: 關係 before 係
    return re.compile("|".join(map(re.escape, alternatives))), weights


def markers(text: str) -> Markers:
    """Cantonese and Mandarin marker weights in `text` (HK Traditional after normalisation)."""
    pattern, weights = _marker_pattern()
    norm = normalize(text)
    cantonese = BARE_CLASSIFIER_WEIGHT * len(BARE_CLASSIFIER.findall(norm))
    mandarin = 0.0
    for match in pattern.finditer(norm):
        yue, cmn = weights[match.group(0)]
        cantonese += yue
        mandarin += cmn
    return Markers(cantonese, mandarin)


def chinese_register(text: str, current: str, min_weight: float) -> str:
    """YUE or CMN for a Chinese utterance: the heavier side if it reaches `min_weight`, else the
    call's Chinese register so far (Cantonese when the call was in English)."""
    found = markers(text)
    if found.mandarin > found.cantonese and found.mandarin >= min_weight:
        return CMN
    if found.cantonese > found.mandarin and found.cantonese >= min_weight:
        return YUE
    return current if current in (YUE, CMN) else YUE


def _says(norm: str, phrases: tuple[str, ...]) -> bool:
    """Whether a normalised text holds one of `phrases`, normalised alike (說 -> 説)."""
    return any(normalize(phrase) in norm for phrase in phrases)


def detect_language(text: str, current: str, options: LanguageSettings) -> str:
    """The reply language after `text` (YUE, CMN or EN), given the call's `current` one."""
    norm = normalize(text)
    if _says(norm, options.chinese_triggers):
        return YUE
    if _says(norm, options.mandarin_triggers):
        return CMN
    if _says(norm, options.english_triggers):
        return EN
    words, chars = english_ratio(text)
    if words >= options.english_min_words:
        found = markers(text)
        chinese = chars + found.cantonese + found.mandarin
        if words * options.english_word_weight > chinese:
            return EN
    if chars >= options.chinese_min_chars or (current != EN and chars):
        return chinese_register(text, current, options.register_min_weight)
    return current


__all__ = [
    "CANTONESE_MARKERS",
    "MANDARIN_MARKERS",
    "NEUTRAL_WORDS",
    "BARE_CLASSIFIER",
    "LanguageSettings",
    "Markers",
    "markers",
    "chinese_register",
    "detect_language",
]
