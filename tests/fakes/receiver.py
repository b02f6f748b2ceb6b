"""A webhook receiver double: records deliveries, verifies Standard Webhooks / DingTalk signatures, answers as scripted."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from . import LoopbackServer, QuietHandler

Format = Literal["standard", "dingtalk", "slack"]
# A scripted answer: (status, headers) or (status, headers, body).
Scripted = tuple[int, dict[str, str]] | tuple[int, dict[str, str], bytes | str | dict]

# DingTalk's robot rejects a signature whose millisecond timestamp is over an hour from its clock.
DINGTALK_WINDOW_MS = 3600 * 1000


@dataclass
class Received:
    """One POST as it arrived, and what the receiver answered."""

    path: str
    query: dict[str, str]  # first value of each parameter, URL-decoded
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any  # parsed body, None when it is not JSON
    verified: bool | None  # None: no secret, nothing to verify
    error: str | None  # why verification failed
    status: int
    at: float = field(default_factory=time.time)

    @property
    def webhook_id(self) -> str | None:
        return self.headers.get("webhook-id")


class _Handler(QuietHandler):
    owner: WebhookReceiver

    def do_POST(self) -> None:
        body = self.read_body()
        status, headers, content = self.owner._handle(self.path, dict(self.headers.items()), body)
        self.answer(status, content, headers)

    def do_GET(self) -> None:
        self.answer(405, b"", {"Allow": "POST"})


class WebhookReceiver(LoopbackServer):
    """An endpoint that an outbound webhook sender posts to.

    format "standard": verifies `webhook-id/-timestamp/-signature` with the `standardwebhooks`
    reference library when `secret` (whsec_...) is set; a failed check is answered 401 unless
    `reject_unverified=False`. Success is 204.
    format "dingtalk": verifies the `timestamp` and `sign` query parameters when `secret` (SEC...)
    is set; answers HTTP 200 always, with `errcode` 0 or 310000 as DingTalk's robot does.
    format "slack": answers 200 `ok` (text/html), 400 `invalid_payload` / `no_text` for bad bodies,
    as Slack's incoming webhooks do.
    """

    handler = _Handler

    def __init__(self, secret: str | None = None, format: Format = "standard", *,
                 reject_unverified: bool = True) -> None:  # fmt: skip
        super().__init__()
        if format not in ("standard", "dingtalk", "slack"):
            raise ValueError(f"unknown format {format!r}")
        self.secret = secret
        self.format = format
        self.reject_unverified = reject_unverified
        self._webhook = Webhook(secret) if secret and format == "standard" else None
        self._received: list[Received] = []
        self._script: deque[Scripted] = deque()
        self._cond = threading.Condition()

    # -- scripting and inspection ---------------------------------------------------------------

    def respond_with(self, answers: list[Scripted]) -> None:
        """Answer the next requests with these, in order (after verification is recorded);
        then the format's normal success answer again."""
        with self._cond:
            self._script.extend(answers)

    @property
    def received(self) -> list[Received]:
        with self._cond:
            return list(self._received)

    def clear(self) -> None:
        with self._cond:
            self._received.clear()

    def wait_for(self, n: int, timeout: float = 5.0) -> list[Received]:
        """Block until at least `n` requests have arrived; AssertionError after `timeout` s."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._received) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{self.url}: {len(self._received)} requests after {timeout}s, wanted {n}"
                    )
                self._cond.wait(left)
            return list(self._received)

    def ids(self) -> list[str]:
        """`webhook-id` of every request in arrival order, retries included."""
        return [r.webhook_id for r in self.received if r.webhook_id is not None]

    def unique_ids(self) -> set[str]:
        """Distinct `webhook-id`s seen (at-least-once: every expected id is in here)."""
        return set(self.ids())

    def delivered_ids(self) -> list[str]:
        """`webhook-id`s of verified requests answered 2xx, with repeats (exactly-once: no repeats)."""
        return [r.webhook_id for r in self.received
                if r.webhook_id is not None and r.verified is not False and 200 <= r.status < 300]  # fmt: skip

    # -- the endpoint ---------------------------------------------------------------------------

    def _handle(self, target: str, raw_headers: dict[str, str], body: bytes
                ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        parts = urlsplit(target)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        headers = {k.lower(): v for k, v in raw_headers.items()}
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        verified, error = self._verify(query, headers, body)
        with self._cond:
            scripted = self._script.popleft() if self._script else None
        if scripted is not None:
            status, answer_headers, content = _scripted(scripted)
        else:
            status, answer_headers, content = self._normal_answer(verified, error, body, parsed)
        record = Received(parts.path, query, headers, body, parsed, verified, error, status)
        with self._cond:
            self._received.append(record)
            self._cond.notify_all()
        return status, answer_headers, content

    def _verify(self, query: dict[str, str], headers: dict[str, str], body: bytes
                ) -> tuple[bool | None, str | None]:  # fmt: skip
        if not self.secret or self.format == "slack":
            return None, None
        if self.format == "dingtalk":
            return _verify_dingtalk(self.secret, query)
        assert self._webhook is not None
        try:
            self._webhook.verify(body, headers, json_parse=False)
        except (WebhookVerificationError, ValueError, UnicodeDecodeError) as exc:
            # ValueError: a malformed signature list or base64 is a failed check, not a crash
            return False, str(exc) or type(exc).__name__
        return True, None

    def _normal_answer(self, verified: bool | None, error: str | None, body: bytes, parsed: Any
                       ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        if self.format == "dingtalk":
            if verified is False:
                return 200, JSON, _json({"errcode": 310000, "errmsg": f"{error}"})
            return 200, JSON, _json({"errcode": 0, "errmsg": "ok"})
        if self.format == "slack":
            if not isinstance(parsed, dict):
                return 400, TEXT, b"invalid_payload"
            if not (parsed.get("text") or parsed.get("blocks") or parsed.get("attachments")):
                return 400, TEXT, b"no_text"
            return 200, TEXT, b"ok"
        if verified is False and self.reject_unverified:
            return 401, JSON, _json({"error": "invalid signature", "detail": error})
        return 204, {}, b""


def dingtalk_sign(secret: str, timestamp_ms: str) -> str:
    """DingTalk's robot signature, before URL-encoding: base64(HMAC-SHA256(secret, ts \\n secret))."""
    digest = hmac.new(
        secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256
    ).digest()
    return base64.b64encode(digest).decode()


def _verify_dingtalk(secret: str, query: dict[str, str]) -> tuple[bool, str | None]:
    timestamp, sign = query.get("timestamp"), query.get("sign")
    if not timestamp or not sign:
        return False, "sign not match: timestamp and sign are required"
    try:
        skew = abs(int(timestamp) - time.time() * 1000)
    except ValueError:
        return False, "invalid timestamp"
    if skew > DINGTALK_WINDOW_MS:
        return False, "invalid timestamp: more than an hour from the server clock"
    # parse_qs already URL-decoded `sign`; an un-encoded '+' arrives as ' ' and fails, as on DingTalk
    if not hmac.compare_digest(sign, dingtalk_sign(secret, timestamp)):
        return False, "sign not match"
    return True, None


def _scripted(answer: Scripted) -> tuple[int, dict[str, str], bytes]:
    status, headers = answer[0], dict(answer[1])
    content: Any = answer[2] if len(answer) > 2 else b""
    if isinstance(content, dict):
        headers.setdefault("Content-Type", "application/json")
        content = _json(content)
    elif isinstance(content, str):
        content = content.encode()
    return status, headers, content


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


JSON = {"Content-Type": "application/json; charset=utf-8"}
TEXT = {"Content-Type": "text/html"}  # what Slack's incoming webhooks send with `ok`
