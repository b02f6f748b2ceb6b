"""Numbers as Hong Kong callers say them, written in Chinese numerals (what espeak-ng yue reads).

espeak-ng yue reads a digit string such as 12345 as one cardinal number (一萬二千...), never digit
by digit, so transcripts write every number the way it is spoken: order and phone numbers digit by
digit (八五三二一), amounts and counts as cardinals (三百五十蚊), times colloquially (兩點三個字).
"""

from __future__ import annotations

import random

DIGITS = "零一二三四五六七八九"
WEEKDAYS = ("一", "二", "三", "四", "五", "六", "日")


def digits(text: str) -> str:
    """'85321' -> '八五三二一' (letters are kept, as callers spell them in English)."""
    return "".join(DIGITS[int(c)] if c.isdigit() else c for c in text)


def _below_10000(n: int) -> str:
    out = []
    zero = False
    for value, unit in ((1000, "千"), (100, "百"), (10, "十"), (1, "")):
        d = n // value % 10
        if d == 0:
            zero = bool(out)
            continue
        if zero:
            out.append("零")
            zero = False
        out.append(DIGITS[d] + unit)
    return "".join(out)


def cardinal(n: int, liang: bool = True) -> str:
    """Cantonese cardinal, 0 <= n < 10**8: 350 -> 三百五十, 2000 -> 兩千, 12 -> 十二.

    `liang` uses 兩 for a leading two before 百/千/萬 and for 2 alone (兩個, 兩蚊), as spoken.
    """
    if not 0 <= n < 10**8:
        raise ValueError(f"cardinal() handles 0 <= n < 10**8, got {n}")
    if n == 0:
        return "零"
    if n == 2 and liang:
        return "兩"
    high, low = divmod(n, 10_000)
    text = ""
    if high:
        text = _below_10000(high) + "萬"
        if low and low < 1000:
            text += "零"
    if low:
        text += _below_10000(low)
    if 10 <= n < 20:
        text = text.replace("一十", "十", 1)
    if liang:
        for unit in "百千萬":
            if text.startswith("二" + unit):
                text = "兩" + text[1:]
    return text


def money(rng: random.Random, low: int = 20, high: int = 5000) -> str:
    """An amount said aloud: 三百五十蚊, 三百五蚊, 八十九蚊五毫, 一千二百蚊."""
    dollars = rng.randint(low, high)
    if dollars >= 100 and rng.random() < 0.6:
        dollars = dollars // 10 * 10
    text = cardinal(dollars)
    if rng.random() < 0.3 and len(text) >= 3 and text.endswith("十") and text[-3] in "百千":
        text = text[:-1]  # 三百五十 -> 三百五, as callers shorten it
    if dollars < 200 and rng.random() < 0.3:
        return f"{text}蚊{DIGITS[rng.randint(1, 9)]}毫"
    return f"{text}蚊"


def order_number(rng: random.Random) -> str:
    """An order or reference number: optional English letters, then digits said one by one."""
    prefix = rng.choice(["", "", "A", "B", "HK", "R", "T", "W"])
    number = "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(5, 8)))
    spoken = digits(number)
    return f"{prefix} {spoken}" if prefix else spoken


def phone_number(rng: random.Random) -> str:
    """A Hong Kong mobile number said in two groups of four: 九八七六 五四三二."""
    first = rng.choice("4569") + "".join(str(rng.randint(0, 9)) for _ in range(3))
    second = "".join(str(rng.randint(0, 9)) for _ in range(4))
    sep = rng.choice(["", "，"])
    return digits(first) + sep + digits(second)


def date(rng: random.Random) -> str:
    """A date: 三月十二號, 十二號, 下個禮拜三, 聽日."""
    kind = rng.random()
    if kind < 0.45:
        return (
            f"{cardinal(rng.randint(1, 12), liang=False)}月{cardinal(rng.randint(1, 31), False)}號"
        )
    if kind < 0.7:
        return f"{cardinal(rng.randint(1, 31), liang=False)}號"
    if kind < 0.9:
        pre = rng.choice(["", "下個", "呢個", "上個"])
        return f"{pre}{rng.choice(['星期', '禮拜'])}{rng.choice(WEEKDAYS)}"
    return rng.choice(["今日", "聽日", "後日", "琴日", "前日", "尋日"])


def clock_time(rng: random.Random) -> str:
    """A time of day: 下晝三點半, 朝早十點三個字, 夜晚八點."""
    part = rng.choice(["朝早", "上晝", "晏晝", "下晝", "夜晚", ""])
    hour = rng.randint(1, 12)
    minute = rng.choice(
        ["", "", "半", "一個字", "兩個字", "三個字", "九個字", "十五分", "四十五分"]
    )
    return f"{part}{cardinal(hour)}點{minute}"


def count(rng: random.Random, low: int, high: int) -> str:
    """A small count with 兩 for two: 兩, 三, 十二."""
    return cardinal(rng.randint(low, high))


__all__ = [
    "cardinal",
    "clock_time",
    "count",
    "date",
    "digits",
    "money",
    "order_number",
    "phone_number",
]
