"""Errors from scoring and evaluation that the user can act on."""

from voice.errors import VoiceError


class EvalError(VoiceError, ValueError):
    """Input that cannot be scored: an empty reference, a bad manifest, an unknown model."""


__all__ = ["EvalError"]
