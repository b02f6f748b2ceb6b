"""The typed objects that flow between stages: speech segments and call events."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

SAMPLE_RATE = 16_000  # every stage after voice.audio works on 16 kHz mono float32


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
        return {"type": self.type, **asdict(self)}


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
    language: str = "zh"
    no_speech_prob: float = 0.0
    avg_logprob: float = 0.0


@dataclass(frozen=True)
class SuggestionEvent(Event):
    """Suggested replies for the agent after a transcript."""

    type: ClassVar[str] = "suggestion"
    start: float
    end: float
    language: str
    resolved: bool
    suggestions: tuple[dict[str, Any], ...] = ()
    sentiment: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertEvent(Event):
    """Something the agent or supervisor must notice: an upset caller, a high-priority matter."""

    type: ClassVar[str] = "alert"
    kind: str
    message: str
    start: float = 0.0
    end: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        # On the wire the alert's kind is its "alert" field; "type" stays the event type.
        data = super().to_dict()
        data["alert"] = data.pop("kind")
        return data


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


__all__ = [
    "SAMPLE_RATE",
    "Segment",
    "Gap",
    "Event",
    "SegmentEvent",
    "TranscriptEvent",
    "SuggestionEvent",
    "AlertEvent",
    "HandoffEvent",
    "WarningEvent",
    "EndEvent",
]
