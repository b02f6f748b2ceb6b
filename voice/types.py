"""The typed objects that flow between stages: speech segments and call events."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

if TYPE_CHECKING:
    from voice.answer.sentiment import Sentiment

SAMPLE_RATE = 16_000  # every stage after voice.audio works on 16 kHz mono float32

# BCP 47 tags for the language of a transcript or a reply, the one scheme used in every event.
YUE = "yue-Hant-HK"  # Hong Kong Cantonese, Traditional characters (colloquial written Cantonese)
CMN = "cmn-Hant-HK"  # Mandarin, standard written Chinese in Traditional characters
EN = "en"
LANGUAGES = (YUE, CMN, EN)

# Codes met elsewhere (Whisper's language tokens, earlier releases' "zh-Hant", CRM rows) and the
# tag each stands for here: Whisper base has no `yue` token and transcribes Cantonese under `zh`.
_LEGACY_CODES = {"zh": YUE, "zh-hant": YUE, "zh-hk": YUE, "zh-hant-hk": YUE, "yue": YUE}


def language_tag(code: str) -> str:
    """The BCP 47 tag for `code`: one of LANGUAGES, a legacy code ("zh", "zh-Hant") mapped to
    its tag, or another two- or three-letter language code (Whisper's ISO 639-1) as it is.

    Raises ValueError naming the code when it is none of these.
    """
    folded = code.strip().lower()
    for tag in LANGUAGES:
        if folded == tag.lower():
            return tag
    if folded in _LEGACY_CODES:
        return _LEGACY_CODES[folded]
    if folded.startswith("en-"):
        return EN
    if folded.isascii() and folded.isalpha() and 2 <= len(folded) <= 3:
        return folded
    raise ValueError(f"unknown language {code!r}: use one of {', '.join(LANGUAGES)}")


@dataclass(frozen=True, eq=False)
class Segment:
    """A span of one call's audio cut out by the VAD (or read from a manifest).

    `start`/`end` are seconds from the start of the call; `samples` holds exactly the audio
    between them at `sample_rate`, mono float32 in [-1, 1].
    """

    call_id: str
    start: float
    end: float
    samples: np.ndarray
    sample_rate: int = SAMPLE_RATE

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Gap:
    """A span of a call the VAD judged to be non-speech (kept so no audio goes unaccounted)."""

    call_id: str
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(frozen=True)
class Event:
    """Base of everything a call session reports; `to_dict()` is the wire and JSON form."""

    type: ClassVar[str] = "event"
    call_id: str

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, **{f.name: _wire(getattr(self, f.name)) for f in fields(self)}}


def _wire(value: Any) -> Any:
    """`value` in its JSON form: typed parts (suggestions, tone, alerts) by their own `to_dict`."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: _wire(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class Suggestion:
    """One suggested reply, slots filled, with the knowledge-base entry it came from."""

    id: str
    category: str
    reply: str
    score: float
    priority: str = "normal"

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "category": self.category, "reply": self.reply,
                "score": round(self.score, 3)}  # fmt: skip


@dataclass(frozen=True)
class Alert:
    """Something in one turn the agent or a supervisor must notice; subclasses say what."""

    kind: ClassVar[str] = "alert"
    message: str

    def details(self) -> dict[str, Any]:
        """What the alert carries beside its kind and message, in JSON form."""
        return {f.name: _wire(getattr(self, f.name)) for f in fields(self) if f.name != "message"}

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.kind, "message": self.message, **self.details()}


@dataclass(frozen=True)
class SentimentAlert(Alert):
    """The caller sounds upset (words, voice or both) at agitation `level` 2 or more."""

    kind: ClassVar[str] = "sentiment"
    score: float = 0.0  # the words' tone in [-1, 1]
    cues: tuple[str, ...] = ()
    level: int = 0
    voice_score: float | None = None

    def details(self) -> dict[str, Any]:
        voice = None if self.voice_score is None else round(self.voice_score, 3)
        return {"score": round(self.score, 3), "cues": list(self.cues), "level": self.level,
                "voice_score": voice}  # fmt: skip


@dataclass(frozen=True)
class PriorityAlert(Alert):
    """The caller raised a matter the knowledge base marks high priority (a complaint, fraud)."""

    kind: ClassVar[str] = "priority"
    id: str = ""  # the knowledge-base entry
    category: str = ""


@dataclass(frozen=True)
class SegmentEvent(Event):
    """The VAD closed an utterance; its transcript follows."""

    type: ClassVar[str] = "segment"
    start: float
    end: float


@dataclass(frozen=True)
class TranscriptEvent(Event):
    """What the caller said in one utterance, in Hong Kong Traditional Chinese.

    `latency_ms`: wall time from receiving the utterance's last audio to this event (includes
    the VAD's end-of-speech wait when audio arrives in real time); `asr_ms`: decoding time alone.
    """

    type: ClassVar[str] = "transcript"
    start: float
    end: float
    text: str
    latency_ms: float
    asr_ms: float = 0.0
    language: str = YUE  # BCP 47
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0


@dataclass(frozen=True)
class PartialEvent(Event):
    """What the caller has said so far in an utterance still going on (or paused): shown greyed,
    replaced by the utterance's `transcript`. Sent to subscribers only, never stored."""

    type: ClassVar[str] = "partial"
    start: float
    end: float
    text: str


@dataclass(frozen=True)
class SuggestionEvent(Event):
    """Suggested replies for the agent after a transcript."""

    type: ClassVar[str] = "suggestion"
    start: float
    end: float
    language: str  # BCP 47: the language the replies are in
    resolved: bool
    suggestions: tuple[Suggestion, ...] = ()
    sentiment: Sentiment | None = None


@dataclass(frozen=True)
class AlertEvent(Event):
    """Something the agent or supervisor must notice: an upset caller, a high-priority matter."""

    type: ClassVar[str] = "alert"
    alert: Alert
    start: float = 0.0
    end: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        # On the wire: "alert" is the alert's kind ("type" stays the event type), beside
        # its message and a "details" object.
        a = self.alert
        return {"type": self.type, "call_id": self.call_id, "alert": a.kind,
                "message": a.message, "start": self.start, "end": self.end,
                "details": a.details()}  # fmt: skip


@dataclass(frozen=True)
class HandoffEvent(Event):
    """The answer engine failed repeatedly: ask for a human."""

    type: ClassVar[str] = "handoff"
    reason: str
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class WarningEvent(Event):
    """The system is degraded for this call (for example the server is overloaded)."""

    type: ClassVar[str] = "warning"
    message: str


@dataclass(frozen=True)
class EndEvent(Event):
    """The call is over and every transcript has been delivered."""

    type: ClassVar[str] = "end"
    duration: float
    utterances: int


@dataclass(frozen=True)
class ReferralEvent(Event):
    """The call is referred to a department (a routing rule matched); `deadline` is the SLA's end
    (Unix seconds) unless someone acknowledges it first."""

    type: ClassVar[str] = "referral"
    referral_id: str
    department: str
    category: str
    outcome: str  # unresolved | handoff: what the turn ended as
    sla_minutes: float
    deadline: float


@dataclass(frozen=True)
class ReferralBreachedEvent(Event):
    """A referral's deadline passed without an acknowledgement."""

    type: ClassVar[str] = "referral_breached"
    referral_id: str
    department: str
    category: str
    deadline: float


@dataclass(frozen=True)
class ReferralAckedEvent(Event):
    """Someone (a supervisor) took a referral on: recorded on the call, the SLA stops."""

    type: ClassVar[str] = "referral_acked"
    referral_id: str
    department: str
    acked_by: str


@dataclass(frozen=True)
class TicketCommentEvent(Event):
    """A person replied in the call's helpdesk ticket (Zendesk): their words for the agent."""

    type: ClassVar[str] = "ticket_comment"
    ticket_id: int
    comment_id: int
    author: str
    body: str


@dataclass(frozen=True)
class MessageEvent(Event):
    """What a customer wrote on a text channel (web chat, WhatsApp, WeChat): the text
    conversation's counterpart of a transcript; `start`/`end` are seconds from its start."""

    type: ClassVar[str] = "message"
    channel: str  # web | whatsapp | wechat
    text: str
    customer_id: str
    language: str = YUE  # BCP 47: the conversation's language after this message
    message_id: str = ""  # the channel's own id (WhatsApp's wamid), if any
    start: float = 0.0
    end: float = 0.0


__all__ = [
    "SAMPLE_RATE",
    "YUE",
    "CMN",
    "EN",
    "LANGUAGES",
    "language_tag",
    "Suggestion",
    "Alert",
    "SentimentAlert",
    "PriorityAlert",
    "Segment",
    "Gap",
    "PartialEvent",
    "Event",
    "SegmentEvent",
    "TranscriptEvent",
    "SuggestionEvent",
    "AlertEvent",
    "HandoffEvent",
    "WarningEvent",
    "EndEvent",
    "ReferralEvent",
    "ReferralBreachedEvent",
    "ReferralAckedEvent",
    "TicketCommentEvent",
    "MessageEvent",
]
