"""Hot reload of the answer engine's knowledge base while the server runs."""

from __future__ import annotations

import asyncio
import logging

from voice.errors import VoiceError

log = logging.getLogger(__name__)


async def watch_kb(engine, interval_s: float) -> None:
    """Every `interval_s`, reload the KB if its file changed; runs until cancelled.

    The index is rebuilt in a worker thread (seconds for thousands of entries), so calls keep
    being answered from the old KB meanwhile. A broken edit is logged once per change and the
    old KB stays in service until the file is fixed.
    """
    path = engine.kb.path
    if path is None:
        return
    rejected = None  # the file version last refused (an mtime, or the stat error's text)
    while True:
        await asyncio.sleep(interval_s)
        try:
            version = path.stat().st_mtime
        except OSError as exc:
            if rejected != str(exc):
                log.warning("knowledge base %s unreadable (%s); keeping the loaded one", path, exc)
                rejected = str(exc)
            continue
        if version in (engine.kb.mtime, rejected):
            continue
        try:
            await asyncio.to_thread(engine.reload)  # logs the reload itself
            rejected = None
        except VoiceError as exc:
            rejected = version
            log.warning("knowledge base edit rejected, keeping %d entries: %s", len(engine.kb), exc)


__all__ = ["watch_kb"]
