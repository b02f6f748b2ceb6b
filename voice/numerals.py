"""Chinese numerals to Arabic digits, so 八五三二 / 8532 and 一百蚊 / 100蚊 compare equal.

The rule (applied identically to reference and hypothesis, so what matters is that it is
deterministic and local, not that it is perfect):

- A *numeral run* is a maximal run of Chinese numerals (零〇一二兩三四五六七八九), units
  (十廿卅百千萬億) and Arabic digits that holds at least one Chinese numeral or unit.
- A run is converted when it is a number in context: it has two or more Chinese numeral/unit
  characters (八五三二, 一百, 廿三; 廿 and 卅 count as two), or it touches an Arabic digit (3千,
  100萬), or it is followed by a measure/currency word (`MEASURE_WORDS`: 一個, 兩蚊, 三號,
  五歲, 十分鐘 ...), or it is preceded by an ordinal/weekday prefix (`PREFIXES`: 第一, 星期三,
  禮拜五) or by 點 after a number (三點五).
  Otherwise it is left alone, so 一齊, 一定, 統一, 十分好 keep their 一/十.
- A run without units is a digit string, read digit by digit: 八五三二 -> 8532, 二零二四 -> 2024,
  零一 -> 01. A run with units is a quantity: 一百 -> 100, 三千五百 -> 3500, 一萬二千 -> 12000,
  兩百 -> 200, 廿三 -> 23, 卅 -> 30, 一百零五 -> 105, with the Cantonese abbreviations where a
  trailing digit takes the next lower unit: 三千五 -> 3500, 一萬二 -> 12000, 百二 -> 120.
- A decimal point between digits is spoken 點, so 3.5 -> 3點5 and 三點五 -> 3點5 (in Cantonese
  三點五 may also be the time 3:25; both sides get the same form either way). Thousands
  separators go (1,000 -> 1000) and a percentage is written as spoken (50% -> 百分之50).
- Limits: malformed runs (三十五六 "thirty-five or -six", 十十) are left as written; idioms in
  `KEEP_WORDS` (萬一, 一一, 三三兩兩, 一五一十) are never converted; clock times (3:30 vs
  三點半), money signs ($100 vs 一百蚊) and fractions (三分之一) are not reconciled.
"""

from __future__ import annotations

import re

DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "兩": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
SMALL_UNITS = {"十": 10, "百": 100, "千": 1000}  # multiply the digit before them
BIG_UNITS = {"萬": 10_000, "万": 10_000, "億": 100_000_000, "亿": 100_000_000}  # close a section
CONTRACTIONS = {"廿": "二十", "卅": "三十"}  # 廿三 = 二十三, 卅 = 三十
NUMERAL_CHARS = "".join(DIGITS) + "".join(SMALL_UNITS) + "".join(BIG_UNITS) + "".join(CONTRACTIONS)

# Words after a numeral that make it a number (longest first where one is a prefix of another).
MEASURE_WORDS = (
    "分鐘", "個月", "蚊", "元", "毫", "仙", "個", "號", "點", "時", "月", "日", "年", "歲", "秒",
    "次", "位", "張", "部", "間", "樓", "期", "粒", "條", "隻", "份", "件", "本", "杯", "晚",
    "週", "周", "倍", "成", "折", "%",
)  # fmt: skip
# Words before a numeral that make it a number.
PREFIXES = ("第", "星期", "禮拜", "週", "周", "百分之")
# Words containing numerals that are never numbers.
KEEP_WORDS = ("萬一", "一一", "三三兩兩", "一五一十")

_RUN = re.compile(f"[{NUMERAL_CHARS}0-9]+")
_DECIMAL_POINT = re.compile(r"(?<=\d)\.(?=\d)")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_PERCENT = re.compile(r"(\d+(?:點\d+)?)\s*%")


def chinese_to_int(run: str) -> int | None:
    """Value of a quantity like 三千五百 / 一萬二 / 3千5 (Arabic digits allowed); None if malformed."""
    for short, long in CONTRACTIONS.items():
        run = run.replace(short, long)
    tokens = re.findall(r"\d+|.", run)
    total = 0  # completed 億/萬 sections
    section = 0  # value below the current big unit
    digit: int | None = None  # a digit waiting for its unit
    last_unit = 0  # the unit just before `digit`, for abbreviations like 三千五
    after_zero = False  # 零 cancels the abbreviation: 一百零五 = 105, not 150
    for tok in tokens:
        if tok.isdigit() or tok in DIGITS:
            value = int(tok) if tok.isdigit() else DIGITS[tok]
            if digit is not None:
                return None  # two digits in a row inside a quantity: 三十五六
            if value == 0 and not tok.isdigit():
                after_zero, last_unit = True, 0
                continue
            digit = value
        elif tok in SMALL_UNITS:
            if digit is None:
                if section and not after_zero:
                    return None  # a unit with no digit in the middle: 十十
                digit = 1  # 十二, 百二, 一千零十
            section += digit * SMALL_UNITS[tok]
            digit, last_unit, after_zero = None, SMALL_UNITS[tok], False
        elif tok in BIG_UNITS:
            value = section + (digit or 0)
            if tok in ("億", "亿"):
                total = (total + (value or 1)) * BIG_UNITS[tok]
            else:
                total += (value or 1) * BIG_UNITS[tok]
            section, digit, last_unit, after_zero = 0, None, BIG_UNITS[tok], False
        else:
            return None
    if digit is not None:
        if last_unit >= 10 and not after_zero:
            digit *= last_unit // 10  # 三千五 = 3500, 一萬二 = 12000, 二十五 = 25
        section += digit
    return total + section


def _convert_run(run: str) -> str | None:
    """Arabic form of one numeral run, or None when it cannot be read."""
    if not any(c in SMALL_UNITS or c in BIG_UNITS or c in CONTRACTIONS for c in run):
        return "".join(str(DIGITS[c]) if c in DIGITS else c for c in run)  # digit string
    value = chinese_to_int(run)
    return None if value is None else str(value)


def _is_number(text: str, start: int, end: int) -> bool:
    """Whether the numeral run text[start:end] reads as a number in its context."""
    run = text[start:end]
    chinese = sum(c in NUMERAL_CHARS for c in run) + sum(c in CONTRACTIONS for c in run)
    if chinese == 0 or run in KEEP_WORDS:
        return False
    if chinese >= 2 or chinese < len(run):
        return True
    after = text[end:]
    if after.startswith(MEASURE_WORDS):
        return True
    before = text[:start]
    if before.endswith(PREFIXES):
        return True
    return before.endswith("點") and len(before) >= 2 and _is_numeral(before[-2])


def _is_numeral(char: str) -> bool:
    return char in NUMERAL_CHARS or char.isdigit()


def numbers_to_digits(text: str) -> str:
    """Rewrite the Chinese numbers in `text` as Arabic digits (see the module docstring)."""
    text = _THOUSANDS.sub("", text)
    text = _DECIMAL_POINT.sub("點", text)
    out: list[str] = []
    pos = 0
    for m in _RUN.finditer(text):
        start, end = m.span()
        if not _is_number(text, start, end):
            continue
        converted = _convert_run(m.group())
        if converted is None:
            continue
        out.append(text[pos:start])
        out.append(converted)
        pos = end
    out.append(text[pos:])
    return _PERCENT.sub(r"百分之\1", "".join(out))


__all__ = ["chinese_to_int", "numbers_to_digits", "MEASURE_WORDS", "PREFIXES", "KEEP_WORDS"]
