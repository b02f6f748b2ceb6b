"""Text for matching: HK Traditional normalisation, tokens, toneless Jyutping, spoken numbers."""

from __future__ import annotations

import re
import sys
import unicodedata
from dataclasses import dataclass
from functools import lru_cache

from voice.data.chinese import to_hk
from voice.numerals import chinese_to_int

# Characters that carry little meaning in a spoken query: pronouns, particles, fillers. They are
# dropped as single-character terms; a bigram is kept unless both of its characters are here.
STOP_CHARS = frozenset(
    "我你佢哋嘅個係咗啲呀啊吖喇啦囉喎嘛㗎呢咩嗎吓噉咁就都想問下請一有同要點樣可以嗰呃唉喂哦噢"
    "嘢既的了是和在把這那麼么吧嗯欸誒"
)
# English function words (code-switched queries keep their content words only).
EN_STOPWORDS = frozenset(
    """a an the i me my mine you your we our us he she it its they them their is am are was were
    be been being do does did doing to of in on at for from by with about into as and or but if
    so than then that this these those there here what which who whom how why when where can could
    would should will shall may might must have has had having please hi hello hey ok okay yes no
    not just want wanna need like get got im ive dont cant id its thanks thank u ur pls plz""".split()
)

CHINESE_DIGITS = {
    "零": 0, "〇": 0, "一": 1, "二": 2, "兩": 2, "三": 3, "四": 4,
    "五": 5, "六": 6, "七": 7, "八": 8, "九": 9,
}  # fmt: skip
CHINESE_UNITS = {"十": 10, "百": 100, "千": 1000, "萬": 10_000}

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_TOKEN_RE = re.compile(rf"[{_CJK}]|[a-z0-9]+(?:['’][a-z]+)?")
_CJK_RE = re.compile(rf"[{_CJK}]")
_EN_WORD_RE = re.compile(r"[A-Za-z]{2,}")
_DIGITS_RUN_RE = re.compile(r"[零〇一二三四五六七八九兩]{4,}")  # read digit by digit
_POSITIONAL_RE = re.compile(
    r"[一二三四五六七八九兩][零〇一二三四五六七八九兩十百千萬]*[十百千萬][一二三四五六七八九]?"
)
_ORDER_CUE_RE = re.compile(
    r"(?:訂單|單|order|參考|ref(?:erence)?)\s*(?:號碼|編號|號|number|no\.?|id|#)?\s*"
    r"[:：#]?\s*(?:係|是|is)?\s*([A-Za-z]{0,2}(?:\s?\d){4,12})",
    re.IGNORECASE,
)
_BARE_ORDER_RE = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{1,2}\s?\d{5,10}|\d{5,12})(?![A-Za-z0-9])")


@lru_cache(maxsize=65536)
def normalize(text: str) -> str:
    """NFKC (full-width to half-width), HK Traditional, spoken numbers to digits, lower case,
    punctuation to spaces."""
    text = unicodedata.normalize("NFKC", text)
    text = read_numbers(to_hk(text)).lower()
    text = "".join(ch if ch.isalnum() or ch in "'’" else " " for ch in text)
    return " ".join(text.split())


def stem(word: str) -> str:
    """A deliberately light English stemmer: plurals and -ing/-ed, so `bills` matches `bill`."""
    word = word.replace("’", "'")
    if word.endswith("'s"):
        word = word[:-2]
    word = word.replace("'", "")
    if len(word) > 5 and word.endswith("ing"):
        return word[:-3]
    if len(word) > 4 and word.endswith("ed"):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@lru_cache(maxsize=1)
def _rime_characters() -> dict[str, str]:
    """pycantonese's rime-cantonese table (0.25 s to load), which is what its own lookup
    returns for any single character the table has."""
    from pycantonese.data.rime_cantonese import CHARS_TO_JYUTPING

    return CHARS_TO_JYUTPING


@lru_cache(maxsize=65536)
def jyutping(char: str) -> str:
    """The toneless Jyutping syllable of one character (the character itself if unknown)."""
    found = _rime_characters().get(char)
    if found is None:
        # pycantonese's full lookup also reads HKCanCor (3-4 s once per process): only for the
        # rare character rime-cantonese lacks
        import pycantonese

        result = pycantonese.characters_to_jyutping(char)
        found = result[0][1] if result else None
    if found:
        return found.split()[0].rstrip("123456")
    return char


@dataclass(frozen=True)
class Tokens:
    """A text cut two ways for search: `chars` (words as written) and `sounds` (as heard)."""

    chars: tuple[str, ...]  # CJK unigrams and bigrams, English stems
    sounds: tuple[str, ...]  # the same terms with each CJK character replaced by its syllable
    syllables: tuple[str, ...]  # the whole text as a sequence of syllables / English stems


@lru_cache(maxsize=65536)
def tokenize(text: str) -> Tokens:
    """Terms of an already-normalised text: unigrams minus stop characters, bigrams, stems."""
    units: list[tuple[str, str, bool, bool]] = []  # (written, sound, is_cjk, is_stop)
    for match in _TOKEN_RE.finditer(text):
        tok = match.group()
        if len(tok) == 1 and _CJK_RE.match(tok):
            units.append((tok, jyutping(tok), True, tok in STOP_CHARS))
        elif tok.isdigit():
            units.append(("", "", False, True))  # numbers are looked up, not searched
        else:
            word = stem(tok)
            units.append((word, word, False, tok in EN_STOPWORDS or word in EN_STOPWORDS))
    chars: list[str] = []
    sounds: list[str] = []
    for i, (written, sound, is_cjk, is_stop) in enumerate(units):
        if written and not is_stop:
            chars.append(written)
            sounds.append(sound)
        if is_cjk and i + 1 < len(units):
            nxt = units[i + 1]
            if nxt[2] and not (is_stop and nxt[3]):
                chars.append(written + nxt[0])
                sounds.append(sound + " " + nxt[1])
    syllables = [u[1] for u in units if u[1]]
    # interned: a KB's index repeats each term thousands of times, and pickle then stores it once
    return Tokens(
        tuple(map(sys.intern, chars)),
        tuple(map(sys.intern, sounds)),
        tuple(map(sys.intern, syllables)),
    )


def _spoken_digits(numeral: str) -> str:
    """A Chinese numeral as digits, keeping leading zeros of digit strings (零零七 = 007)."""
    if any(ch in CHINESE_UNITS for ch in numeral):
        value = chinese_to_int(numeral)
        return numeral if value is None else str(value)
    return "".join(str(CHINESE_DIGITS[ch]) for ch in numeral)


def read_numbers(text: str) -> str:
    """Replace spoken Chinese numbers with digits: runs of 4+ digits, and positional numbers.

    Short digit runs are left alone because they are usually words (一齊, 三星, 一下).
    """
    text = _DIGITS_RUN_RE.sub(lambda m: _spoken_digits(m.group()), text)
    return _POSITIONAL_RE.sub(lambda m: _spoken_digits(m.group()), text)


def extract_order_id(text: str) -> str | None:
    """The order number spoken in an utterance (`訂單號碼八五三二一`, `單號 A 一二三四五`), if any.

    Letters are upper-cased and spaces removed: both examples give `85321` and `A12345`.
    """
    text = unicodedata.normalize("NFKC", text)
    text = re.sub(r"[零〇一二三四五六七八九兩]+", lambda m: _spoken_digits(m.group()), text)
    match = _ORDER_CUE_RE.search(text) or _BARE_ORDER_RE.search(text)
    if not match:
        return None
    return re.sub(r"\s+", "", match.group(1)).upper()


def english_ratio(text: str) -> tuple[int, int]:
    """(English words, CJK characters) in a text, to tell which language the caller speaks."""
    return len(_EN_WORD_RE.findall(text)), len(_CJK_RE.findall(text))


__all__ = [
    "Tokens",
    "normalize",
    "tokenize",
    "jyutping",
    "stem",
    "to_hk",
    "read_numbers",
    "extract_order_id",
    "english_ratio",
]
