"""Answer engine: knowledge-base search, language, tone, escalation and CRM slots per call."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> defining module. Imported on first use, so `voice --help` and the other
# subcommands do not pay for numpy/rapidfuzz/sqlite when they only register this CLI.
_EXPORTS = {
    "Answer": "engine",
    "AnswerEngine": "engine",
    "AnswerOptions": "engine",
    "AnswerSession": "engine",
    "Suggestion": "engine",
    "KnowledgeBase": "kb",
    "Entry": "kb",
    "KBError": "kb",
    "load_kb": "kb",
    "SAMPLE_KB": "kb",
    "SearchIndex": "search",
    "Hit": "search",
    "Sentiment": "sentiment",
    "CustomerContext": "context",
    "Customer": "crm",
    "CustomerProvider": "crm",
    "Order": "crm",
    "SqliteCustomerProvider": "crm",
}

if TYPE_CHECKING:
    from voice.answer.context import CustomerContext
    from voice.answer.crm import Customer, CustomerProvider, Order, SqliteCustomerProvider
    from voice.answer.engine import Answer, AnswerEngine, AnswerOptions, AnswerSession, Suggestion
    from voice.answer.kb import SAMPLE_KB, Entry, KBError, KnowledgeBase, load_kb
    from voice.answer.search import Hit, SearchIndex
    from voice.answer.sentiment import Sentiment


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'voice.answer' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"voice.answer.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


__all__ = [
    "Answer",
    "AnswerEngine",
    "AnswerOptions",
    "AnswerSession",
    "Suggestion",
    "KnowledgeBase",
    "Entry",
    "KBError",
    "load_kb",
    "SAMPLE_KB",
    "SearchIndex",
    "Hit",
    "Sentiment",
    "CustomerContext",
    "Customer",
    "CustomerProvider",
    "Order",
    "SqliteCustomerProvider",
]
