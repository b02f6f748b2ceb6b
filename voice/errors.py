"""Errors the user can act on: each message says what is wrong and, where it can, what to run."""


class VoiceError(Exception):
    """Base of the project's user-facing errors; the CLI prints the message and exits 2."""


class ModelError(VoiceError):
    """A model is missing, corrupt or unusable."""


class ConfigError(VoiceError):
    """An option or configuration file is invalid."""
