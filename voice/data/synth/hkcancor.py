"""Everyday Cantonese utterances from HKCanCor (shipped by pycantonese), cleaned for TTS."""

from __future__ import annotations

import functools
import logging

from voice.data.chinese import is_cjk, simplified_chars

log = logging.getLogger(__name__)

MIN_CHARS = 4  # shorter utterances are mostly back-channels (係啊, 唔係)
MAX_CHARS = 30  # longer ones run on for too long for a phone utterance
PUNCT = {",": "，", ".": "。", "?": "？", "!": "！"}  # HKCanCor's ASCII punctuation -> full width
# HKCanCor's older or rare spellings -> what Hong Kong writers use today
MODERN = str.maketrans({"𡃉": "㗎", "哩": "呢", "揾": "搵", "嚹": "喇"})


def clean(words: list[str]) -> str | None:
    """Join an utterance's words; None when it holds disfluencies, non-Chinese junk or is odd."""
    text = "".join(PUNCT.get(w, w) for w in words).translate(MODERN)
    out = []
    for ch in text:
        if (is_cjk(ch) and ord(ch) <= 0xFFFF) or ch in "，。？！":
            out.append(ch)
        else:
            return None  # '-' (self-correction), quotes, Latin, digits, rare characters
    text = "".join(out).lstrip("，。？！")
    content = [ch for ch in text if is_cjk(ch)]
    if not MIN_CHARS <= len(content) <= MAX_CHARS or len(set(content)) < 3:
        return None
    if "，，" in text or simplified_chars(text):
        return None
    if text[-1] not in "。？！":
        text += "。"
    return text


@functools.cache
def utterances() -> tuple[str, ...]:
    """Distinct cleaned HKCanCor utterances in corpus order (before the pronounceability check)."""
    import pycantonese

    seen: dict[str, None] = {}
    for utt in pycantonese.hkcancor().utterances():
        text = clean([token.word for token in utt.tokens])
        if text:
            seen.setdefault(text, None)
    log.debug("HKCanCor: %d clean distinct utterances", len(seen))
    return tuple(seen)
