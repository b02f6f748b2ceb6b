"""Atomic file writes (a reader sees the old file or the new one, never half of one) and
owner-only folders for what holds callers' words and voices."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: Path, data: str | bytes, private: bool = False) -> Path:
    """Write `data` to `path` through a temporary file in the same folder, then rename.

    `private`: owner-only from the first byte (file 0600, new folders 0700), for caches and
    records that hold callers' words or a company's knowledge base."""
    path = Path(path)
    path.parent.mkdir(mode=0o700 if private else 0o777, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_arrays(path: Path, **arrays) -> Path:
    """`np.savez` of `arrays` to `path`, atomically and owner-only (the KB caches' format)."""
    import io

    import numpy as np

    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return write_atomic(path, buffer.getvalue(), private=True)


def private_dir(path: str | Path) -> Path:
    """`path` as a folder, created owner-only (0700) with its missing parents if it is new; an
    existing folder is left as its owner set it."""
    folder = Path(path)
    if not folder.exists():
        folder.mkdir(parents=True)
        folder.chmod(0o700)  # chmod, not mkdir's mode: that one is filtered by the umask
    return folder


__all__ = ["private_dir", "write_atomic"]


def newest_first(folder: Path, pattern: str) -> list[Path]:
    """The files of `folder` matching `pattern`, most recently written first ([] if no folder)."""
    found = []
    for path in Path(folder).glob(pattern):
        try:
            found.append((path.stat().st_mtime, path))
        except OSError:
            continue  # removed meanwhile by another process
    return [path for _, path in sorted(found, reverse=True)]


def keep_newest(folder: Path, pattern: str, keep: int) -> None:
    """Delete all but the `keep` most recent files of `folder` matching `pattern` (a cache's old
    versions), ignoring files another process removes first."""
    for path in newest_first(folder, pattern)[keep:]:
        path.unlink(missing_ok=True)
