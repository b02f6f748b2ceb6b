"""Server settings: one frozen dataclass with documented defaults, checked once."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

from voice.errors import ConfigError

LOOPBACK_NAMES = ("localhost",)
TLS_VERSIONS = ("1.2", "1.3")  # values of tls_min_version
DB_NAME = "voice_calls.sqlite3"


def default_db_path() -> str:
    """`$XDG_DATA_HOME/voice/voice_calls.sqlite3`, else `~/.local/share/voice/...`: a data folder
    of the user's, never the directory the server happens to start in (nor a git checkout)."""
    data_home = os.environ.get("XDG_DATA_HOME", "")
    # The XDG spec says a relative value is invalid and must be ignored.
    root = Path(data_home) if os.path.isabs(data_home) else Path.home() / ".local" / "share"
    return str(root / "voice" / DB_NAME)


@dataclass(frozen=True)
class ServerConfig:
    """Everything `voice serve` needs besides the model. Defaults suit a 2-core CPU machine."""

    host: str = "127.0.0.1"  # HTTP/WebSocket listen address
    port: int = 8080
    audiosocket_host: str = "127.0.0.1"  # AudioSocket carries no credentials: keep it private
    audiosocket_port: int | None = None  # None: no AudioSocket listener
    audiosocket_allow_remote: bool = False  # AudioSocket is plain TCP without auth: a host other
    # than loopback must be asked for explicitly (a private VLAN, or an SSH/WireGuard tunnel)
    tokens: dict[str, dict[str, str]] = field(default_factory=dict)  # token -> {role, name}
    insecure_no_auth: bool = False  # every client is a supervisor; loopback hosts only
    tls_cert: str | None = None  # PEM certificate; with tls_key, serve HTTPS/WSS
    tls_key: str | None = None
    tls_min_version: str = "1.3"  # oldest TLS accepted: "1.3", or "1.2" for older clients
    db_path: str = field(default_factory=default_db_path)  # SQLite store of calls and events;
    # created 0600 (its WAL files too) in a 0700 folder when the folder is new; or a
    # postgresql:// URL several servers share (never logged or shown with its password)
    rubric: str | None = None  # the audit scoring form (YAML); None: the shipped one
    record_dir: str | None = None  # keep each call's caller audio here (opt-in: consent, PDPO)
    retention_days: int = 0  # calls started longer ago are deleted with their events and
    # recordings (0: kept)
    retention_check_s: float = 3600.0  # how often expired calls are deleted (and once at start)
    max_calls: int = 32  # concurrent live calls; more are refused (close 1013 / HTTP 503)
    max_frame_bytes: int = 64 * 1024  # largest WebSocket message / AudioSocket frame accepted
    max_bad_messages: int = 50  # malformed messages tolerated per call before it is closed
    start_timeout_s: float = 10.0  # a stream must send its start message within this time
    idle_timeout_s: float = 30.0  # a started call that sends no audio this long is ended (close
    # 4408 / AudioSocket hang-up); empty audio frames do not count as audio
    max_call_seconds: float = 4 * 3600.0  # a call is ended this long after its start (close 4413)
    batch_max: int = 8  # segments decoded in one encoder call
    batch_wait_ms: int = 10  # after the first segment arrives, wait this long for others
    partial_ms: int = 0  # while a caller speaks, a `partial` transcript this often (0: none),
    # only when the ASR worker is idle; off by default: on 2 cores a partial decode still running
    # when the caller stops delays that turn's transcript (single-call p95 +0.5 s, BENCHMARKS.md)
    max_queue_seconds: float = 6.0  # bound on the ASR queue's estimated time to clear (see
    # scheduler.py): above half of it calls get a warning, above it the oldest queued segments of
    # the most-loaded call are shed
    max_queue_segments: int = 64  # hard bound on queued segments whatever the estimate
    subscriber_queue: int = 256  # events buffered per subscriber before it is dropped as slow
    max_upload_bytes: int = 50 * 1024 * 1024  # POST /v1/transcribe body limit
    max_upload_seconds: float = 2 * 3600.0  # longer audio is refused (413) from its header,
    # before decoding: a few MB of compressed silence can decode to gigabytes
    max_uploads: int = 2  # uploads transcribed at once; more get 503 with Retry-After
    upload_timeout_s: float = 300.0  # the whole body must arrive within this (else 408), so a
    # client trickling bytes cannot hold an upload slot for ever
    kb_watch_seconds: float = 5.0  # how often the KB file is checked for edits (0: never)
    # Context per customer (customers.py): a customer's language, unresolved run, order and last
    # topics carry over to their next call or message on any channel within this window (0: off)
    context_hours: float = 24.0
    conversation_idle_s: float = 1800.0  # a text conversation ends after this long without a
    # message (stored as `completed`); the customer's next message starts a new one
    max_message_chars: int = 2000  # POST /v1/messages text longer than this: 400 (WhatsApp
    # text is cut to it)
    max_messages_per_minute: int = 30  # per customer on POST /v1/messages; more: 429

    def validate(self) -> ServerConfig:
        if not self.tokens and not self.insecure_no_auth:
            raise ConfigError(
                "refusing to start without authentication: pass --auth FILE "
                "(or --insecure-no-auth for local development on a loopback host)"
            )
        if self.insecure_no_auth and not is_loopback(self.host):
            raise ConfigError(
                f"--insecure-no-auth is allowed only on a loopback host, not {self.host}"
            )
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if self.tls_min_version not in TLS_VERSIONS:
            raise ConfigError(f"tls_min_version must be one of {', '.join(TLS_VERSIONS)}")
        remote = self.audiosocket_port is not None and not is_loopback(self.audiosocket_host)
        if remote and not self.audiosocket_allow_remote:
            raise ConfigError(
                f"AudioSocket is plain TCP without authentication: refusing to listen on "
                f"{self.audiosocket_host}; pass --audiosocket-allow-remote if that network is "
                "private to the PBX"
            )
        if not 1 <= self.batch_max <= 64:
            raise ConfigError("batch_max must be between 1 and 64")
        if self.partial_ms and self.partial_ms < 200:
            raise ConfigError("partial_ms must be 0 (no partial transcripts) or at least 200")
        if self.max_queue_seconds <= 0 or self.max_queue_segments < 1:
            raise ConfigError("queue bounds must be positive")
        if self.start_timeout_s <= 0:
            raise ConfigError("start_timeout_s must be positive")
        if self.idle_timeout_s <= 0 or self.max_call_seconds <= 0:
            raise ConfigError("idle_timeout_s and max_call_seconds must be positive")
        if self.max_upload_seconds <= 0 or self.max_uploads < 1 or self.upload_timeout_s <= 0:
            raise ConfigError("max_upload_seconds and upload_timeout_s must be positive and "
                              "max_uploads at least 1")  # fmt: skip
        if self.retention_days < 0 or self.retention_check_s <= 0:
            raise ConfigError("retention_days must be 0 (keep) or more; retention_check_s > 0")
        if self.context_hours < 0:
            raise ConfigError("context_hours must be 0 (no carry-over) or more")
        if (self.conversation_idle_s <= 0 or self.max_message_chars < 1
                or self.max_messages_per_minute < 1):  # fmt: skip
            raise ConfigError("conversation_idle_s, max_message_chars and "
                              "max_messages_per_minute must be positive")  # fmt: skip
        if self.kb_watch_seconds < 0:
            raise ConfigError("kb_watch_seconds must be 0 (off) or positive")
        if self.max_frame_bytes < 320:
            raise ConfigError("max_frame_bytes must allow at least one 20 ms frame (320 bytes)")
        return self

    def public(self) -> dict:
        """The settings an admin may read (no tokens)."""
        from voice.server.db import masked

        data = {k: v for k, v in self.__dict__.items() if k != "tokens"}
        data["tokens"] = len(self.tokens)
        data["db_path"] = masked(self.db_path)  # a database URL's password is a secret too
        return data


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and localhost."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
