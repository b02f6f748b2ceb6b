"""Bearer tokens and roles (agent, supervisor, admin, auditor), checked in constant time.

Roles follow least privilege for call content under the PDPO (Cap. 486): an agent sees only
calls assigned to it (or that its token started), a supervisor sees every call and the
all-calls stream, an admin sees configuration, metrics and analytics aggregates but no call
content, an auditor sees the audit jobs and only the calls drawn in an audit sample (their
transcript, recording, corrections and reviews: voice/quality/reviews.py `may_review`), never
live calls or analytics.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from pathlib import Path

from voice.errors import ConfigError
from voice.server.audit import audit

ROLES = ("agent", "supervisor", "admin", "auditor")
PERMISSIONS = {
    "agent": frozenset({"ingest", "own_calls", "transcribe"}),
    "supervisor": frozenset(
        {
            "ingest",
            "own_calls",
            "all_calls",
            "transcribe",
            "metrics",
            "analytics",
            "referrals",
            "audit",
        }
    ),
    "admin": frozenset({"ingest", "metrics", "config", "analytics", "referrals"}),
    # `audit` alone reaches only sampled calls; with `all_calls` (a supervisor) any stored call
    "auditor": frozenset({"audit"}),
}


@dataclass(frozen=True)
class Principal:
    """Who a request is: a role and a name (the name assigned calls refer to)."""

    role: str
    name: str

    def can(self, permission: str) -> bool:
        return permission in PERMISSIONS[self.role]

    def may_read(self, call_agent: str | None, call_owner: str | None) -> bool:
        """May this principal read a call assigned to `call_agent`, started by `call_owner`?"""
        if self.can("all_calls"):
            return True
        return self.can("own_calls") and self.name in (call_agent, call_owner)


ANONYMOUS = Principal("supervisor", "local-dev")  # what --insecure-no-auth grants everyone


def load_tokens(path: str | Path) -> dict[str, dict[str, str]]:
    """Read {"tokens": {TOKEN: ROLE | {"role": ROLE, "name": NAME}}} from YAML or JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read auth file ({exc.strerror})") from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # json and yaml raise different types
        raise ConfigError(f"{path}: not valid YAML/JSON ({exc})") from None
    tokens = data.get("tokens") if isinstance(data, dict) else None
    if not isinstance(tokens, dict) or not tokens:
        raise ConfigError(f'{path}: expected {{"tokens": {{"<token>": "{"|".join(ROLES)}"}}}}')
    out: dict[str, dict[str, str]] = {}
    for token, value in tokens.items():
        entry = value if isinstance(value, dict) else {"role": value}
        role = entry.get("role")
        if role not in ROLES:
            raise ConfigError(
                f"{path}: token {fingerprint(str(token))}: role must be one of {ROLES}"
            )
        if len(str(token)) < 16:
            raise ConfigError(
                f"{path}: token {fingerprint(str(token))} is shorter than 16 characters"
            )
        name = str(entry.get("name") or f"{role}-{fingerprint(str(token))}")
        out[str(token)] = {"role": role, "name": name}
    return out


def fingerprint(token: str) -> str:
    """A short, non-reversible id for a token (for logs and default names)."""
    return hashlib.sha256(token.encode()).hexdigest()[:8]


class Authenticator:
    """Maps presented tokens to principals."""

    def __init__(self, tokens: dict[str, dict[str, str]], insecure_no_auth: bool = False):
        self._tokens = [(t.encode(), Principal(e["role"], e["name"])) for t, e in tokens.items()]
        self.insecure = insecure_no_auth and not tokens

    def check(self, token: str | None) -> Principal | None:
        """The principal for `token`, or None. Compares against every token in constant time;
        a token that matches none is a failed authentication, audited."""
        if self.insecure:
            return ANONYMOUS
        if not token:
            return None
        presented = token.encode()
        found = None
        for known, principal in self._tokens:
            if hmac.compare_digest(known, presented):
                found = principal
        if found is None:  # audited here, so every transport's refusals are, whatever the route
            audit("authenticate", "failure", reason="bad_token")
        return found


def token_from(headers, query_params) -> str | None:
    """The token in `Authorization: Bearer ...` or the `token` query parameter."""
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return query_params.get("token") or None
