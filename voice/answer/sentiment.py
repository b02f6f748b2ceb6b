"""Cantonese-aware tone detection: a lexicon of colloquial complaints, intensifiers and negation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from functools import lru_cache

from rapidfuzz import fuzz

from voice.answer.text import normalize

# Negative phrases (positive weight = more upset). Colloquial Cantonese, written-Chinese and
# English forms; matched longest first on normalised text, so 好嬲 is one hit, not two.
NEGATIVE = {
    # anger and exasperation
    "嬲": 2.0, "好嬲": 2.5, "激氣": 2.0, "激死": 2.5, "火滾": 2.5, "忍唔住": 1.5, "頂唔順": 2.0,
    "受夠": 2.0, "忍無可忍": 2.5, "離譜": 2.0, "離晒譜": 2.5, "大譜": 2.0, "荒謬": 2.0, "過分": 1.5,
    "搞乜鬼": 2.5, "搞什麼": 2.0, "搞咩呀": 1.5, "搞錯": 1.5, "有冇搞錯": 2.5, "玩嘢": 2.0,
    "玩我": 2.0, "點搞": 1.0, "冇理由": 1.5, "豈有此理": 2.5, "唔合理": 1.5, "無理": 1.5,
    # waiting and repetition
    "等咗成個鐘": 2.0, "等咗好耐": 1.5, "等到依家": 1.5, "等咗幾日": 1.5, "成個鐘": 1.0,
    "講咗幾次": 2.0, "講過好多次": 2.0, "第三次": 1.5, "又係咁": 1.5, "次次都": 1.5,
    "成日都": 1.0, "仲未搞掂": 2.0, "仲未": 0.7, "冇人理": 2.0, "冇人覆": 1.5, "踢來踢去": 2.0,
    # complaints, threats, distrust
    "投訴": 2.0, "報警": 2.5, "告你": 2.5, "律師": 2.0, "消委會": 2.0, "傳媒": 1.5, "退台": 1.0,
    "呃錢": 2.5, "呃人": 2.5, "騙子": 2.5, "黑店": 2.5, "老屈": 2.0, "唔負責任": 2.0,
    "失望": 1.5, "好失望": 2.0, "唔滿意": 1.5, "浪費時間": 2.0, "冇用": 1.5, "廢": 1.5,
    "垃圾": 2.5, "差勁": 2.0, "好差": 1.5, "爛": 0.7, "衰": 1.0, "煩": 1.0, "慘": 1.0, "累街坊": 1.5,
    # swearing (Cantonese and English)
    "仆街": 3.0, "屌": 3.0, "𨳒": 3.0, "戇鳩": 3.0, "on9": 3.0, "柒": 2.5, "黐線": 2.0,
    "收皮": 2.5, "頂你": 2.5, "鬼佬": 0.5, "hea": 1.0, "diu": 3.0, "fuck": 3.0, "fucking": 3.0,
    "shit": 2.5, "wtf": 2.5, "damn": 1.5, "ridiculous": 2.0, "terrible": 2.0, "useless": 2.0,
    "angry": 2.0, "furious": 2.5, "unacceptable": 2.0, "complaint": 2.0, "complain": 2.0,
    "police": 2.0, "lawyer": 2.0, "rubbish": 2.0, "scam": 1.5, "worst": 2.0, "disappointed": 1.5,
}  # fmt: skip
POSITIVE = {
    "多謝": 1.0, "唔該晒": 1.0, "好多謝": 1.5, "滿意": 1.0, "開心": 1.0, "好好": 0.7, "幫到": 0.7,
    "搞掂": 0.7, "好彩": 0.5, "讚": 1.0, "thank": 1.0, "thanks": 1.0, "great": 1.0,
    "perfect": 1.0, "helpful": 1.0,
}  # fmt: skip
INTENSIFIERS = (
    "非常",
    "極之",
    "真係",
    "實在",
    "好",
    "超",
    "勁",
    "極",
    "太",
    "咁",
    "成",
    "very",
    "so",
    "really",
)
NEGATORS = ("唔", "冇", "不", "未", "無", "not", "no", "never", "dont")
INTENSIFIER_GAIN = 1.5  # an intensifier right before a phrase multiplies its weight
NEGATION_GAIN = -0.3  # a negator right before a phrase flips it and weakens it
EXCLAIM_WEIGHT = 0.3  # each ! or ？ run, capped at three
REPEAT_WEIGHT = 1.0  # the caller says nearly the same thing as in a recent turn
REPEAT_SIMILARITY = 85  # rapidfuzz ratio at or above which two utterances count as a repeat
CARRY = 0.5  # share of the previous turn's negativity carried into this one
SCALE = 2.5  # raw weight at which tanh reaches ~0.76
NEGATIVE_LABEL = -0.3  # score at or below which the label is "negative"
POSITIVE_LABEL = 0.3  # score at or above which the label is "positive"


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, float], re.Pattern[str]]:
    """The lexicon in normalised spelling (upset > 0) and one longest-first pattern for it."""
    lexicon = {normalize(k): -v for k, v in POSITIVE.items()}
    lexicon.update({normalize(k): v for k, v in NEGATIVE.items()})
    pattern = re.compile(
        "|".join(
            rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])" if w.isascii() else re.escape(w)
            for w in sorted(lexicon, key=len, reverse=True)
        )
    )
    return lexicon, pattern


@dataclass(frozen=True)
class Sentiment:
    """Tone of one turn: `score` in [-1, 1] (-1 furious, +1 delighted) and its label."""

    label: str  # "negative" | "neutral" | "positive"
    score: float
    cues: tuple[str, ...] = ()  # the phrases that decided it, for the agent's screen

    def to_dict(self) -> dict[str, object]:
        return {"label": self.label, "score": round(self.score, 3), "cues": list(self.cues)}


def _modifier(before: str) -> float:
    before = before.rstrip()
    for neg in NEGATORS:
        if before.endswith(neg):
            return NEGATION_GAIN
    for word in INTENSIFIERS:
        if before.endswith(word):
            return INTENSIFIER_GAIN
    return 1.0


def upset(text: str) -> tuple[float, list[str]]:
    """Raw negativity of one utterance (>0 upset, <0 pleased) and the cues found."""
    norm = normalize(text)
    lexicon, pattern = _lexicon()
    raw, cues = 0.0, []
    for match in pattern.finditer(norm):
        word = match.group()
        weight = lexicon[word] * _modifier(norm[: match.start()][-4:])
        raw += weight
        cues.append(word)
    raw += EXCLAIM_WEIGHT * min(3, len(re.findall(r"[!！?？]+", text)))
    return raw, cues


def detect(text: str, history: tuple[str, ...] = (), previous: float = 0.0) -> Sentiment:
    """Tone of `text`, given the caller's recent utterances and the previous turn's score.

    Repeating an earlier utterance adds frustration; part of the previous negativity carries over
    so a caller who was angry a turn ago is not calm because this turn has no swear word.
    """
    raw, cues = upset(text)
    norm = normalize(text)
    if norm and any(fuzz.ratio(norm, normalize(h)) >= REPEAT_SIMILARITY for h in history):
        raw += REPEAT_WEIGHT
        cues.append("(repeated)")
    score = -math.tanh(raw / SCALE) + 0.0  # + 0.0: no "-0.0" in JSON
    if previous < 0:
        score = max(-1.0, score + CARRY * previous) if score <= 0 else score
    label = (
        "negative"
        if score <= NEGATIVE_LABEL
        else "positive"
        if score >= POSITIVE_LABEL
        else "neutral"
    )
    return Sentiment(label, score, tuple(cues))


__all__ = ["Sentiment", "detect", "upset", "NEGATIVE", "POSITIVE"]
