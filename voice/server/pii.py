"""Masking of personal data in free text: e-mail, HKID, card, phone and other long numbers.

Used on log messages only: the call store and the answer engine (its CRM order lookup included)
always see the transcript as spoken. Ids and timestamps are never passed through here; they travel
in their own log fields (see logs.py).

What stays readable, by design: dates (2026-11-25, 25/11/2026), times (10:30:00.123), IPv4
addresses, amounts and numbers of up to 7 digits, so order ids such as `A12345` or `853210` can
still be followed in logs. An 8-digit order id cannot be told from a phone number, nor `A1234567`
from an HKID without brackets: those are masked.
"""

from __future__ import annotations

import re

# Matching runs on a "folded" copy of the text with one character per character of the original,
# so a match's span can be replaced in the original: full-width forms (Ａ１（７）＠．) become ASCII,
# the ideographic space a space, dash variants a hyphen, and the Chinese digits that ASR writes
# for numbers read digit by digit (九一二三...) become 0-9.
_FOLD = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}  # full-width ASCII
_FOLD[0x3000] = " "  # ideographic space
_FOLD.update(dict.fromkeys((0x2010, 0x2011, 0x2012, 0x2013, 0x2014, 0x2212), "-"))  # dashes, minus
_FOLD.update({ord(c): str(i) for i, c in enumerate("零一二三四五六七八九")})
_FOLD[ord("〇")] = "0"

# Between two digits: nothing, one or two spaces (`9123  4567`), or a dash or dot with optional
# spaces (`9123-4567`, `4111.1111...`). Each form matches one way only, so no regex backtracks
# exponentially on long runs of spaced digits.
_SEP = r"(?:[ \t]{1,2}|[ \t]?[-.][ \t]?)?"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# Left as they are (and hidden from the number patterns below): dates, times, IPv4 addresses.
_KEEP = (
    re.compile(r"(?<!\d)(?:19|20)\d\d([-/.])(?:0?[1-9]|1[0-2])\1(?:0?[1-9]|[12]\d|3[01])(?!\d)"),
    re.compile(r"(?<!\d)(?:0?[1-9]|[12]\d|3[01])([-/.])(?:0?[1-9]|1[0-2])\1(?:19|20)\d\d(?!\d)"),
    re.compile(r"(?<!\d)(?:[01]?\d|2[0-3]):[0-5]\d(?::[0-5]\d(?:\.\d+)?)?(?!\d)"),
    re.compile(r"(?<![\d.])(?:\d{1,3}\.){3}\d{1,3}(?!\d)"),
)
# HKID: 1-2 letters, 6 digits, a check digit or A, bracketed or not (spoken: 括號七).
_HKID = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{1,2} ?\d{6} ?"
    r"(?:\( ?[0-9A] ?\)|(?:括號|括弧)? ?[0-9A](?![A-Za-z0-9]))",
    re.IGNORECASE,
)
_CARD = re.compile(rf"(?<!\d)\d(?:{_SEP}\d){{12,18}}(?!\d)")  # 13-19 digits
_PHONE = re.compile(rf"(?<![\d+])(?:\+?852{_SEP})?[2-9](?:{_SEP}\d){{7}}(?!\d)")  # HK: 8 digits
_LONG_NUMBER = re.compile(rf"(?<!\d)\d(?:{_SEP}\d){{7,}}(?!\d)")  # anything else of 8+ digits

_MASKS = ((_HKID, "[HKID]"), (_CARD, "[CARD]"), (_PHONE, "[PHONE]"), (_LONG_NUMBER, "[NUMBER]"))


def redact(text: str) -> str:
    """`text` with e-mail addresses, HKIDs, card, phone and other 8+ digit numbers masked."""
    folded = text.translate(_FOLD)
    text, folded = _replace(_EMAIL, "[EMAIL]", text, folded)
    for pattern in _KEEP:  # blank them in the folded copy only: no number pattern can reach in
        folded = pattern.sub(lambda m: "\0" * len(m.group()), folded)
    for pattern, label in _MASKS:
        text, folded = _replace(pattern, label, text, folded)
    return text


def _replace(pattern: re.Pattern, label: str, text: str, folded: str) -> tuple[str, str]:
    """Replace `pattern`'s matches in `folded` by `label`, at the same places in `text` too."""
    spans = [m.span() for m in pattern.finditer(folded)]
    for start, end in reversed(spans):
        text = text[:start] + label + text[end:]
        folded = folded[:start] + label + folded[end:]
    return text, folded


__all__ = ["redact"]
