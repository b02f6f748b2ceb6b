"""Hot reload of the answer engine's knowledge base while the server runs."""

from __future__ import annotations

import asyncio
import logging

from voice.errors import VoiceError

log = logging.getLogger("voice")


async def watch_kb(engine, interval_s: float) -> None:
    """Every `interval_s`, reload the KB if its file changed; runs until cancelled.

    The index is rebuilt in a worker thread (seconds for thousands of entries), so calls keep
    being answered from the old KB meanwhile. A broken edit is logged once per change and the
    old KB stays in service until the file is fixed.
    """
    path = engine.kb.path
    if path is None:
        return
    failed_mtime = None
    while True:
        await asyncio.sleep(interval_s)
        try:
            mtime = path.stat().st_mtime
        except OSError as exc:
            if failed_mtime != "missing":
                log.warning("knowledge base %s unreadable (%s); keeping the loaded one", path, exc)
                failed_mtime = "missing"
            continue
        if mtime in (engine.kb.mtime, failed_mtime):
            continue
        try:
            kb = await asyncio.to_thread(engine.reload)
        except VoiceError as exc:
            failed_mtime = mtime
            log.warning("knowledge base edit rejected, keeping %d entries: %s", len(engine.kb), exc)
            continue
        failed_mtime = None
        log.info("knowledge base reloaded: %d entries from %s", len(kb), path)


__all__ = ["watch_kb"]
