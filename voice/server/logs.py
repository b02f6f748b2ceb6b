"""JSON-line logs in one ECS-style schema, with personal data masked and credentials redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass

from voice.server.pii import redact

# `extra=` key -> the ECS field it is written as. README "Logs and audit" documents the same.
FIELDS = {
    "dataset": "event.dataset",  # "voice.audit" on audit records
    "action": "event.action",
    "outcome": "event.outcome",  # "success" | "failure"
    "reason": "event.reason",
    "category": "event.category",
    "duration_ns": "event.duration",
    "user": "user.id",
    "roles": "user.roles",
    "client": "client.ip",
    "request_id": "http.request.id",
    "method": "http.request.method",
    "status_code": "http.response.status_code",
    "path": "url.path",  # never with its query string
    "call_id": "voice.call.id",
    "protocol": "voice.protocol",
    "status": "voice.status",
    "code": "voice.close_code",
}
# Only free text is masked: ids, times and codes stay exactly as they are, so they can be joined.
MASKED = frozenset({"message", "error.stack_trace"})

# Loggers whose lines can carry what a client sent (the request line, headers, frames): the
# credential filter sits on each of them, so it rewrites a record before any handler (ours, pytest's
# caplog, a deployment's own) sees it. `voice` children are covered by the handler's filter.
SOURCES = ("voice", "voice.audit", "voice.access", "uvicorn", "uvicorn.error", "uvicorn.access",
           "uvicorn.asgi", "websockets.server", "websockets.client")  # fmt: skip

REDACTED = "***"
_SECRET_NAME = r"[\w.-]*(?:token|secret|password|passwd|api[_-]?key|signature)[\w.-]*"
_SECRET_PATTERNS = (
    # `Authorization: Bearer abc` (websockets' header dump), `"authorization": "Basic abc"`.
    re.compile(
        r"(?i)\b((?:proxy-)?authorization|cookie|x-api-key)([\"']?\s*[:=]\s*)([\"']?)"
        r"(?:(?:bearer|basic)\s+)?[^\s\"',;&]+"
    ),
    # `?token=abc`, `token='abc'` (a dataclass repr), `"token": "abc"` (Twilio customParameters).
    re.compile(rf"(?i)((?<![\w-]){_SECRET_NAME})([\"']?\s*[:=]\s*)([\"']?)[^\s\"'&;,}}]+"),
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/=-]+")
# websockets' DEBUG frame dumps (`< TEXT '{"event": "start", ...}' [84 bytes]`) cut a payload in
# the middle, which can leave the tail of a token with no key to find it by: drop every payload.
_FRAME = re.compile(r"^([<>] (?:TEXT|BINARY|CONT)) .*( \[[^\]]*\])$", re.DOTALL)


class SecretFilter(logging.Filter):
    """Rewrites credentials in a record to `***`: known tokens wherever they appear, and any value
    of a token-like query parameter, JSON key or Authorization header."""

    def __init__(self, secrets: Iterable[str] = ()):
        super().__init__()
        known = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._known = re.compile("|".join(map(re.escape, known))) if known else None

    def scrub(self, text: str) -> str:
        if self._known is not None:
            text = self._known.sub(REDACTED, text)
        for pattern in _SECRET_PATTERNS:
            text = pattern.sub(rf"\1\2\3{REDACTED}", text)
        text = _FRAME.sub(rf"\1 {REDACTED}\2", text)
        return _BEARER.sub(rf"\1 {REDACTED}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = self.scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:  # formatters reuse exc_text as it is
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = self.scrub(record.stack_info)
        return True


@dataclass(frozen=True)
class RequestInfo:
    """The HTTP request or WebSocket being served: its id and the client's address."""

    id: str
    client_ip: str | None


_request: ContextVar[RequestInfo | None] = ContextVar("voice_request", default=None)


class RequestContext:
    """ASGI middleware: each request and WebSocket gets an id, returned as `X-Request-ID` and
    written on every log line while it is served. HTTP requests get one access line each (with the
    path, never the query string: it may carry a token)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        # Always our own id: one a client sent could be forged to muddle the audit trail.
        info = RequestInfo(uuid.uuid4().hex, (scope.get("client") or (None,))[0])
        reset = _request.set(info)
        started, status = time.perf_counter(), None

        async def send_with_id(message) -> None:
            nonlocal status
            if message["type"] in ("http.response.start", "websocket.accept"):
                status = message.get("status")
                headers = [*message.get("headers", []), (b"x-request-id", info.id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if scope["type"] == "http":
                path = scope.get("path", "")
                level = logging.DEBUG if path == "/healthz" else logging.INFO  # probes poll it
                logging.getLogger("voice.access").log(
                    level, "%s %s %s", scope.get("method"), path, status or "-",
                    extra={"method": scope.get("method"), "path": path, "status_code": status,
                           "duration_ns": int((time.perf_counter() - started) * 1e9)},
                )  # fmt: skip
            _request.reset(reset)


class JsonFormatter(logging.Formatter):
    """One JSON object a line with flat dotted ECS names (`log.level`, `event.action`, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "@timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "log.level": record.levelname.lower(),
            "log.logger": record.name,
            "message": record.getMessage(),
        }
        request = _request.get()
        if request is not None:
            data["http.request.id"] = request.id
            if request.client_ip:
                data["client.ip"] = request.client_ip
        for key, name in FIELDS.items():
            value = record.__dict__.get(key)
            if value is not None:
                data[name] = value
        if record.exc_info:  # the message is the stack trace's last line (scrubbed with it)
            data["error.type"] = record.exc_info[0].__name__
        if record.exc_info or record.exc_text:
            data["error.stack_trace"] = record.exc_text or self.formatException(record.exc_info)
        for name in MASKED & data.keys():
            data[name] = redact(data[name])
        return json.dumps(data, ensure_ascii=False, default=str)


def configure(level: int = logging.INFO, stream=None, secrets: Iterable[str] = ()) -> None:
    """Every logger to `stream` as JSON lines: `voice` at `level`, audit records always, uvicorn
    at INFO or above (its DEBUG includes websockets' frame dumps: raw start messages and audio),
    other libraries at WARNING. `secrets` (the configured tokens) are redacted wherever they
    appear, besides anything that looks like a credential."""
    redactor = SecretFilter(secrets)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(redactor)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    levels = {"voice": level, "voice.audit": min(level, logging.INFO),
              "uvicorn": max(level, logging.INFO), "uvicorn.error": max(level, logging.INFO)}  # fmt: skip
    for name in SOURCES:
        logger = logging.getLogger(name)
        logger.filters[:] = [f for f in logger.filters if not isinstance(f, SecretFilter)]
        logger.addFilter(redactor)
        if name in levels:
            logger.handlers.clear()
            logger.setLevel(levels[name])
            logger.propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # our access line leaves the query out


__all__ = ["FIELDS", "JsonFormatter", "RequestContext", "SecretFilter", "configure"]
