"""The integrations file (`voice serve --integrations FILE`): webhooks, Zendesk, routing, checked.

Every section is optional. Errors name the key (`webhooks[1].url`), so a deployment's typo stops the
server at start instead of silently sending nothing. Secrets may sit in the file (`secret`) or in
the environment (`secret_env`); Zendesk's always come from the environment.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from voice.errors import ConfigError

EVENT_TYPES = (
    "alert.high_priority",
    "alert.negative",
    "handoff",
    "referral.created",
    "referral.sla_breached",
    "call.ended",
    "ticket.comment",
)
FORMATS = ("standard", "dingtalk", "slack")
OUTCOMES = ("unresolved", "handoff", "any")
ZENDESK = "zendesk"  # the outbox target name of the Zendesk sync


@dataclass(frozen=True)
class Endpoint:
    """One webhook receiver: where, how signed, which event types."""

    name: str
    url: str
    events: tuple[str, ...]
    format: str = "standard"
    secret: str = field(default="", repr=False)  # whsec_... (standard), SEC... (dingtalk)


@dataclass(frozen=True)
class Zendesk:
    """Zendesk Support: API credentials and the secret of its signed webhooks."""

    url: str
    email: str
    token: str = field(repr=False)
    webhook_secret: str = field(default="", repr=False)  # empty: the receiver refuses everything


@dataclass(frozen=True)
class RoutingRule:
    """Refer a call to `department` when a turn of `category` ends as `outcome`."""

    category: str  # a KB category, or "*" for any
    outcome: str  # unresolved | handoff | any
    department: str
    sla_minutes: float


@dataclass(frozen=True)
class DeliveryPolicy:
    """How the outbox retries: exponential backoff with jitter, then the dead-letter state."""

    max_attempts: int = 8
    backoff_seconds: float = 5.0  # the wait after the first failure; doubled after each
    max_backoff_seconds: float = 3600.0
    timeout_seconds: float = 10.0  # one HTTP request
    sla_check_seconds: float = 15.0  # how often referral deadlines are checked


@dataclass(frozen=True)
class IntegrationsConfig:
    """The whole file; `IntegrationsConfig()` is "no integrations"."""

    webhooks: tuple[Endpoint, ...] = ()
    allow_private_networks: bool = False
    zendesk: Zendesk | None = None
    routing: tuple[RoutingRule, ...] = ()
    public_url: str = ""  # the console's address as agents reach it, for links in messages
    delivery: DeliveryPolicy = DeliveryPolicy()

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.webhooks if e.name == name), None)

    def targets(self) -> list[str]:
        """Every outbox target: the endpoints' names, and `zendesk` when configured."""
        return [e.name for e in self.webhooks] + ([ZENDESK] if self.zendesk else [])

    def secrets(self) -> list[str]:
        """Every credential in the file and the environment it named, for the log redactor
        (webhook secrets, the URL query strings that carry robots' tokens, Zendesk's token)."""
        found = [e.secret for e in self.webhooks] + [urlsplit(e.url).query for e in self.webhooks]
        if self.zendesk:
            found += [self.zendesk.token, self.zendesk.webhook_secret]
        return [s for s in found if s]

    def console_link(self, call_id: str) -> str | None:
        return f"{self.public_url.rstrip('/')}/console/calls/{call_id}" if self.public_url else None


def load(path: str | Path, environ: dict[str, str] | None = None) -> IntegrationsConfig:
    """Read and check the integrations file; ConfigError names the file and the key."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read integrations file ({exc.strerror})") from None
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    try:
        return parse(data, environ)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(data: Any, environ: dict[str, str]) -> IntegrationsConfig:
    """The checked config from the file's parsed YAML."""
    top = _mapping(data, "the file")
    _known(top, "", ("webhooks", "allow_private_networks", "zendesk", "routing", "public_url",
                     "delivery"))  # fmt: skip
    allow_private = _bool(top.get("allow_private_networks", False), "allow_private_networks")
    webhooks = tuple(
        _endpoint(item, f"webhooks[{i}]", environ, allow_private)
        for i, item in enumerate(_list(top.get("webhooks", []), "webhooks"))
    )
    names = [e.name for e in webhooks]
    for name in names:
        if names.count(name) > 1 or name == ZENDESK:
            raise ConfigError(f"webhooks: name {name!r} is used twice or reserved")
    zendesk = _zendesk(top["zendesk"], environ, allow_private) if top.get("zendesk") else None
    routing = tuple(
        _rule(item, f"routing[{i}]")
        for i, item in enumerate(_list(top.get("routing", []), "routing"))
    )
    public_url = _str(top.get("public_url", ""), "public_url", required=False)
    if public_url and urlsplit(public_url).scheme not in ("http", "https"):
        raise ConfigError("public_url: must be an http(s) URL")
    return IntegrationsConfig(webhooks, allow_private, zendesk, routing, public_url,
                              _delivery(top.get("delivery", {})))  # fmt: skip


def check_url(url: str, allow_private: bool, key: str = "url") -> str:
    """The URL if it may be called: http(s) with a host, and not a loopback, private, link-local
    or reserved address unless `allow_private` (names are resolved again before each request)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{key}: {url!r} must be an http:// or https:// URL with a host")
    if not allow_private:
        host = parts.hostname
        if host.lower() in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
            raise ConfigError(f"{key}: {host} is this machine; set allow_private_networks: true "
                              "to allow loopback and private addresses")  # fmt: skip
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return url  # a name: checked when resolved (resolve_public)
        _public(address, key, host)
    return url


def resolve_public(host: str, port: int) -> None:
    """Resolve `host` and refuse it if any address is not public (a name pointed at an internal
    service). Raises ConfigError; blocking, so call it from a thread."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectionError(f"cannot resolve {host}: {exc}") from None
    for info in infos:
        _public(ipaddress.ip_address(info[4][0]), "url", host)


def _public(address: ipaddress._BaseAddress, key: str, host: str) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    if not address.is_global or address.is_multicast:
        raise ConfigError(f"{key}: {host} is a loopback, private or reserved address; set "
                          "allow_private_networks: true to allow it")  # fmt: skip


def _endpoint(item: Any, key: str, environ: dict[str, str], allow_private: bool) -> Endpoint:
    item = _mapping(item, key)
    _known(item, key, ("name", "url", "secret", "secret_env", "events", "format"))
    name = _str(item.get("name"), f"{key}.name")
    url = check_url(_str(item.get("url"), f"{key}.url"), allow_private, f"{key}.url")
    fmt = item.get("format", "standard")
    if fmt not in FORMATS:
        raise ConfigError(f"{key}.format: {fmt!r} is not one of {', '.join(FORMATS)}")
    events = _list(item.get("events"), f"{key}.events")
    if not events:
        raise ConfigError(f"{key}.events: list the event types this endpoint receives")
    for i, event in enumerate(events):
        if event not in EVENT_TYPES:
            raise ConfigError(f"{key}.events[{i}]: {event!r} is not one of "
                              f"{', '.join(EVENT_TYPES)}")  # fmt: skip
    secret = _secret(item, key, environ, required=fmt == "standard")
    if fmt == "standard":
        _check_whsec(secret, f"{key}.secret")
    return Endpoint(name, url, tuple(events), fmt, secret)


def _check_whsec(secret: str, key: str) -> None:
    if not secret.startswith("whsec_"):
        raise ConfigError(f"{key}: a Standard Webhooks secret starts with whsec_")
    try:
        raw = base64.b64decode(secret[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(f"{key}: the part after whsec_ must be base64") from None
    if not 24 <= len(raw) <= 64:
        raise ConfigError(f"{key}: the secret must be 24 to 64 bytes (base64 after whsec_)")


def _secret(item: dict, key: str, environ: dict[str, str], required: bool) -> str:
    if "secret" in item and "secret_env" in item:
        raise ConfigError(f"{key}: give secret or secret_env, not both")
    if "secret_env" in item:
        name = _str(item["secret_env"], f"{key}.secret_env")
        value = environ.get(name, "")
        if not value:
            raise ConfigError(f"{key}.secret_env: environment variable {name} is not set")
        return value
    value = _str(item.get("secret", ""), f"{key}.secret", required=False)
    if required and not value:
        raise ConfigError(f"{key}.secret: required (or secret_env: NAME)")
    return value


def _zendesk(item: Any, environ: dict[str, str], allow_private: bool) -> Zendesk:
    item = _mapping(item, "zendesk")
    _known(item, "zendesk", ("url", "email", "token_env", "webhook_secret_env"))
    url = check_url(_str(item.get("url"), "zendesk.url"), allow_private, "zendesk.url")
    email = _str(item.get("email"), "zendesk.email")
    token_name = _str(item.get("token_env"), "zendesk.token_env")
    token = environ.get(token_name, "")
    if not token:
        raise ConfigError(f"zendesk.token_env: environment variable {token_name} is not set")
    secret = ""
    if "webhook_secret_env" in item:
        secret_name = _str(item["webhook_secret_env"], "zendesk.webhook_secret_env")
        secret = environ.get(secret_name, "")
        if not secret:
            raise ConfigError(
                f"zendesk.webhook_secret_env: environment variable {secret_name} is not set"
            )
    return Zendesk(url.rstrip("/"), email, token, secret)


def _rule(item: Any, key: str) -> RoutingRule:
    item = _mapping(item, key)
    _known(item, key, ("when", "department", "sla_minutes"))
    when = _mapping(item.get("when"), f"{key}.when")
    _known(when, f"{key}.when", ("category", "outcome"))
    category = _str(when.get("category", "*"), f"{key}.when.category")
    outcome = when.get("outcome", "any")
    if outcome not in OUTCOMES:
        raise ConfigError(f"{key}.when.outcome: {outcome!r} is not one of {', '.join(OUTCOMES)}")
    department = _str(item.get("department"), f"{key}.department")
    sla = item.get("sla_minutes")
    if isinstance(sla, bool) or not isinstance(sla, int | float) or sla <= 0:
        raise ConfigError(f"{key}.sla_minutes: a positive number of minutes")
    return RoutingRule(category, outcome, department, float(sla))


def _delivery(item: Any) -> DeliveryPolicy:
    item = _mapping(item, "delivery")
    defaults = DeliveryPolicy()
    names = tuple(defaults.__dataclass_fields__)
    _known(item, "delivery", names)
    values = {}
    for name in names:
        value = item.get(name, getattr(defaults, name))
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"delivery.{name}: a positive number")
        values[name] = type(getattr(defaults, name))(value)
    return DeliveryPolicy(**values)


def _mapping(value: Any, key: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: expected a mapping of keys to values")
    return value


def _list(value: Any, key: str) -> list:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list")
    return value


def _str(value: Any, key: str, required: bool = True) -> str:
    if value is None or value == "":
        if required:
            raise ConfigError(f"{key}: required")
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected text")
    return value


def _bool(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: true or false")
    return value


def _known(item: dict, key: str, allowed: tuple[str, ...]) -> None:
    for name in item:
        if name not in allowed:
            where = f"{key}.{name}" if key else str(name)
            raise ConfigError(f"{where}: unknown key (allowed: {', '.join(allowed)})")


__all__ = [
    "EVENT_TYPES",
    "FORMATS",
    "ZENDESK",
    "DeliveryPolicy",
    "Endpoint",
    "IntegrationsConfig",
    "RoutingRule",
    "Zendesk",
    "check_url",
    "load",
    "parse",
    "resolve_public",
]
