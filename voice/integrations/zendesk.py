"""Zendesk two-way sync: tickets for calls that need people, comments both ways.

STUB: interface only.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from voice.integrations.config import IntegrationsConfig


SCHEMA = ""  # ticket per call, webhook invocations seen


def create(db: sqlite3.Connection) -> None:
    """Create the sync's tables (the store calls this at open, with or without integrations)."""
    if SCHEMA:
        db.executescript(SCHEMA)


class ZendeskSync:
    def __init__(self, config: IntegrationsConfig):
        self.config = config

    def record(self, db: sqlite3.Connection, outbox, call_id: str, data: dict[str, Any],
               ts: float, published: list[tuple[str, str]]) -> None:  # fmt: skip
        """Outbox extension: queue ticket creation and comments."""

    def sender(self):
        raise NotImplementedError
