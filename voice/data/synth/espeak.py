"""Which characters espeak-ng yue can pronounce (it spells unknown ones out as code points)."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable

from voice.data.chinese import is_cjk
from voice.tts import espeak_path

log = logging.getLogger(__name__)

_SPELLED = "l'e1t@"  # espeak-ng says "letter ..." for a character it does not know


def _phonemes(lines: list[str]) -> list[str]:
    text = "".join(f"{line}。\n" for line in lines)
    result = subprocess.run(
        [espeak_path(), "-v", "yue", "-x", "-q"], input=text, capture_output=True, text=True
    )
    return result.stdout.split("\n")[: len(lines)] if result.returncode == 0 else []


def _known(phonemes: str) -> bool:
    return phonemes.count("_|") == 1 and _SPELLED not in phonemes and "(en)" not in phonemes


def unpronounceable(chars: Iterable[str]) -> set[str]:
    """The CJK characters of `chars` that espeak-ng yue cannot say as one Cantonese syllable."""
    chars = sorted({c for c in chars if is_cjk(c)})
    if not chars:
        return set()
    out = _phonemes(chars)
    if len(out) != len(chars):  # output out of step: fall back to one call per character
        out = [(_phonemes([c]) or [""])[0] for c in chars]
    bad = {c for c, ph in zip(chars, out, strict=True) if not _known(ph)}
    log.debug("espeak-ng yue: %d of %d characters unpronounceable", len(bad), len(chars))
    return bad
