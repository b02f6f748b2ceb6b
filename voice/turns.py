"""End of turn: whether a caller who has paused has finished speaking, judged from the words.

The VAD offers the utterance at a short pause (`VadOptions.candidate_ms`); once it is decoded,
`ends_turn` decides from its text whether to answer now or keep waiting for the VAD's full
end-of-speech silence (`stop_ms`). Only a turn that says it is over counts: a question or
sentence-final particle (呀 㗎 啦 喎 嗎 …), closing punctuation, or a closing phrase (唔該, thanks).
A sentence stopping on a noun or verb may go on after a breath ("我大概十一點半去到，仲開唔開？"),
so it waits. Measured on `voice eval --mode call` (BENCHMARKS.md, turn-taking): a looser rule
(anything not ending on a conjunction or a filler) cut synthetic and real callers mid-sentence.
"""

from __future__ import annotations

import re

# Cantonese sentence-final particles (and Mandarin's) after which a caller waits for an answer.
# Not 嘅 or 係: both end clauses as often as sentences (我嘅…, 個密碼係…).
FINAL_PARTICLES = "呀啊㗎架喇啦嘞囉喎咩嗎呢吖啩嘛未晒吓喂了吧"
# Not 拜拜 / bye: a goodbye needs no fast answer, and "喂？喂？" misheard as "喂，拜拜" cut a
# caller off in voice eval --mode call
CLOSING_PHRASES = ("唔該", "多謝", "冇嘢喇", "係咁多")
ENGLISH_CLOSINGS = ("thanks", "thank you", "please", "okay", "ok")
MIN_CHARS = 2  # "好啦" is a turn; a single syllable is not yet one
# A caller checking the line ("喂？喂？ … 聽到我講嘢呀？") goes on after a breath
GREETING = re.compile(r"^(喂|hello|hi|喂你好|你好)+$", re.IGNORECASE)
_PUNCTUATION = re.compile(r"[\s\W_]+")
CLOSE_PUNCTUATION = "。！？!?"
_TRAILING = re.compile(r"[\s.。…，,、]+$")  # a decoder's trailing dots and spaces say nothing


def ends_turn(text: str) -> bool:
    """True if `text`, what the caller said up to a pause, says the turn is over."""
    raw = text.strip()
    if not raw:
        return False
    if raw[-1] in "，,、;；:：-—":
        return False  # the decoder heard the clause go on
    body = _TRAILING.sub("", raw.rstrip(CLOSE_PUNCTUATION))
    words = _PUNCTUATION.sub("", body)
    if len(words) < MIN_CHARS or GREETING.match(words):
        return False
    if raw[-1] in CLOSE_PUNCTUATION:
        return True
    lower = body.lower()
    if lower.endswith(ENGLISH_CLOSINGS):
        return True
    return body[-1] in FINAL_PARTICLES or body.endswith(CLOSING_PHRASES)


__all__ = ["FINAL_PARTICLES", "ends_turn"]
