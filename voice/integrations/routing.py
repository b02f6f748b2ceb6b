"""Referral rules: a turn of a category ending unresolved or handed off refers the call to a
department with an SLA deadline; breaches fire when nobody acknowledges in time.

STUB: interface only; the referral table, the SLA watch and acknowledgement are to be built.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from voice.integrations.config import IntegrationsConfig
from voice.types import Event


SCHEMA = ""  # the referrals table


def create(db: sqlite3.Connection) -> None:
    """Create the referral table (the store calls this at open, with or without integrations)."""
    if SCHEMA:
        db.executescript(SCHEMA)


class Router:
    """What the hub asks after each turn's answer events."""

    def after_turn(self, call_id: str, events: list[Event]) -> list[Event]:
        return []


class Referrals(Router):
    """The routing rules of one server: decides referrals, stores them, watches deadlines."""

    def __init__(self, config: IntegrationsConfig):
        self.config = config

    def record(self, db: sqlite3.Connection, outbox, call_id: str, data: dict[str, Any],
               ts: float, published: list[tuple[str, str]]) -> None:  # fmt: skip
        """Outbox extension: keep the referral table in step with stored referral events."""

    async def watch(self, hub) -> None:
        """Fire `referral_breached` for referrals past their deadline without an ack."""
