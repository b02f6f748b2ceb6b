"""Servers sharing a PostgreSQL store tell each other which events they stored (LISTEN/NOTIFY).

`Store.add_event` and `Store.close_call` send a notice on CHANNEL inside the write (PostgreSQL
delivers it at commit, so a reader always finds the event stored); each server's `Listener`
holds one autocommit connection that LISTENs and hands the notices of the other servers to the
event loop. Notices carry ids only (the events are read from the store), so no call content
crosses this channel and no broker is needed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

CHANNEL = "voice_events"
NOTIFY_SQL = f"SELECT pg_notify('{CHANNEL}', ?)"
POLL_S = 0.5  # how often the listening thread looks up from its wait to see if it must stop
RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits between reconnections after PostgreSQL went away


@dataclass(frozen=True)
class Notice:
    """What one server tells the others: it stored event `seq` of a call, or ended the call."""

    instance: str  # the sending server's Store.instance
    call_id: str
    seq: int | None = None  # None with `ended`
    ended: bool = False

    def to_json(self) -> str:
        return json.dumps({"i": self.instance, "c": self.call_id, "s": self.seq, "e": self.ended},
                          ensure_ascii=False)  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Notice:
        data = json.loads(text)
        return cls(str(data["i"]), str(data["c"]), data.get("s"), bool(data.get("e")))


class Listener:
    """A thread LISTENing on CHANNEL that calls `deliver(notice)` on `loop` for every other
    server's notice, and `deliver(None)` after each (re)connection (notices sent while it was
    away are lost: the receiver catches up from the store). Reconnects, with a log line, when
    PostgreSQL restarts; never raises into the server."""

    def __init__(self, engine: Engine, instance: str, deliver: Callable[[Notice | None], None],
                 loop: asyncio.AbstractEventLoop):  # fmt: skip
        self.args, self.kwargs = engine.dialect.create_connect_args(engine.url)
        self.instance = instance
        self.deliver = deliver
        self.loop = loop
        self.connected = threading.Event()  # set while LISTENing (tests wait for it)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="store-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        import psycopg

        failures = 0
        while not self._stop.is_set():
            try:
                with psycopg.connect(*self.args, **self.kwargs, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if failures:
                        log.warning("listening for other servers' events again")
                    failures = 0
                    self.connected.set()
                    self._post(None)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=POLL_S):
                            self._received(note.payload)
            except psycopg.Error as error:
                self.connected.clear()
                wait = RETRY_S[min(failures, len(RETRY_S) - 1)]
                if failures == 0:
                    log.warning("lost the connection listening for other servers' events (%s); "
                                "reconnecting", type(error).__name__)  # fmt: skip
                failures += 1
                self._stop.wait(wait)
        self.connected.clear()

    def _received(self, payload: str) -> None:
        try:
            notice = Notice.from_json(payload)
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed notice on %s", CHANNEL)
            return
        if notice.instance != self.instance:
            self._post(notice)

    def _post(self, notice: Notice | None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.deliver, notice)
        except RuntimeError:  # the loop is closed: the server is stopping
            self._stop.set()


__all__ = ["CHANNEL", "NOTIFY_SQL", "Listener", "Notice"]
