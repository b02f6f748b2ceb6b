"""Updating one `## ` section of a Markdown file (BENCHMARKS.md) atomically, keeping the rest."""

from __future__ import annotations

from pathlib import Path

from voice.files import write_atomic


def update_section(path: str | Path, heading: str, body: str) -> None:
    """Replace the section that starts with the line `heading` (up to the next `## `), or
    append `body` if there is none. `body` includes its own heading line."""
    path = Path(path)
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    body = body.rstrip("\n") + "\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip("\n") == heading), None)
    if start is None:
        text = text.rstrip("\n") + "\n\n" + body
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        rest = "".join(lines[end:])
        text = "".join(lines[:start]) + body + ("\n" + rest if rest else "")
    write_atomic(path, text)
