"""Call recordings (`voice serve --record-dir`): the caller's audio as it arrived, one WAV per call.

The bytes are kept in the codec they came in (G.711 mu-law or A-law, or 16-bit PCM) at the
stream's rate, behind a WAV header, so nothing is re-encoded and `soundfile` reads them back.
Files are owner-only (0600 in a 0700 folder): a recording is personal data under the PDPO, kept no
longer than the call it belongs to. The header's sizes are written when the call ends; a file
left by a crash is repaired from its length at the next start (`repair`).
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
from pathlib import Path
from typing import BinaryIO

PRIVATE_FILE = 0o600
# WAVE format tags and bytes per sample of each stream encoding
FORMATS = {"pcm16": (1, 2), "alaw": (6, 1), "mulaw": (7, 1)}
HEADER_BYTES = 58  # RIFF(12) + fmt with cbSize(26) + fact(12) + data header(8)


def file_name(call_id: str) -> str:
    """A file name for a call: readable, safe for any call id, distinct for distinct ids."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", call_id)[:60].strip("_") or "call"
    return f"{slug}-{hashlib.sha256(call_id.encode()).hexdigest()[:8]}.wav"


class CallRecorder:
    """Appends one call's audio bytes to its WAV file as they arrive."""

    def __init__(self, path: Path, encoding: str, sample_rate: int):
        if encoding not in FORMATS:
            raise ValueError(f"cannot record encoding {encoding!r}")
        self.path = path
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.bytes = 0
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._file.write(header(encoding, sample_rate, 0))

    def write(self, data: bytes) -> None:
        if self._file is not None and data:
            self._file.write(data)
            self.bytes += len(data)

    def close(self) -> float:
        """Write the header's sizes and close; returns the seconds recorded."""
        if self._file is not None:
            self._file.seek(0)
            self._file.write(header(self.encoding, self.sample_rate, self.bytes))
            self._file.close()
            self._file = None
        return self.seconds

    @property
    def seconds(self) -> float:
        return self.bytes / FORMATS[self.encoding][1] / self.sample_rate


def header(encoding: str, sample_rate: int, data_bytes: int) -> bytes:
    """A WAV header for mono audio of this encoding; `fact` gives the sample count, as the WAV
    spec asks of non-PCM formats."""
    tag, width = FORMATS[encoding]
    frames = data_bytes // width
    fmt = struct.pack("<HHIIHHH", tag, 1, sample_rate, sample_rate * width, width, 8 * width, 0)
    return (
        b"RIFF" + struct.pack("<I", HEADER_BYTES - 8 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"fact" + struct.pack("<II", 4, frames)
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


def repair(path: Path) -> bool:
    """Fix the sizes in the header of a recording whose call never closed; True if changed."""
    size = path.stat().st_size
    if size < HEADER_BYTES:
        return False
    with open(path, "r+b") as f:
        head = f.read(HEADER_BYTES)
        tag, _, rate = struct.unpack("<HHI", head[20:28])
        encoding = next((e for e, (t, _) in FORMATS.items() if t == tag), None)
        if encoding is None:
            return False
        fixed = header(encoding, rate, size - HEADER_BYTES)
        if fixed == head:
            return False
        f.seek(0)
        f.write(fixed)
    return True


__all__ = ["CallRecorder", "file_name", "header", "repair"]
