"""The answer engine: a caller's utterance in, suggested replies, language, tone and alerts out."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from voice.answer.context import CustomerContext, Topic, is_back_reference
from voice.answer.crm import Customer, CustomerProvider, Order
from voice.answer.embed import DEFAULT_CACHE, SentenceEncoder
from voice.answer.kb import Entry, KnowledgeBase, load_kb
from voice.answer.language import detect_language
from voice.answer.search import Hit, SearchIndex
from voice.answer.sentiment import Sentiment, detect
from voice.answer.text import extract_order_id, normalize
from voice.answer.tone import ToneModel
from voice.errors import ConfigError
from voice.prosody import AgitationTracker
from voice.types import (
    CMN,
    EN,
    SAMPLE_RATE,
    YUE,
    Alert,
    AlertEvent,
    Event,
    HandoffEvent,
    PriorityAlert,
    SentimentAlert,
    Suggestion,
    SuggestionEvent,
    TranscriptEvent,
    language_tag,
)

log = logging.getLogger(__name__)

# Reply registers (BCP 47 tags, voice.types): colloquial Hong Kong Cantonese by default,
# standard written Chinese in Traditional characters for Mandarin speakers, English.
REPLY_LANGUAGES = (YUE, CMN, EN)
ORDER_SLOTS = ("order_id", "order_status", "order_item", "order_eta")


@dataclass(frozen=True)
class AnswerOptions:
    """How the engine answers; every field has a default that suits the sample KB."""

    top_k: int = 3  # suggestions returned per utterance
    # sentence embeddings (voice.answer.embed) beside words and sounds: finds paraphrases and
    # English questions to Chinese-only entries; off = lexical only (no model loaded)
    semantic: bool = True
    kb_cache_dir: str = str(DEFAULT_CACHE)  # KB embeddings kept here by text ("": not cached)
    threshold: float = 0.4  # the best score must reach this for the turn to be `resolved`
    min_score: float = 0.15  # candidates below this are never suggested, even as alternatives
    escalate_after: int = 2  # consecutive unresolved turns before a handoff (0: never)
    # Phrases that switch the session's reply language whatever else the caller says.
    english_triggers: tuple[str, ...] = (
        "english please", "speak english", "in english", "講英文", "用英文", "說英文",
    )  # fmt: skip
    chinese_triggers: tuple[str, ...] = (
        "講中文", "講返中文", "講廣東話", "用廣東話", "用中文", "cantonese please",
        "speak cantonese", "in cantonese", "speak chinese",
    )  # fmt: skip
    mandarin_triggers: tuple[str, ...] = (
        "講普通話", "說普通話", "用普通話", "講國語", "說國語", "用國語", "說中文",
        "mandarin please", "speak mandarin", "in mandarin",
    )  # fmt: skip
    english_min_words: int = 2  # an utterance is English if it has this many English words ...
    english_word_weight: float = 2.0  # ... and words * weight > its Chinese characters
    chinese_min_chars: int = 4  # Chinese characters that switch an English session back
    # Weighed Cantonese or Mandarin markers (voice.answer.language) that switch the register
    # between Cantonese and Mandarin; fewer keep the call's register.
    register_min_weight: float = 2.0
    # Words' tone at or below -threshold is agitation level 2 (see sentiment.agitation_level);
    # a sentiment alert fires from level 2, whether from the words, the voice or both.
    sentiment_threshold: float = 0.5
    sentiment_history: int = 3  # earlier utterances checked for the caller repeating themself
    # Words that sound upset by their meaning (voice.answer.tone, needs `semantic`) mark a caller
    # slightly upset when no complaint word does; never an alert on their own. Measured on the
    # courier hold-out: upset callers found 5/8 -> 7/8, calm callers marked 1/61 -> 7/61.
    tone_meaning: bool = True
    fallback_reply: str = "唔好意思，我唔係好明白，可唔可以講多少少你想查詢咩？"
    fallback_reply_zh: str = "不好意思，我不太明白，可以再多說一點您想查詢甚麼嗎？"
    fallback_reply_en: str = "Sorry, I didn't quite catch that. Could you tell me a bit more?"
    ask_order_reply: str = "請問你嘅訂單號碼係幾多？"
    ask_order_reply_zh: str = "請問您的訂單號碼是多少？"
    ask_order_reply_en: str = "May I have your order number, please?"
    order_not_found_reply: str = "唔好意思，我搵唔到訂單號碼 {order_id}，麻煩你再講一次？"
    order_not_found_reply_zh: str = "不好意思，我找不到訂單號碼 {order_id}，麻煩您再說一次？"
    order_not_found_reply_en: str = (
        "Sorry, I can't find order number {order_id}. Could you repeat it?"
    )

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"top_k must be at least 1, got {self.top_k}")
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"threshold must be between 0 and 1, got {self.threshold}")
        if not 0.0 <= self.min_score <= self.threshold:
            raise ConfigError(f"min_score must be between 0 and threshold, got {self.min_score}")
        if self.escalate_after < 0:
            raise ConfigError(f"escalate_after must be 0 or more, got {self.escalate_after}")
        if self.register_min_weight <= 0:
            raise ConfigError(
                f"register_min_weight must be above 0, got {self.register_min_weight}"
            )
        if not 0.0 < self.sentiment_threshold <= 1.0:
            raise ConfigError(
                f"sentiment_threshold must be in (0, 1], got {self.sentiment_threshold}"
            )


@dataclass(frozen=True)
class Answer:
    """The engine's answer to one utterance (see `to_dict` for the JSON form)."""

    text: str
    language: str
    resolved: bool
    suggestions: tuple[Suggestion, ...]
    sentiment: Sentiment
    alerts: tuple[Alert, ...] = ()
    handoff: str | None = None  # the reason, when a human should take over now
    order_id: str | None = None  # the order the reply is about, if any
    reply: str = ""  # what a bot would say: the best suggestion, or the fallback

    def to_dict(self) -> dict[str, Any]:
        return {
            "language": self.language,
            "resolved": self.resolved,
            "suggestions": [s.to_dict() for s in self.suggestions],
            "sentiment": self.sentiment.to_dict(),
            "alerts": [a.to_dict() for a in self.alerts],
            "handoff": self.handoff,
            "order_id": self.order_id,
            "reply": self.reply,
        }


def _in(language: str, yue: str, cmn: str, en: str) -> str:
    """One of three texts by reply language (BCP 47 tag)."""
    return en if language == EN else cmn if language == CMN else yue


def _needs_order(template: str) -> bool:
    return any("{" + slot + "}" in template for slot in ORDER_SLOTS)


class _Slots(dict):
    def __missing__(self, key: str) -> str:
        return ""


def _fill(template: str, slots: dict[str, str]) -> str:
    text = template.format_map(_Slots(slots))
    text = re.sub(r"^\s*[，,]\s*", "", text)  # a greeting whose name slot was empty
    text = re.sub(r"\s+([,.!?])", r"\1", text)
    return re.sub(r" {2,}", " ", text).strip()


class AnswerSession:
    """One call: remembers the language, unresolved turns, tone and the order being discussed.

    `context`: what the customer's earlier conversations left (voice.answer.context), so the
    language, the unresolved run, the order and the last topics carry over; `channel` is where
    this one takes place (a call's protocol, web, whatsapp, wechat), kept with its topics.
    """

    def __init__(self, engine: AnswerEngine, call_id: str = "call", customer_id: str | None = None,
                 context: CustomerContext | None = None, channel: str = ""):  # fmt: skip
        self.engine = engine
        self.call_id = call_id
        self.customer_id = customer_id
        self.channel = channel
        self.customer: Customer | None = None
        if customer_id is not None and engine.crm is not None:
            self.customer = engine.crm.customer(customer_id)
            if self.customer is None:
                log.warning("customer %s not found in the CRM", customer_id)
        self.language = YUE
        if self.customer:
            try:
                self.language = language_tag(self.customer.preferred_language)
            except ValueError as exc:
                log.warning("customer %s: %s; replying in Cantonese", self.customer.id, exc)
        if self.language not in REPLY_LANGUAGES:
            self.language = YUE
        self.unresolved = 0  # consecutive unresolved turns
        self.turns = 0
        self.order: Order | None = None
        self._history: deque[str] = deque(maxlen=max(1, engine.options.sentiment_history))
        self._tone = 0.0
        self._level = 0  # the previous turn's agitation level, so one upset run alerts once
        self.voice = AgitationTracker()  # the caller's own pitch and loudness, turn by turn
        self._awaiting_order: Hit | None = None  # an entry that asked for the order number
        self._topics: tuple[Topic, ...] = ()  # what this customer asked about, newest last
        if context is not None:
            self.resume(context)

    def resume(self, context: CustomerContext) -> None:
        """Carry over what the customer's earlier conversations left: language, unresolved run,
        order and topics (the tone and the voice start afresh with each conversation)."""
        if context.language in REPLY_LANGUAGES:
            self.language = context.language
        self.unresolved = max(0, context.unresolved)
        crm = self.engine.crm
        if context.order_id and crm is not None:
            self.order = crm.order(context.order_id) or self.order
        self._topics = context.topics

    def context(self, now: float | None = None) -> CustomerContext:
        """The state to carry over to the customer's next conversation."""
        return CustomerContext(
            customer_id=self.customer_id or "",
            language=self.language,
            unresolved=self.unresolved,
            order_id=self.order.id if self.order else None,
            topics=self._topics,
            updated_at=time.time() if now is None else now,
        )

    # -- one turn ---------------------------------------------------------------------------
    def answer(
        self, text: str, *, audio: np.ndarray | None = None, sample_rate: int = SAMPLE_RATE
    ) -> Answer:
        """Answer one utterance and update the session (empty text changes nothing).

        `audio`: the utterance's samples, when there are any, so the voice's agitation against
        the caller's earlier utterances counts towards the tone's level.
        """
        options = self.engine.options
        text = text.strip()
        if not text:
            return Answer(text, self.language, False, (), Sentiment("neutral", 0.0))
        self.turns += 1
        self.language = detect_language(text, self.language, options)
        query = self._strip_triggers(text)
        hits = self.engine.index.search(query, options.top_k)
        resolved = bool(hits) and hits[0].score >= options.threshold
        referred = None if resolved else self._referred(text)
        if referred is not None:  # "我頭先問過": the earlier question, as resolved as it was then
            hit, resolved = referred
            hits = [hit, *(h for h in hits if h.entry.id != hit.entry.id)][: options.top_k]
        spoken_order = extract_order_id(text)
        order, missing = self._find_order(spoken_order)
        if not resolved and spoken_order and self._awaiting_order is not None:
            hits, resolved = [self._awaiting_order], True  # the caller answered "which order?"
        self._awaiting_order = None
        if resolved and order is None and _needs_order(self._template(hits[0].entry)):
            self._awaiting_order = hits[0]
        suggestions = tuple(
            self._suggest(h, order, missing)
            for h in hits
            if h.score >= options.min_score or (referred is not None and h is referred[0])
        )
        if referred is None and hits and hits[0].score >= options.min_score:
            self._remember(text, hits[0], resolved)
        voice = None if audio is None else self.voice.push(audio, sample_rate).score
        tone = self.engine.tone
        meaning = None if tone is None else tone.probability(query)  # the search's embedding
        sentiment = detect(text, tuple(self._history), self._tone, meaning).with_voice(
            voice, options.sentiment_threshold
        )
        alerts = self._alerts(sentiment, [h for h in hits if h.score >= options.threshold])
        self._history.append(text)
        self._tone = sentiment.score
        self._level = sentiment.level
        handoff = self._escalation(resolved)
        if resolved:
            reply = suggestions[0].reply
        else:
            reply = _in(
                self.language,
                options.fallback_reply,
                options.fallback_reply_zh,
                options.fallback_reply_en,
            )
        return Answer(
            text=text,
            language=self.language,
            resolved=resolved,
            suggestions=suggestions,
            sentiment=sentiment,
            alerts=tuple(alerts),
            handoff=handoff,
            order_id=order.id if order else spoken_order,
            reply=reply,
        )

    def _referred(self, text: str) -> tuple[Hit, bool] | None:
        """For a back-reference with no topic of its own: the topic it means, as a hit, and
        whether that topic was resolved when asked; None otherwise."""
        if not self._topics or not is_back_reference(text):
            return None
        topic = CustomerContext("", topics=self._topics).referred_topic()
        entry = self.engine.kb.by_id.get(topic.entry_id) if topic else None
        if topic is None or entry is None:  # the entry left the KB since
            return None
        return Hit(entry, topic.score, {"context": 1.0}), topic.resolved

    def _remember(self, text: str, hit: Hit, resolved: bool) -> None:
        topic = Topic(hit.entry.id, hit.entry.category, text, hit.score, resolved, self.channel,
                      self.call_id, time.time())  # fmt: skip
        self._topics = CustomerContext("", topics=self._topics).with_topic(topic).topics

    def _strip_triggers(self, text: str) -> str:
        """The utterance without language-switch phrases, which say nothing about the topic."""
        options = self.engine.options
        norm = normalize(text)
        for phrase in (
            *options.english_triggers,
            *options.chinese_triggers,
            *options.mandarin_triggers,
        ):
            norm = norm.replace(normalize(phrase), " ")  # 說 is 説 after normalisation
        return norm

    def events(
        self,
        transcript: TranscriptEvent,
        audio: np.ndarray | None = None,
        sample_rate: int = SAMPLE_RATE,
    ) -> list[Event]:
        """Events for one transcript: a suggestion, then any alerts, then a handoff if due."""
        if not transcript.text.strip():
            return []
        ans = self.answer(transcript.text, audio=audio, sample_rate=sample_rate)
        span = {"call_id": transcript.call_id, "start": transcript.start, "end": transcript.end}
        events: list[Event] = [
            SuggestionEvent(
                **span,
                language=ans.language,
                resolved=ans.resolved,
                suggestions=ans.suggestions,
                sentiment=ans.sentiment,
            )
        ]
        events.extend(AlertEvent(**span, alert=alert) for alert in ans.alerts)
        if ans.handoff:
            events.append(HandoffEvent(**span, reason=ans.handoff))
        return events

    # -- parts ------------------------------------------------------------------------------
    def _find_order(self, spoken: str | None) -> tuple[Order | None, str | None]:
        """The order this turn is about, and the spoken id if the CRM does not know it."""
        crm = self.engine.crm
        if spoken and crm is not None:
            found = crm.order(spoken)
            if found is None:
                return None, spoken
            if self.customer and found.customer_id != self.customer.id:
                log.warning("order %s belongs to another customer", spoken)
            self.order = found
        elif self.order is None and self.customer and self.customer.open_orders:
            self.order = self.customer.open_orders[0]
        return self.order, None

    def _suggest(self, hit: Hit, order: Order | None, missing: str | None) -> Suggestion:
        options, lang, entry = self.engine.options, self.language, hit.entry
        template = self._template(entry, matched=hit.score >= options.threshold)
        needs_order = _needs_order(template)
        if needs_order and missing:
            template = _in(
                lang,
                options.order_not_found_reply,
                options.order_not_found_reply_zh,
                options.order_not_found_reply_en,
            )
        elif needs_order and order is None:
            template = _in(
                lang,
                options.ask_order_reply,
                options.ask_order_reply_zh,
                options.ask_order_reply_en,
            )
        slots = {"order_id": missing or ""}
        if self.customer:
            slots["customer_name"] = self.customer.address(lang)
            slots["honorific"] = (
                self.customer.honorific_en if lang == EN else self.customer.honorific
            )
        if order is not None:
            slots.update(
                order_id=order.id,
                order_status=order.status_text(lang),
                order_item=order.item,
                order_eta=order.eta,
            )
        return Suggestion(
            entry.id, entry.category, _fill(template, slots), hit.score, entry.priority
        )

    def _template(self, entry: Entry, matched: bool = False) -> str:
        """The entry's reply in the call's language. A Mandarin caller on an entry without
        `answer_zh` gets the colloquial `answer` as written; when the entry `matched` (reached
        the threshold) the engine logs that once, so the KB owner knows which to fill in."""
        if matched and self.language == CMN and not entry.answer_zh:
            self.engine.warn_missing_zh(entry)
        return entry.reply(self.language)

    def _alerts(self, sentiment: Sentiment, matched: list[Hit]) -> list[Alert]:
        alerts: list[Alert] = []
        fresh = any(c != "(repeated)" for c in sentiment.cues)  # new cues (or raised voice)
        if sentiment.level >= 2 and (self._level < 2 or fresh):
            alerts.append(
                SentimentAlert(
                    message="caller sounds upset: " + "、".join(sentiment.cues),
                    score=sentiment.score,
                    cues=sentiment.cues,
                    level=sentiment.level,
                    voice_score=sentiment.voice_score,
                )
            )
        for hit in matched:
            entry = hit.entry
            if entry.priority == "high":
                message = f"high-priority matter: {entry.category} ({entry.id})"
                alerts.append(PriorityAlert(message=message, id=entry.id, category=entry.category))
        return alerts

    def _escalation(self, resolved: bool) -> str | None:
        after = self.engine.options.escalate_after
        self.unresolved = 0 if resolved else self.unresolved + 1
        if after and self.unresolved >= after:
            self.unresolved = 0  # one handoff per run of failures, not one per turn
            return f"{after} consecutive utterances without an answer"
        return None


class AnswerEngine:
    """Holds the knowledge base and its index; hands out sessions; reloads the KB on demand."""

    def __init__(
        self,
        kb: KnowledgeBase,
        options: AnswerOptions | None = None,
        crm: CustomerProvider | None = None,
        encoder: SentenceEncoder | None = None,
    ):
        """`encoder`: a loaded sentence encoder to share between engines; by default one is
        loaded when `options.semantic` is on (without it, retrieval is lexical only)."""
        self.options = options or AnswerOptions()
        self.crm = crm
        self.encoder = encoder
        if encoder is None and self.options.semantic:
            try:
                self.encoder = SentenceEncoder.load()
            except ConfigError as exc:
                log.warning("answering on words and sounds only, without meaning: %s", exc)
        # words that sound upset by their meaning, beside the complaint lexicon
        use_tone = self.options.tone_meaning and self.encoder is not None
        self.tone = ToneModel.fit(self.encoder, cache_dir=self._cache_dir()) if use_tone else None
        self._lock = threading.Lock()
        self._state = (kb, self._index(kb))  # swapped as one object by reload()
        self._missing_zh: set[str] = set()  # entries already logged as lacking answer_zh
        self._missing_zh_lock = threading.Lock()  # not _lock: a reload must not stall a call

    def _cache_dir(self) -> Path | None:
        return Path(self.options.kb_cache_dir).expanduser() if self.options.kb_cache_dir else None

    def _index(self, kb: KnowledgeBase) -> SearchIndex:
        return SearchIndex.cached(kb, self.encoder, self._cache_dir())

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        options: AnswerOptions | None = None,
        crm: CustomerProvider | None = None,
        encoder: SentenceEncoder | None = None,
    ) -> AnswerEngine:
        return cls(load_kb(path), options, crm, encoder)

    @property
    def kb(self) -> KnowledgeBase:
        return self._state[0]

    @property
    def index(self) -> SearchIndex:
        return self._state[1]

    def reload(self) -> KnowledgeBase:
        """Re-read the KB file; running sessions use the new entries from their next turn.

        On a KBError the current KB stays in service and the error is raised.
        """
        path = self.kb.path
        if path is None:
            raise ConfigError("this knowledge base was not loaded from a file; cannot reload")
        with self._lock:
            kb = load_kb(path)
            self._state = (kb, self._index(kb))
            with self._missing_zh_lock:
                self._missing_zh = set()  # the new table may have filled some in, or not
        log.info("reloaded %d entries from %s", len(kb), path)
        return kb

    def reload_if_changed(self) -> bool:
        """Reload when the KB file's modification time changed; True if it did."""
        path = self.kb.path
        if path is None or not path.exists() or path.stat().st_mtime == self.kb.mtime:
            return False
        self.reload()
        return True

    def warn_missing_zh(self, entry: Entry) -> None:
        """Log, once per entry and KB load, that a Mandarin caller got the Cantonese `answer`."""
        with self._missing_zh_lock:
            if entry.id in self._missing_zh:
                return
            self._missing_zh.add(entry.id)
        log.warning(
            "entry %s (row %d) has no answer_zh; replying to a Mandarin caller with its "
            "Cantonese answer",
            entry.id,
            entry.row,
        )

    def search(self, text: str, top_k: int | None = None) -> list[Hit]:
        return self.index.search(text, top_k or self.options.top_k)

    def session(self, call_id: str = "call", customer_id: str | None = None,
                context: CustomerContext | None = None, channel: str = "") -> AnswerSession:  # fmt: skip
        return AnswerSession(self, call_id, customer_id, context, channel)

    def answer(self, text: str, customer_id: str | None = None) -> Answer:
        """Answer one utterance in a fresh session."""
        return self.session(customer_id=customer_id).answer(text)


__all__ = [
    "AnswerOptions",
    "Answer",
    "Suggestion",
    "AnswerSession",
    "AnswerEngine",
    "detect_language",
]
