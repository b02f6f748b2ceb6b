"""POST /v1/transcribe: a whole file through the same session and scheduler as a live call."""

from __future__ import annotations

import asyncio
import tempfile

from voice.audio import read_audio
from voice.pipeline import CallSession
from voice.server.calls import CallHub
from voice.types import Segment


def _segments(hub: CallHub, data: bytes, call_id: str) -> tuple[CallSession, list[Segment]]:
    with tempfile.NamedTemporaryFile(suffix=".audio") as f:
        f.write(data)
        f.flush()
        samples = read_audio(f.name)
    answer = hub.answer_engine.session(call_id) if hub.answer_engine else None
    session = CallSession(call_id, None, hub.vad_options, answer=answer)
    return session, session.feed_samples(samples) + session.feed_end()


async def transcribe_upload(hub: CallHub, data: bytes, call_id: str) -> list[dict]:
    """Decode and segment in a thread, then decode as background work, `batch_max` at a time."""
    session, segments = await asyncio.to_thread(_segments, hub, data, call_id)
    events: list[dict] = []
    step = hub.config.batch_max
    for i in range(0, len(segments), step):
        window = segments[i : i + step]
        futures = [hub.scheduler.submit(call_id, s, background=True) for s in window]
        for segment, transcript in zip(window, await asyncio.gather(*futures), strict=True):
            events += [e.to_dict() for e in session.complete(segment, transcript)]
    events.append(session.end_event().to_dict())
    return events
