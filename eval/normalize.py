"""Cantonese text normalisation for scoring: the same composed steps on reference and hypothesis.

With the default `NormalizeOptions`, in this order:
1. Unicode NFC, then full-width forms to half-width (ＡＢＣ１２３，→ ABC123,; ideographic space
   to space).
2. OpenCC to Hong Kong Traditional (s2hk), so a Simplified hypothesis is not an error. With
   `fold_variants`, text first goes to Simplified (hk2s) and back, so Traditional variants such as
   裡/裏, 綫/線 and 係/系 compare equal; the cost is that characters which merge in Simplified
   (髮/發, 乾/幹) are only as distinct as OpenCC's phrase table makes them.
3. Latin letters lower-cased.
4. Chinese numerals to Arabic digits (`eval.numerals`: 八五三二 -> 8532, 一百蚊 -> 100蚊).
5. Punctuation and symbols (Unicode categories P* and S*, CJK and ASCII) become spaces; an
   apostrophe inside an English word is dropped (don't -> dont).
6. Whitespace: a space survives only between two Latin letters/digits ("my account" stays two
   words for MER); spaces touching a Han character go; runs of spaces collapse.

The result is a string with no leading/trailing space; CER ignores its spaces, MER and WER use them.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass
from functools import lru_cache

import jiwer

from voice.data.chinese import converter
from voice.numerals import numbers_to_digits

NORMALIZER_VERSION = 1  # bump when a step changes, so figures from different versions are not mixed
NUMBER_MODES = ("digits", "keep")  # Chinese numerals to Arabic digits, or leave them as written

_FULLWIDTH_OFFSET = 0xFEE0  # U+FF01..U+FF5E minus this is U+0021..U+007E
_APOSTROPHE = re.compile(r"(?<=[A-Za-z])['’](?=[A-Za-z])")
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True)
class NormalizeOptions:
    """Which normalisation steps run; the defaults are the project's published scoring."""

    fullwidth_to_halfwidth: bool = True  # ＡＢＣ１２３ -> ABC123, ideographic space -> space
    to_hk_traditional: bool = True  # OpenCC s2hk on both sides
    fold_variants: bool = True  # via Simplified first (hk2s), so 裡/裏, 綫/線 compare equal
    lowercase: bool = True  # Latin letters lower-cased
    numbers: str = "digits"  # "digits": Chinese numerals to Arabic; "keep": leave as written
    remove_punctuation: bool = True  # Unicode P* and S* characters removed (CJK and ASCII)
    collapse_whitespace: bool = True  # spaces kept only between Latin words, single

    def __post_init__(self) -> None:
        if self.numbers not in NUMBER_MODES:
            raise ValueError(f"numbers must be one of {NUMBER_MODES}, not {self.numbers!r}")

    def describe(self) -> str:
        """One line naming the version and every option, for reports."""
        fields = ", ".join(f"{k}={v}" for k, v in asdict(self).items())
        return f"normalizer v{NORMALIZER_VERSION}: {fields}"


def is_han(char: str) -> bool:
    """Whether `char` is a CJK ideograph (including the extension blocks Cantonese uses)."""
    code = ord(char)
    return (
        0x4E00 <= code <= 0x9FFF  # CJK Unified Ideographs
        or 0x3400 <= code <= 0x4DBF  # Extension A
        or 0x20000 <= code <= 0x3134F  # Extensions B-G (𠮶, 𡃁 ...)
        or 0xF900 <= code <= 0xFAFF  # Compatibility Ideographs
        or code == 0x3007  # 〇
    )


class ToHalfWidth(jiwer.AbstractTransform):
    """NFC, then full-width ASCII forms to ASCII and the ideographic space to a space."""

    def process_string(self, s: str) -> str:
        s = unicodedata.normalize("NFC", s)
        return "".join(
            chr(ord(c) - _FULLWIDTH_OFFSET)
            if 0xFF01 <= ord(c) <= 0xFF5E
            else (" " if c == "\u3000" else c)
            for c in s
        )


class ToHongKongTraditional(jiwer.AbstractTransform):
    """OpenCC to Hong Kong Traditional; with `fold_variants`, through Simplified first."""

    def __init__(self, fold_variants: bool = True):
        self.fold_variants = fold_variants

    def process_string(self, s: str) -> str:
        if self.fold_variants:
            s = converter("hk2s").convert(s)
        return converter("s2hk").convert(s)


class NumbersToDigits(jiwer.AbstractTransform):
    """Chinese numerals to Arabic digits, by the rule in `eval.numerals`."""

    def process_string(self, s: str) -> str:
        return numbers_to_digits(s)


class RemoveAllPunctuation(jiwer.AbstractTransform):
    """Unicode punctuation and symbols (CJK and ASCII) to spaces; in-word apostrophes dropped."""

    def process_string(self, s: str) -> str:
        s = _APOSTROPHE.sub("", s)
        return "".join(" " if unicodedata.category(c)[0] in "PS" else c for c in s)


class CollapseSpaces(jiwer.AbstractTransform):
    """Keep one space only between two non-Han word characters (Latin words, digits)."""

    def process_string(self, s: str) -> str:
        words = _SPACES.split(s.strip())
        out = words[0] if words else ""
        for word in words[1:]:
            if not word:
                continue
            if out and _wordlike(out[-1]) and _wordlike(word[0]):
                out += " "
            out += word
        return out


def _wordlike(char: str) -> bool:
    return char.isalnum() and not is_han(char)


def build_normalizer(options: NormalizeOptions) -> jiwer.Compose:
    """The jiwer `Compose` of the steps `options` turns on, in the documented order."""
    return _build(options)


@lru_cache(maxsize=16)
def _build(options: NormalizeOptions) -> jiwer.Compose:
    steps: list[jiwer.AbstractTransform] = []
    if options.fullwidth_to_halfwidth:
        steps.append(ToHalfWidth())
    if options.to_hk_traditional:
        steps.append(ToHongKongTraditional(options.fold_variants))
    if options.lowercase:
        steps.append(jiwer.ToLowerCase())
    if options.numbers == "digits":
        steps.append(NumbersToDigits())
    if options.remove_punctuation:
        steps.append(RemoveAllPunctuation())
    if options.collapse_whitespace:
        steps.append(CollapseSpaces())
    else:
        steps.append(jiwer.Strip())
    return jiwer.Compose(steps)


def normalize(text: str, options: NormalizeOptions | None = None) -> str:
    """`text` normalised for scoring by the steps `options` (default: all) turns on."""
    return build_normalizer(options or NormalizeOptions())(text)


__all__ = [
    "NORMALIZER_VERSION",
    "NormalizeOptions",
    "normalize",
    "build_normalizer",
    "is_han",
    "ToHalfWidth",
    "ToHongKongTraditional",
    "NumbersToDigits",
    "RemoveAllPunctuation",
    "CollapseSpaces",
]
