"""POST /v1/transcribe: a whole file through the same session and scheduler as a live call."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

from voice.audio import probe, read_audio_blocks
from voice.pipeline import CallSession
from voice.server.calls import CallHub
from voice.types import SAMPLE_RATE, Segment

BLOCK_SECONDS = 30.0  # audio decoded and segmented at a time: bounds memory whatever the length
UNKNOWN_FRAMES = 2**63 - 1  # libsndfile's frame count for a stream that does not say its length


class TooLong(ValueError):
    """The upload holds more audio than `max_upload_seconds` (HTTP 413)."""


def check_length(path: str | Path, max_seconds: float) -> None:
    """Refuse from the header alone, before anything is decoded: a few MB of compressed silence
    can decode to gigabytes. Raises TooLong, or AudioError when the header cannot be read. A file
    that does not say its length (a streamed FLAC) is stopped while decoding instead."""
    info = probe(path)
    if info.frames != UNKNOWN_FRAMES and info.duration > max_seconds:
        raise TooLong(f"the audio is {_hours(info.duration)} long; uploads are limited to "
                      f"{_hours(max_seconds)} (max_upload_seconds)")  # fmt: skip


async def transcribe_upload(hub: CallHub, path: str | Path, call_id: str) -> list[dict]:
    """Decode and segment block by block in a thread; segments are transcribed as background work
    while later blocks are read, at most `batch_max` waiting, so memory stays bounded."""
    answer = hub.answer_engine.session(call_id) if hub.answer_engine else None
    session = CallSession(call_id, None, hub.vad_options, answer=answer)
    blocks = _segments(session, path, hub.config.max_upload_seconds)
    pending: list[tuple[Segment, asyncio.Future]] = []
    events: list[dict] = []

    async def complete_oldest() -> None:
        segment, future = pending.pop(0)
        events.extend(e.to_dict() for e in session.complete(segment, await future))

    try:
        while (found := await asyncio.to_thread(next, blocks, None)) is not None:
            pending += [(s, hub.scheduler.submit(call_id, s, background=True)) for s in found]
            while len(pending) > hub.config.batch_max:
                await complete_oldest()
        while pending:
            await complete_oldest()
    finally:
        for _, future in pending:  # refused midway (TooLong, AudioError): drop queued work
            future.cancel()
    events.append(session.end_event().to_dict())
    return events


def _segments(
    session: CallSession, path: str | Path, max_seconds: float
) -> Iterator[list[Segment]]:
    """The segments each block of the file completes, then those the end completes. A header
    that understated the length is caught here, as the decoded audio passes the limit."""
    samples = 0
    for block in read_audio_blocks(path, BLOCK_SECONDS):
        samples += block.size
        if samples > max_seconds * SAMPLE_RATE + SAMPLE_RATE:  # a second of resampler slack
            raise TooLong(f"the audio is longer than {_hours(max_seconds)} (max_upload_seconds)")
        yield session.feed_samples(block)
    yield session.feed_end()


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"
