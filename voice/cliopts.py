"""Command-line flags whose defaults are an options dataclass's, so each default lives in one place.

`voice serve` (ServerConfig), the ASR and VAD flags of `voice transcribe`/`eval`/`demo`/`serve`
(AsrOptions, VadOptions) and `voice eval`'s scoring flags read their defaults here from an
instance of the dataclass; `finetune/cli.py` generates its flags from FinetuneOptions the same way.
Light on purpose: argparse only, the dataclass comes from the caller.
"""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_HELP = " (default: %(default)s)"


def add_option(
    parser: argparse.ArgumentParser,
    flag: str,
    defaults: Any,
    field: str | None = None,
    *,
    help: str,
    **kwargs: Any,
) -> argparse.Action:
    """Add `flag` to `parser` with the default `defaults.<field>` (`field`: the flag's name in
    snake case, `--max-calls` -> `max_calls`). The default is appended to the help unless the help
    already shows it (`%(default)...`) or there is nothing to show (None or False: the help says
    what the flag does when given)."""
    name = field or flag.lstrip("-").replace("-", "_")
    default = getattr(defaults, name)  # AttributeError names a flag mapped to no field
    if default is not None and default is not False and "%(default" not in help:
        help += DEFAULT_HELP
    return parser.add_argument(flag, default=default, help=help, **kwargs)


def on_off(value: bool) -> str:
    """A boolean default as help text shows it."""
    return "on" if value else "off"


__all__ = ["DEFAULT_HELP", "add_option", "on_off"]
