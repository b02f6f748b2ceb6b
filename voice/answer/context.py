"""What an answer session carries over between a customer's conversations, and back-references.

A customer who wrote on WhatsApp and then calls (or the other way round) continues the same
session: the reply language, the run of unresolved turns (so escalation counts across channels),
the order being discussed and the last topics asked about. `CustomerContext` is that state, a
frozen value the session is started from and gives back after every turn
(`AnswerSession.context()`); the server keeps it per customer (voice/server/customers.py).

A *back-reference* ("我頭先喺WhatsApp問過", "之前問過", "I asked earlier on WhatsApp") names no
topic of its own: the session answers it with the last unresolved topic, else the last topic.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from voice.types import YUE

MAX_TOPICS = 5  # topics kept per customer, the newest last

# When the customer points back at something said before: a time word, then within a few
# characters a verb of asking / writing (or a channel); or a channel next to "asked" (ASR may
# mishear the time word: "我條先係 WhatsApp 問過"); or the English equivalents.
_CHANNEL_ZH = r"(whatsapp|wechat|微信|網上|online|短訊|電郵|email)"
_ASKED_ZH = r"(問過|問咗|講過|講咗|查過|提過|send過|發過|留過言)"
_BACK_ZH = re.compile(
    r"(頭先|啱先|啱啱|之前|先前|上次|早前|早啲|琴日|尋日|剛才|剛剛|已經)"
    rf".{{0,12}}?({_ASKED_ZH[1:-1]}|留言|問|{_CHANNEL_ZH[1:-1]})"
    rf"|{_CHANNEL_ZH}.{{0,6}}?{_ASKED_ZH}|{_ASKED_ZH}.{{0,4}}?{_CHANNEL_ZH}"
)
_BACK_EN = re.compile(
    r"\b(asked|mentioned|messaged|wrote|texted|sent)\b.{0,40}?"
    r"\b(earlier|before|already|whatsapp|wechat|online|chat|yesterday)\b"
    r"|\b(earlier|already|before)\b.{0,20}?\b(asked|mentioned|messaged|wrote|texted)\b",
    re.IGNORECASE,
)


def is_back_reference(text: str) -> bool:
    """Whether `text` points back at an earlier question ("頭先問過", "I asked earlier")."""
    lowered = text.lower()
    return bool(_BACK_ZH.search(lowered) or _BACK_EN.search(lowered))


@dataclass(frozen=True)
class Topic:
    """One thing the customer asked about: the KB entry that best matched it, and where."""

    entry_id: str
    category: str
    question: str  # the customer's words
    score: float  # the entry's score for them
    resolved: bool  # whether that score reached the engine's threshold
    channel: str = ""  # web | whatsapp | wechat | a call's protocol
    conversation_id: str = ""  # the text conversation's or the call's id
    at: float = 0.0  # Unix seconds

    def to_dict(self) -> dict[str, Any]:
        return {"entry_id": self.entry_id, "category": self.category, "question": self.question,
                "score": round(self.score, 3), "resolved": self.resolved, "channel": self.channel,
                "conversation_id": self.conversation_id, "at": self.at}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Topic:
        return cls(str(data["entry_id"]), str(data.get("category", "")),
                   str(data.get("question", "")), float(data.get("score", 0.0)),
                   bool(data.get("resolved", False)), str(data.get("channel", "")),
                   str(data.get("conversation_id", "")), float(data.get("at", 0.0)))  # fmt: skip


@dataclass(frozen=True)
class CustomerContext:
    """A customer's session state as carried from one conversation to the next."""

    customer_id: str
    language: str = YUE  # BCP 47 reply language
    unresolved: int = 0  # consecutive unresolved turns, across channels
    order_id: str | None = None  # the order being discussed (CRM slot)
    topics: tuple[Topic, ...] = field(default=())  # the newest last, at most MAX_TOPICS
    updated_at: float = 0.0  # Unix seconds of the turn that wrote it

    def referred_topic(self) -> Topic | None:
        """What a back-reference means: the last unresolved topic, else the last one."""
        for topic in reversed(self.topics):
            if not topic.resolved:
                return topic
        return self.topics[-1] if self.topics else None

    def with_topic(self, topic: Topic) -> CustomerContext:
        return replace(self, topics=(*self.topics, topic)[-MAX_TOPICS:])


__all__ = ["MAX_TOPICS", "Topic", "CustomerContext", "is_back_reference"]
