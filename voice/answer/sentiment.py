"""Cantonese-aware tone detection: a lexicon of colloquial complaints, intensifiers and negation."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
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
    "講咗幾次": 2.0, "講過好多次": 2.0, "講咗好多次": 2.0, "打咗幾次": 2.0, "打咗好多次": 2.0,
    "問咗幾次": 2.0, "問過好多次": 2.0, "打極都唔通": 2.0, "打極都冇人聽": 2.0, "冇人聽": 1.5,
    "第三次": 1.5, "又係咁": 1.5, "次次都": 1.5, "成日都": 1.0, "仲未搞掂": 2.0, "仲未": 0.7,
    "冇人理": 2.0, "冇人覆": 1.5, "踢來踢去": 2.0,
    # the caller says they are asking again (the repeat itself is caught against the history)
    "再問多次": 1.5, "再問一次": 0.8, "我都問咗": 1.5, "頭先問咗": 1.0, "頭先講咗": 1.0,
    "都話咗": 1.5,
    # exasperation that needs no swear word
    "咁都得": 1.2, "算啦": 1.0, "講極都唔明": 2.0, "仲叫我等": 1.5, "仲要我等": 1.5,
    "叫我等埋": 1.5, "同部機講": 1.5, "唔想再等": 1.5,
    # complaints, threats, distrust
    "投訴": 2.0, "報警": 2.5, "告你": 2.5, "律師": 2.0, "消委會": 2.0, "傳媒": 1.5, "退台": 1.0,
    "呃錢": 2.5, "呃人": 2.5, "騙子": 2.5, "黑店": 2.5, "老屈": 2.0, "唔負責任": 2.0,
    "失望": 1.5, "好失望": 2.0, "唔滿意": 1.5, "浪費時間": 2.0, "冇用": 1.5, "廢": 1.5,
    "垃圾": 2.5, "差勁": 2.0, "好差": 1.5, "爛": 0.7, "衰": 1.0, "煩": 1.0, "慘": 1.0, "累街坊": 1.5,
    # broken goods: a report of damage is mildly upset on its own, more with other cues
    "爛咗": 0.8, "壞咗": 0.8, "爛晒": 1.5, "壞晒": 1.5, "碎晒": 1.2, "碎咗": 0.8, "廢柴": 2.0,
    # plain words of a caller who has had enough (no complaint word needed): blame, being
    # taken for a fool, buck-passing, giving up on the company, demands for a manager or money
    "你哋嘅錯": 2.0, "你哋搞錯": 2.0, "你哋嘅責任": 1.5, "明明係你哋": 2.0, "唔關佢事": 1.5,
    "唔關我事": 1.0, "當我傻": 2.5, "當我白痴": 2.5, "當我水魚": 2.5, "攞我嚟玩": 2.5,
    "攞人嚟玩": 2.5, "欺負": 2.0, "蝦人": 2.0, "仲好意思": 2.0, "拖拖拉拉": 1.5, "推卸": 1.5,
    "唔會再幫襯": 2.0, "唔再幫襯": 2.0, "我唔理": 1.5, "賠返": 1.5, "賠償": 1.2, "我要退錢": 1.5,
    "冇結果": 1.2, "冇人跟進": 1.5, "冇人通知": 1.2, "由頭講過": 1.5, "由頭再講": 1.5,
    "一次又一次": 1.5, "唔想再聽": 1.5, "唔想再講": 1.5, "唔想再同你": 2.0, "完全唔同": 1.0,
    "講清楚啲": 1.0, "根本": 0.5, "究竟": 0.8, "到底": 0.8, "唉": 0.8, "搞到我": 1.2, "仲要我": 1.2,
    "害到我": 1.5, "累到我": 1.5, "請假": 0.5,
    # swearing (Cantonese and English)
    "仆街": 3.0, "屌": 3.0, "𨳒": 3.0, "戇鳩": 3.0, "on9": 3.0, "柒": 2.5, "黐線": 2.0,
    "收皮": 2.5, "頂你": 2.5, "鬼佬": 0.5, "hea": 1.0, "diu": 3.0, "fuck": 3.0, "fucking": 3.0,
    "shit": 2.5, "wtf": 2.5, "damn": 1.5, "ridiculous": 2.0, "terrible": 2.0, "useless": 2.0,
    "angry": 2.0, "furious": 2.5, "unacceptable": 2.0, "complaint": 2.0, "complain": 2.0,
    "police": 2.0, "lawyer": 2.0, "rubbish": 2.0, "scam": 1.5, "worst": 2.0, "disappointed": 1.5,
    "you people": 1.5, "supervisor": 1.2, "manager": 1.0, "refund my": 1.0,
}  # fmt: skip
POSITIVE = {
    "多謝": 1.0, "唔該晒": 1.0, "好多謝": 1.5, "滿意": 1.0, "開心": 1.0, "好好": 0.7, "幫到": 0.7,
    "搞掂": 0.7, "好彩": 0.5, "讚": 1.0, "thank": 1.0, "thanks": 1.0, "great": 1.0,
    "perfect": 1.0, "helpful": 1.0,
}  # fmt: skip
# Everyday words that contain a lexicon word but mean nothing upset: matched first (longest
# wins), they keep 麻煩你 ("excuse me") from counting as 煩 ("annoyed").
NEUTRAL = ("麻煩",)
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
REPEAT_WEIGHT = 1.0  # per recent turn the caller repeats (at most two count)
REPEAT_SIMILARITY = 85  # rapidfuzz ratio at or above which two utterances count as a repeat
REPEAT_MIN_CHARS = 4  # shorter utterances ("喂", "係呀") repeat on any call; they are not counted
CARRY = 0.5  # share of the previous turn's negativity carried into this one
SCALE = 2.5  # raw weight at which tanh reaches ~0.76
NEGATIVE_LABEL = -0.3  # score at or below which the label is "negative"
POSITIVE_LABEL = 0.3  # score at or above which the label is "positive"

# Phrases whose reading depends on what follows, as (cue, weight, pattern on normalised text:
# written in normalize()'s spelling, e.g. 揾 for 搵).
# 一啲都唔/冇 + a complaint ("一啲都唔好用") is upset; + a worry ("一啲都唔麻煩") is polite.
# 好啦好啦 said twice is impatience; a single 好啦 is agreement.
PATTERNS = (
    ("一啲都唔", 1.5, re.compile(r"一啲都唔(?!麻煩|貴|難|緊要|介意|嬲|急|怪|煩|擔心)")),
    ("一啲都冇", 1.5, re.compile(r"一啲都冇(?!問題|所謂|緊要|事)")),
    ("好啦好啦", 1.2, re.compile(r"(好啦|得啦|係啦|知啦|ok啦)\s*\1")),
    # contacts counted out loud: 打咗三次, 問咗幾次, called four times
    (
        "打咗幾次",
        2.0,
        re.compile(
            r"(?:打|問|講|揾|追|嚟|send|email)咗\s*(?:[2-9]|\d{2}|[兩三四五六七八九十幾]|好多|無數)\s*(?:次|轉|個電話)"
        ),
    ),
    (
        "called n times",
        2.0,
        re.compile(
            r"\b(?:called|phoned|rang|emailed|asked|chased)\b.{0,20}\b(?:two|three|four|five|six|"
            r"several|many|[2-9]|\d{2})\s+times\b"
        ),
    ),
    (
        "nobody answers",
        2.0,
        re.compile(
            r"\bno ?(?:one|body)\b.{0,10}\b(?:calls?|called|answers?|answered|repl(?:y|ies|ied)|gets? back|"
            r"helps?|helped)\b"
        ),
    ),
    # a promise not kept: "still nothing / nobody yet" after a time or an earlier call
    (
        "(still nothing)",
        1.5,
        re.compile(
            r"(?:到(?:而家|依家|今日|宜家)|至今|都成)\S{0,4}(?:都|仲)?(?:冇|未|唔見)"
            r"|冇人(?:揾|覆|打返|理|嚟|處理|跟|聯絡)(?:過|返)?我"
        ),
    ),
    # time counted against the company: 等咗三日, 成個禮拜, 而家第五日, 第四次
    (
        "(counted days)",
        1.2,
        re.compile(
            r"等(?:咗|左)?(?:成|足足)?\s*(?:[2-9]|\d{2}|[兩三四五六七八九十幾半]|好多)\s*個?"
            r"(?:鐘|日|工作天|個?禮拜|個?星期|個?月)"
            r"|成(?:個|半個)(?:禮拜|星期|月|鐘)|而家第\S{1,2}日|第[三四五六七八九十幾]次"
        ),
    ),
    # every time / again and again, and rhetorical questions to "you people"
    (
        "(every time)",
        1.5,
        re.compile(
            r"點解\S{0,4}(?:次次|每次|成日)|(?:次次|成日)\S{0,8}都(?:要我|係咁|出事|出問題|唔得|冇人)"
        ),
    ),
    (
        "(rhetorical)",
        1.5,
        re.compile(
            r"有冇人識|識唔識做|係咪要我\S{0,12}先|你哋\S{0,2}(?:究竟|到底)?想點"
            r"|點解\S{0,6}(?:仲|又)(?:話|要|收)我|咁簡單\S{0,4}都\S{0,2}唔(?:到|掂|識)"
            r"|(?:收錢|賺錢)就快"
        ),
    ),
    (
        "(wants a manager)",
        1.5,
        re.compile(r"(?:揾|叫|要|同)(?:你哋)?(?:個)?(?:主管|經理|上司|負責人|老闆)"),
    ),
    (
        "(hangs up)",
        1.0,
        re.compile(r"我就收線|我收線啦|唔同你講"),
    ),
    (
        "waiting for n days",
        1.5,
        re.compile(
            r"\bwait(?:ed|ing)\b.{0,12}\b(?:two|three|four|five|six|several|many|[2-9]|\d{2})"
            r"\s+(?:days|weeks|months|hours)\b"
        ),
    ),
    (
        "nth time",
        1.5,
        re.compile(r"\b(?:third|fourth|fifth|sixth|umpteenth|\d+(?:rd|th))\s+time\b"),
    ),
    (
        "nobody did anything",
        1.5,
        re.compile(r"\bno ?(?:one|body)\b.{0,10}\b(?:done|did|fixed|called back|bothered)\b"),
    ),
    # praise of "you people" with 真係 is, on a service line, nearly always sarcasm
    (
        "(sarcasm)",
        2.0,
        re.compile(
            r"你(?:哋|們)\S{0,8}真係好?(?:叻|醒|有效率|專業|有良心|犀利|快手|有心|好人|好服務)"
        ),
    ),
)
# Praise with a sentence-final particle ("真係好有效率呀", "好嘢喎") is sarcasm when the call is
# already a complaint; on its own it is left neutral, since the words alone cannot tell.
SARCASM = re.compile(
    r"(?:真係|真心|實在)?好(?:有效率|專業|快手|醒目|有禮貌|有心|好服務|叻|犀利)(?:呀|喎|囉|啦|嘞|啊|㗎)"
    r"|好嘢(?:喎|呀|啊|囉)|(?:多謝|唔該)(?:曬|晒)?(?:你哋|你)?(?:喎|囉)"
)
SARCASM_WEIGHT = 1.5  # added once per utterance whose praise reads as sarcasm
# The meaning-based tone model (voice.answer.tone): its probability above MEANING_FLOOR maps to a
# raw weight up to MEANING_GAIN, capped at MEANING_CAP, that replaces a smaller raw weight of the
# cues: meaning alone marks a caller "slightly upset" (label negative, level 1) but never raises
# an alert without words or voice to back it. Floor 0.6 (0.5 flagged 6 of 57 calm bank_cards
# lines, 0.6 3, 0.65 2 with 2 fewer upset lines of a fresh check set found).
MEANING_FLOOR = 0.6
MEANING_GAIN = 2.0
MEANING_CAP = 1.2
COMPLAINT_CONTEXT = 1.5  # raw upset (this turn or a recent one) that makes praise read as sarcasm


@lru_cache(maxsize=1)
def _lexicon() -> tuple[dict[str, float], re.Pattern[str]]:
    """The lexicon in normalised spelling (upset > 0) and one longest-first pattern for it."""
    lexicon = {normalize(k): 0.0 for k in NEUTRAL}
    lexicon.update({normalize(k): -v for k, v in POSITIVE.items()})
    lexicon.update({normalize(k): v for k, v in NEGATIVE.items()})
    pattern = re.compile(
        "|".join(
            rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])" if w.isascii() else re.escape(w)
            for w in sorted(lexicon, key=len, reverse=True)
        )
    )
    return lexicon, pattern


LEVELS = ("calm", "slightly upset", "upset", "very upset")  # agitation level 0-3, for the agent
VOICE_LEVELS = (0.3, 0.6)  # voice agitation at or above which a raised voice alone is level 1, 2


def agitation_level(
    text_score: float, voice_score: float | None = None, threshold: float = 0.5
) -> int:
    """How upset the caller is, 0-3 (see LEVELS), from the words' tone and the voice's agitation.

    Words: upset = -text_score; level 1 from threshold/2, 2 from `threshold` (where the engine
    has always alerted), 3 from (1 + threshold)/2. Voice: level 1 from 0.3, 2 from 0.6; a raised
    voice alone never reaches 3, since without words of complaint it may be excitement, a noisy
    room or a bad line. When both words and voice are at least level 1 they agree: one more level.
    """
    upset = -text_score
    text = sum(upset >= bound for bound in (threshold / 2, threshold, (1 + threshold) / 2))
    voice = 0 if voice_score is None else sum(voice_score >= bound for bound in VOICE_LEVELS)
    return min(3, max(text, voice) + (text >= 1 and voice >= 1))


@dataclass(frozen=True)
class Sentiment:
    """Tone of one turn: `score` in [-1, 1] from the words (-1 furious, +1 delighted), its label,
    the voice's agitation in [0, 1] when there was audio, and the combined agitation `level`."""

    label: str  # "negative" | "neutral" | "positive": the words' tone
    score: float  # the words' tone (`text_score` in JSON too)
    cues: tuple[str, ...] = ()  # the phrases that decided it, for the agent's screen
    voice_score: float | None = None  # None: no audio for this turn
    level: int = 0  # 0 calm, 1 slightly upset, 2 upset, 3 very upset (agitation_level)

    @property
    def text_score(self) -> float:
        return self.score

    def with_voice(self, voice_score: float | None, threshold: float = 0.5) -> Sentiment:
        """This tone with the voice's agitation added and the level recomputed."""
        cues = self.cues
        if voice_score is not None and voice_score >= VOICE_LEVELS[0]:
            cues = (*cues, "(raised voice)")
        level = agitation_level(self.score, voice_score, threshold)
        return replace(self, cues=cues, voice_score=voice_score, level=level)

    def to_dict(self) -> dict[str, object]:
        voice = None if self.voice_score is None else round(self.voice_score, 3)
        return {
            "label": self.label,
            "score": round(self.score, 3),
            "text_score": round(self.score, 3),
            "voice_score": voice,
            "level": self.level,
            "cues": list(self.cues),
        }


def _modifier(before: str) -> float:
    before = before.rstrip()
    for neg in NEGATORS:
        if before.endswith(neg):
            return NEGATION_GAIN
    for word in INTENSIFIERS:
        if before.endswith(word):
            return INTENSIFIER_GAIN
    return 1.0


def _hits(norm: str) -> list[tuple[str, float, float]]:
    """(cue, weight after modifiers, lexicon weight) for each lexicon phrase and pattern. Where
    a phrase and a pattern (or two patterns) match overlapping words, only the heavier counts:
    the same words are one cue, not two."""
    lexicon, pattern = _lexicon()
    found = []  # (span, cue, weight, lexicon weight)
    for match in pattern.finditer(norm):
        word = match.group()
        if lexicon[word]:
            weight = lexicon[word] * _modifier(norm[: match.start()][-4:])
            found.append((match.span(), word, weight, lexicon[word]))
    for cue, weight, regex in PATTERNS:
        found.extend((m.span(), cue, weight, weight) for m in regex.finditer(norm))
    kept: list[tuple[int, int]] = []
    hits = []
    for (start, end), cue, weight, base in sorted(found, key=lambda f: -abs(f[2])):
        if all(end <= a or start >= b for a, b in kept):
            kept.append((start, end))
            hits.append((cue, weight, base))
    return hits


def _exclaim(text: str) -> float:
    return EXCLAIM_WEIGHT * min(3, len(re.findall(r"[!！?？]+", text)))


def upset(text: str) -> tuple[float, list[str]]:
    """Raw negativity of one utterance (>0 upset, <0 pleased) and the cues found."""
    hits = _hits(normalize(text))
    return sum(w for _, w, _ in hits) + _exclaim(text), [c for c, _, _ in hits]


def _complaint(hits: list[tuple[str, float, float]]) -> float:
    return sum(w for _, w, _ in hits if w > 0)


def _repeats(norm: str, history: tuple[str, ...]) -> int:
    """How many of the recent utterances this one repeats (long enough to be a question)."""
    if len(norm.replace(" ", "")) < REPEAT_MIN_CHARS:
        return 0
    count = 0
    for h in history:
        earlier = normalize(h)
        if len(earlier.replace(" ", "")) < REPEAT_MIN_CHARS:
            continue
        # Whole-utterance similarity only: a follow-up that adds to the question ("我想查下張單"
        # then "我想查下張單，單號係85321") is not a repeat; "都話咗" and the like are cues.
        count += fuzz.ratio(norm, earlier) >= REPEAT_SIMILARITY
    return count


def _says_twice(norm: str) -> bool:
    """A clause said twice in one breath ("又係收年費，又係收年費"): insistence, not a question."""
    clauses = [c for c in norm.split() if len(c) >= REPEAT_MIN_CHARS]
    return len(clauses) != len(set(clauses))


def detect(
    text: str, history: tuple[str, ...] = (), previous: float = 0.0, meaning: float | None = None
) -> Sentiment:
    """Tone of `text`, given the caller's recent utterances and the previous turn's score, and
    (`meaning`) the tone model's probability that the words come from an upset caller.

    Repeating an earlier utterance adds frustration; part of the previous negativity carries over
    so a caller who was angry a turn ago is not calm because this turn has no swear word. In a
    complaint (this turn's words, the previous turn's tone or a recent utterance), praise reads
    as sarcasm, and thanks inside a complaint do not cancel it.
    """
    norm = normalize(text)
    hits = _hits(norm)
    complaint = _complaint(hits)
    context = (
        complaint >= COMPLAINT_CONTEXT
        or previous <= NEGATIVE_LABEL
        or any(_complaint(_hits(normalize(h))) >= COMPLAINT_CONTEXT for h in history)
    )
    sarcasm = context and SARCASM.search(norm) is not None
    if complaint >= COMPLAINT_CONTEXT:
        # Thanks inside a complaint are politeness or sarcasm, not satisfaction: they do not
        # cancel it ("多謝晒你哋呀，講咗幾次都未搞掂"). A negated complaint word stays.
        hits = [h for h in hits if not (h[1] < 0 and h[2] < 0)]
    raw = sum(w for _, w, _ in hits) + _exclaim(text)
    cues = [c for c, _, _ in hits]
    if sarcasm:
        raw += SARCASM_WEIGHT
        cues.append("(sarcasm)")
    if _says_twice(norm):
        raw += REPEAT_WEIGHT * 1.5
        cues.append("(said twice)")
    if meaning is not None and meaning > MEANING_FLOOR and raw >= 0:
        # the larger of the two, not their sum: the model mostly reacts to the same words the
        # cues found, so adding it would count them twice; and words of thanks or praise
        # (raw < 0) are taken at their word, as without the model
        by_meaning = min(
            MEANING_CAP, MEANING_GAIN * (meaning - MEANING_FLOOR) / (1 - MEANING_FLOOR)
        )
        if by_meaning > raw:
            raw = by_meaning
            cues.append("(sounds upset)")
    if repeats := _repeats(norm, history):
        raw += REPEAT_WEIGHT * min(2, repeats)
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
    return Sentiment(label, score, tuple(cues), level=agitation_level(score))


__all__ = ["Sentiment", "detect", "upset", "agitation_level", "NEGATIVE", "POSITIVE", "LEVELS"]
