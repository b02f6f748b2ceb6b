"""The caller's lines for one synthetic call: topic templates with slots plus HKCanCor chat.

Splits are by speaker (the corpus decides that). HKCanCor utterances are also held out by sentence:
each hashes into train/dev/test (about 80/10/10) and a call only draws from its own split's pool, so
dev and test chat is never heard in training. The call-centre templates are shared by every split,
as callers to one company reuse the same phrasings; their slots (numbers, names, dates) are filled
afresh for every line. `ScriptOptions.hold_out_templates` holds the templates out too, for an
evaluation of phrasings the model has never seen.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from voice.data.synth import numbers as num
from voice.data.synth.templates import CLOSINGS, FILLERS, GREETINGS, IDENTITY, TOPICS, WORDS

SPLIT_BUCKETS = ("train",) * 8 + ("dev", "test")  # hash % 10 -> split: 80/10/10

_ALT = re.compile(r"\[([^\[\]]*)\]")
_SLOT = re.compile(r"\{(\w+)\}")
_CJK_LATIN = re.compile(r"(?<=[\u3400-\u9fff])(?=[A-Za-z])|(?<=[A-Za-z])(?=[\u3400-\u9fff])")


def _words(name: str) -> Callable[[random.Random], str]:
    return lambda rng: rng.choice(WORDS[name])


SLOTS: dict[str, Callable[[random.Random], str]] = {
    "amount": num.money,
    "plan_price": lambda rng: f"{num.cardinal(rng.choice(range(78, 399, 10)))}蚊",
    "order": num.order_number,
    "phone": num.phone_number,
    "date": num.date,
    "time": num.clock_time,
    "last4": lambda rng: num.digits(f"{rng.randint(0, 9999):04d}"),
    "n_days": lambda rng: num.count(rng, 2, 14),
    "n_times": lambda rng: num.count(rng, 2, 8),
    "n_items": lambda rng: num.count(rng, 2, 6),
    "n_months": lambda rng: num.count(rng, 1, 23),
    "n_years": lambda rng: num.count(rng, 2, 15),
    "n_floor": lambda rng: num.count(rng, 2, 40),
    "n_street": lambda rng: num.count(rng, 1, 388),
    "n_mb": lambda rng: num.count(rng, 2, 95),
    "minutes": lambda rng: num.count(rng, 3, 45),
    "gb": lambda rng: f"{num.count(rng, 2, 100)}GB",
    "fullname": lambda rng: rng.choice(WORDS["surname"]) + rng.choice(WORDS["given"]),
    **{name: _words(name) for name in WORDS},
}


def tidy(text: str) -> str:
    """One space between English words and Chinese, none inside Chinese or before punctuation."""
    text = _CJK_LATIN.sub(" ", text)
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"(?<=[^A-Za-z0-9]) (?=[^A-Za-z0-9])", "", text)
    return re.sub(r" (?=[，。？！、])|(?<=[，。？！、]) ", "", text)


def render(template: str, rng: random.Random) -> str:
    """Fill a template: pick one alternative of each `[a|b]`, then fill each `{slot}`."""
    text = _ALT.sub(lambda m: rng.choice(m.group(1).split("|")), template)
    text = _SLOT.sub(lambda m: SLOTS[m.group(1)](rng), text)
    return tidy(text)


def bucket(text: str) -> str:
    """The split a template or sentence belongs to, stable across runs and machines."""
    digest = hashlib.sha1(text.encode("utf-8")).digest()
    return SPLIT_BUCKETS[int.from_bytes(digest[:8], "big") % len(SPLIT_BUCKETS)]


def partition(items: Iterable[str]) -> dict[str, list[str]]:
    """Split items by `bucket`; with 3+ items every split gets at least one (moved from train)."""
    items = list(dict.fromkeys(items))
    pools: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for item in items:
        pools[bucket(item)].append(item)
    if len(items) >= 3:
        for split in ("dev", "test"):
            if not pools[split]:
                donor = max(pools, key=lambda s: len(pools[s]))
                pools[split].append(pools[donor].pop())
    if len(items) < 3:  # too few to hold out: shared by all splits
        pools = {split: list(items) for split in pools}
    return pools


def shared(items: Iterable[str]) -> dict[str, list[str]]:
    """The same items in every split."""
    items = list(dict.fromkeys(items))
    return {split: items for split in ("train", "dev", "test")}


def template_chars() -> set[str]:
    """Every character a rendered template can contain (for the pronounceability check)."""
    chars = set(num.DIGITS + "".join(num.WEEKDAYS) + "百千萬兩蚊毫月號星期禮拜點半個字分")
    chars |= set("朝早上晝晏晝下晝夜晚今日聽日後日琴日前日尋日下個呢個上個")
    groups = [GREETINGS, IDENTITY, FILLERS, CLOSINGS]
    groups += [t for topic in TOPICS.values() for t in topic.values()]
    for group in groups:
        for template in group:
            chars |= set(template)
    for words in WORDS.values():
        chars |= set("".join(words))
    return chars


@dataclass(frozen=True)
class ScriptOptions:
    """How a call's lines are put together."""

    min_utterances: int = 4  # the caller's utterances per call
    max_utterances: int = 12
    greeting_rate: float = 0.6  # chance the call opens with a greeting of its own
    identity_rate: float = 0.6  # chance the caller gives a number or name
    chat_rate: float = 0.3  # chance of each of up to two HKCanCor utterances (small talk)
    filler_rate: float = 0.35  # chance of each of up to two short replies to the agent
    hold_out_templates: bool = False  # True: templates hash into splits like the chat does


class ScriptWriter:
    """Writes the caller's lines for calls of a given split from that split's sentence pools."""

    def __init__(self, chat: Iterable[str], options: ScriptOptions = ScriptOptions()):
        self.options = options
        pool = partition if options.hold_out_templates else shared
        self.generic = {
            name: pool(group)
            for name, group in (
                ("greeting", GREETINGS),
                ("identity", IDENTITY),
                ("filler", FILLERS),
                ("closing", CLOSINGS),
            )
        }
        self.topics = {
            topic: {role: pool(group) for role, group in roles.items()}
            for topic, roles in TOPICS.items()
        }
        self.chat = partition(chat)

    def call(self, rng: random.Random, split: str) -> tuple[str, list[str]]:
        """(topic, lines) for one call in `split`: greeting, matter, details, chat, closing."""
        opts = self.options
        topic = rng.choice(sorted(self.topics))
        pools = self.topics[topic]
        total = rng.randint(opts.min_utterances, opts.max_utterances)
        head = [self._say("greeting", split, rng)] if rng.random() < opts.greeting_rate else []
        head.append(render(rng.choice(pools["intro"][split]), rng))
        budget = total - len(head) - 1  # lines between the matter and the closing, >= 1
        fixed = [self._say("identity", split, rng)] if rng.random() < opts.identity_rate else []
        extras = []
        for _ in range(2):
            if rng.random() < opts.chat_rate:
                extras.append(self._chat(split, rng))
            if rng.random() < opts.filler_rate:
                extras.append(self._say("filler", split, rng))
        extras = extras[: max(0, budget - len(fixed) - 1)]
        fixed = fixed[: max(0, budget - 1)]
        details = pools["detail"][split]
        n_detail = min(budget - len(fixed) - len(extras), len(details))
        middle = fixed + [render(t, rng) for t in rng.sample(details, n_detail)]
        while len(middle) + len(extras) < budget:  # held-out pools can be small: top up
            extras.append(
                self._chat(split, rng) if rng.random() < 0.6 else self._filler(rng, split)
            )
        for extra in extras:
            middle.insert(rng.randint(1 if middle else 0, len(middle)), extra)
        return topic, head + middle + [self._say("closing", split, rng)]

    def _chat(self, split: str, rng: random.Random) -> str:
        pool = self.chat[split] or self.generic["filler"][split]
        return rng.choice(pool) if self.chat[split] else render(rng.choice(pool), rng)

    def _filler(self, rng: random.Random, split: str) -> str:
        return self._say("filler", split, rng)

    def _say(self, group: str, split: str, rng: random.Random) -> str:
        return render(rng.choice(self.generic[group][split]), rng)


__all__ = [
    "SLOTS",
    "ScriptOptions",
    "ScriptWriter",
    "bucket",
    "partition",
    "render",
    "shared",
    "tidy",
]
