"""Chinese characters: conversion to Hong Kong Traditional (OpenCC, one converter per table for
the process) and checks for Simplified forms and characters outside Traditional Chinese."""

from __future__ import annotations

import functools
import unicodedata

# Punctuation a Traditional-Chinese transcript may carry (full-width and ASCII).
PUNCTUATION = set("，。？！、；：「」『』（）《》〈〉…—～·,.?!;:'\"()-–&/%$+")


# Characters OpenCC's s2t/s2hk change although Hong Kong Traditional writing uses them as they are
# (Cantonese words 晒 吓 郁 咸, surnames 余 周, place names 葵涌, and chars valid in both scripts).
TRADITIONAL_TOO = set(
    "晒吓喂咸郁游周糍峰伙准仆干合床余群斗回困局杯出涌杰表咤厘借戚后里面只系台松范志云谷丑折"
    "卷制划占症朴致征于才借冬咖啡家"
)


@functools.cache
def converter(config: str):
    """The OpenCC converter for `config` ("s2hk", "hk2s", ...), built once."""
    import opencc

    return opencc.OpenCC(config)


def to_hk(text: str) -> str:
    """Convert Simplified (or mixed) Chinese to Hong Kong Traditional characters (OpenCC s2hk)."""
    return converter("s2hk").convert(text)


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (basic, extensions A-G, compatibility)."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x3134F
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def simplified_chars(text: str) -> list[str]:
    """Characters of `text` that are Simplified forms: changed by both s2t and s2hk in context.

    Requiring both conversions to change a character keeps Hong Kong variants that OpenCC's
    mainland tables treat differently (揾, 衞, 羣) from being flagged; TRADITIONAL_TOO lists
    characters both scripts use, which OpenCC would change (唔該晒 -> 唔該曬).
    """
    if not any(is_cjk(ch) for ch in text):
        return []
    hk = converter("s2hk").convert(text)
    tw = converter("s2t").convert(text)
    if len(hk) != len(text) or len(tw) != len(text):
        return sorted(set(text) - set(hk) - TRADITIONAL_TOO)
    found = {c for c, h, t in zip(text, hk, tw, strict=True) if c != h and c != t}
    return sorted(found - TRADITIONAL_TOO)


def convert_simplified(text: str) -> tuple[str, list[str]]:
    """Replace the Simplified characters of `text` by their HK forms; returns (text, replaced).

    Only the flagged characters change, so Cantonese characters such as 晒 stay as written.
    """
    found = simplified_chars(text)
    if not found:
        return text, []
    hk = to_hk(text)
    if len(hk) != len(text):
        return hk, found
    flagged = set(found)
    return "".join(h if c in flagged else c for c, h in zip(text, hk, strict=True)), found


def foreign_chars(text: str) -> list[str]:
    """Characters that are neither CJK, ASCII letters/digits, spaces nor common punctuation."""
    bad = set()
    for ch in text:
        if is_cjk(ch) or ch in PUNCTUATION or ch == " ":
            continue
        if ch.isascii() and ch.isalnum():
            continue
        bad.add(ch)
    return sorted(bad)


def describe_chars(chars: list[str]) -> str:
    """`['们', '\\x07']` -> `们 U+4EEC, U+0007 (BEL)` for problem messages."""
    parts = []
    for ch in chars:
        if ch.isprintable() and not ch.isspace():
            parts.append(ch)
        else:
            name = unicodedata.name(ch, "") or "control"
            parts.append(f"U+{ord(ch):04X} ({name})")
    return ", ".join(parts)


def normalize_text(text: str) -> str:
    """Strip a transcript and collapse runs of whitespace into one space (NFC)."""
    return " ".join(unicodedata.normalize("NFC", text).split())
