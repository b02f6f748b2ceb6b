"""End of turn: whether a caller who has paused has finished speaking, judged from the words.

The VAD offers the utterance at a short pause (`VadOptions.candidate_ms`); once it is decoded,
`ends_turn` decides from its text whether to answer now or keep waiting for the VAD's full
end-of-speech silence (`stop_ms`). A sentence that stops on a conjunction, a filler or a comma
is a caller thinking, not a caller waiting for an answer.
"""

from __future__ import annotations

import re

# Words after which Hong Kong callers (Cantonese and English) go on speaking: conjunctions,
# fillers and openers of a clause. Longest first, matched at the end of the text.
CONTINUATIONS = (
    "同埋", "但係", "不過", "因為", "所以", "如果", "然後", "跟住", "或者", "定係", "即係",
    "就係", "嗰個", "呢個", "噉樣", "咁樣", "譬如", "例如", "仲有", "另外", "還有", "而且",
    "我想", "我要", "想問", "請問", "嗯", "呃", "就", "個",
    "and", "but", "so", "because", "or", "then", "um", "uh", "er", "like", "the", "a", "to",
    "my", "i", "if",
)  # fmt: skip
OPEN_PUNCTUATION = "，、,;；:：-—…"  # a clause that the text itself says is not finished
CLOSE_PUNCTUATION = "。！？!?."
_WORD_END = re.compile(r"[A-Za-z']+$")


def ends_turn(text: str) -> bool:
    """True if `text`, what the caller said up to a pause, reads as a finished turn."""
    text = text.strip()
    if not text:
        return False
    if text[-1] in OPEN_PUNCTUATION:
        return False
    body = text.rstrip(CLOSE_PUNCTUATION + " ")
    if not body:
        return False
    word = _WORD_END.search(body)
    if word is not None:  # English: compare whole words, case-insensitively
        return word.group(0).lower() not in CONTINUATIONS
    return not any(body.endswith(c) for c in CONTINUATIONS if not c.isascii())


__all__ = ["CONTINUATIONS", "ends_turn"]
