"""A Zendesk Support API double: token auth, tickets with idempotent creation, failure injection, signed event webhooks."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from . import LoopbackServer, QuietHandler

# Zendesk keeps an Idempotency-Key for two hours (Support API introduction, "Idempotency").
IDEMPOTENCY_TTL_S = 2 * 3600
EVENT_VERSION = "2022-11-06"  # `zendesk_event_version` of the ticket event schemas

TICKET = re.compile(r"^/api/v2/tickets(?:\.json)?$")
ONE_TICKET = re.compile(r"^/api/v2/tickets/(\d+)(?:\.json)?$")
COMMENTS = re.compile(r"^/api/v2/tickets/(\d+)/comments(?:\.json)?$")
ME = re.compile(r"^/api/v2/users/me(?:\.json)?$")
STATUSES = {"new", "open", "pending", "hold", "solved", "closed"}
UPDATABLE = ("subject", "status", "priority", "type", "tags", "external_id", "assignee_id",
             "group_id", "custom_fields")  # fmt: skip


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    """X-Zendesk-Webhook-Signature: base64(HMAC-SHA256(secret, timestamp + body))."""
    digest = hmac.new(secret.encode(), timestamp.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


@dataclass
class RecordedRequest:
    """One API request as the fake saw it, and the status it answered (0: dropped)."""

    method: str
    path: str  # without the query string
    query: dict[str, str]
    headers: dict[str, str]  # names lower-cased
    json: Any
    status: int = 0
    at: float = field(default_factory=time.time)


@dataclass
class WebhookDelivery:
    """One outbound event webhook POST and the receiver's answer (0: no HTTP response)."""

    invocation_id: str
    body: bytes
    headers: dict[str, str]
    statuses: list[int] = field(default_factory=list)  # one per send: first, then each resend()


@dataclass
class _Idempotent:
    fingerprint: str
    status: int
    headers: dict[str, str]
    body: bytes
    at: float


class _Handler(QuietHandler):
    owner: FakeZendesk

    def _serve(self) -> None:
        body = self.read_body()
        parts = urlsplit(self.path)
        outcome = self.owner._handle(self.command, parts.path, parts.query,
                                     dict(self.headers.items()), body)  # fmt: skip
        if outcome is None:
            self.drop()
            return
        status, headers, content = outcome
        self.answer(status, content, {"Content-Type": "application/json; charset=utf-8", **headers})

    do_GET = do_POST = do_PUT = do_DELETE = _serve


class FakeZendesk(LoopbackServer):
    """Zendesk's Support API at `.url` (use it as https://{subdomain}.zendesk.com).

    Auth: HTTP Basic `{email}/token:{token}`, else 401 {"error": "Couldn't authenticate you"}.
    POST /api/v2/tickets[.json]: needs ticket.comment.body (or html_body), else 422 RecordInvalid;
      201 {"ticket": ...}. Idempotency-Key: first use `x-idempotency-lookup: miss`; same key and
      same body within 2 h replays the stored 201 with `hit`; same key, other body: 400
      IdempotentRequestError. Only created tickets are stored under a key.
    PUT /api/v2/tickets/{id}[.json]: fields and/or a comment; 200 {"ticket", "audit"}; 404 RecordNotFound.
    GET /api/v2/tickets/{id}, /api/v2/tickets/{id}/comments, /api/v2/tickets?external_id=,
      /api/v2/users/me.
    Failure injection: fail_next() answers the next N requests (any endpoint, before auth) with an
    error status; drop_next_response() creates the next ticket but sends no response.
    Event webhooks: add_agent_comment() / resend() / send_raw() POST signed
    zen:event-type:ticket.comment_added events to `webhook_url`.
    """

    handler = _Handler
    account_id = 10101010
    bot_user_id = 900000000001  # the API token's user: submitter of tickets the API creates
    agent_user_id = 900000000002  # default author of add_agent_comment()

    def __init__(self, email: str, token: str, webhook_secret: str, webhook_url: str | None = None,
                 *, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        super().__init__()
        self.email = email
        self.token = token
        self.webhook_secret = webhook_secret
        self.webhook_url = webhook_url
        self.webhook_id = "01" + uuid.uuid4().hex[:24].upper()  # Zendesk webhook ids are ULIDs
        self.clock = clock  # tests move it past the 2 h idempotency window
        self._lock = threading.RLock()
        self._tickets: dict[int, dict[str, Any]] = {}
        self._users: dict[int, dict[str, Any]] = {}
        self._requests: list[RecordedRequest] = []
        self._keys: dict[str, _Idempotent] = {}
        self._failures: list[tuple[int, dict[str, str]]] = []
        self._drop_creates = 0
        self._deliveries: dict[str, WebhookDelivery] = {}
        self._ticket_ids = itertools.count(1)
        self._comment_ids = itertools.count(30000000001)
        self._user_ids = itertools.count(900000000101)
        self._audit_ids = itertools.count(50000000001)
        self._invocation_ids = itertools.count(8350205582)
        self._users[self.bot_user_id] = _user(self.bot_user_id, "API bot", email, role="admin")
        self._users[self.agent_user_id] = _user(self.agent_user_id, "Agent", None, role="agent")

    # -- test controls and accessors ------------------------------------------------------------

    @property
    def tickets(self) -> dict[int, dict[str, Any]]:
        """Ticket id -> the ticket as the API shows it, plus its `comments` list (a copy)."""
        with self._lock:
            return {tid: {**self._public(t), "comments": copy.deepcopy(t["comments"])}
                    for tid, t in self._tickets.items()}  # fmt: skip

    @property
    def users(self) -> dict[int, dict[str, Any]]:
        with self._lock:
            return copy.deepcopy(self._users)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def deliveries(self) -> list[WebhookDelivery]:
        with self._lock:
            return list(self._deliveries.values())

    def fail_next(self, status: int = 429, times: int = 1, retry_after: int | None = 1) -> None:
        """Answer the next `times` API requests with `status` (and `Retry-After` seconds)."""
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        with self._lock:
            self._failures.extend([(status, headers)] * times)

    def drop_next_response(self) -> None:
        """Create the next ticket for real, then close the connection without answering."""
        with self._lock:
            self._drop_creates += 1

    # -- the API ---------------------------------------------------------------------------------

    def _handle(self, method: str, path: str, query_string: str, raw_headers: dict[str, str],
                body: bytes) -> tuple[int, dict[str, str], bytes] | None:  # fmt: skip
        headers = {k.lower(): v for k, v in raw_headers.items()}
        query = {k: v[0] for k, v in parse_qs(query_string).items()}
        try:
            parsed = json.loads(body) if body else None
            bad_json = False
        except ValueError:
            parsed, bad_json = None, True
        record = RecordedRequest(method, path, query, headers, parsed)
        with self._lock:
            self._requests.append(record)
            outcome = self._route(method, path, query, headers, parsed, bad_json)
            record.status = 0 if outcome is None else outcome[0]
        return outcome

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str],
               body: Any, bad_json: bool) -> tuple[int, dict[str, str], bytes] | None:  # fmt: skip
        if self._failures:
            status, extra = self._failures.pop(0)
            return status, extra, _json(_failure_body(status))
        if not self._authorized(headers.get("authorization", "")):
            return (
                401,
                {"WWW-Authenticate": 'Basic realm="Web Password"'},
                _json({"error": "Couldn't authenticate you"}),
            )
        if bad_json:
            return 400, {}, _json({"error": "Unprocessable Entity",
                                   "description": "Server could not parse JSON"})  # fmt: skip
        if TICKET.match(path):
            if method == "POST":
                return self._create(headers, body)
            if method == "GET":
                return self._list(query)
        elif m := ONE_TICKET.match(path):
            if method == "PUT":
                return self._update(int(m.group(1)), body)
            if method == "GET":
                ticket = self._tickets.get(int(m.group(1)))
                return (
                    (200, {}, _json({"ticket": self._public(ticket)})) if ticket else _not_found()
                )
        elif m := COMMENTS.match(path):
            if method == "GET":
                ticket = self._tickets.get(int(m.group(1)))
                if ticket is None:
                    return _not_found()
                comments = ticket["comments"]
                return 200, {}, _json({"comments": comments, "count": len(comments),
                                       "next_page": None, "previous_page": None})  # fmt: skip
        elif ME.match(path) and method == "GET":
            return 200, {}, _json({"user": self._users[self.bot_user_id]})
        return 404, {}, _json({"error": "InvalidEndpoint", "description": "Not found"})

    def _authorized(self, authorization: str) -> bool:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except ValueError:
            return False
        return hmac.compare_digest(decoded, f"{self.email}/token:{self.token}")

    def _create(
        self, headers: dict[str, str], body: Any
    ) -> tuple[int, dict[str, str], bytes] | None:
        key = headers.get("idempotency-key")
        fingerprint = json.dumps(body, sort_keys=True, ensure_ascii=False)
        now = self.clock()
        if key is not None:
            stored = self._keys.get(key)
            if stored is not None and now - stored.at >= IDEMPOTENCY_TTL_S:
                del self._keys[key]
                stored = None
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    return (
                        400,
                        {},
                        _json(
                            {
                                "error": "IdempotentRequestError",
                                "description": "Request parameters don't match the given idempotency key",
                            }
                        ),
                    )
                return stored.status, {**stored.headers, "x-idempotency-lookup": "hit"}, stored.body
        data = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return 400, {}, _json({"error": "InvalidEndpoint",
                                   "description": "ticket parameter is missing"})  # fmt: skip
        comment = data.get("comment") if isinstance(data.get("comment"), dict) else {}
        text = comment.get("body") or comment.get("html_body")
        if not isinstance(text, str) or not text.strip():
            return _invalid("description", "Description: cannot be blank")
        status = data.get("status") or "new"
        if status not in STATUSES:
            return _invalid("status", f"Status: {status} is not valid", "InvalidValue")

        ticket_id = next(self._ticket_ids)
        stamp = _iso(now)
        requester_id = self._requester(data)
        first = self._comment(comment, text, comment.get("author_id") or requester_id, now, "api")
        self._tickets[ticket_id] = {
            "id": ticket_id,
            "external_id": data.get("external_id"),
            "type": data.get("type"),
            "subject": data.get("subject") or _first_line(text),
            "raw_subject": data.get("subject") or _first_line(text),
            "description": text,
            "priority": data.get("priority"),
            "status": status,
            "requester_id": requester_id,
            "submitter_id": self.bot_user_id,
            "assignee_id": data.get("assignee_id"),
            "organization_id": None,
            "group_id": data.get("group_id"),
            "brand_id": 360000000001,
            "tags": list(data.get("tags") or []),
            "custom_fields": list(data.get("custom_fields") or []),
            "is_public": first["public"],
            "via": {"channel": "api", "source": {"from": {}, "to": {}, "rel": None}},
            "created_at": stamp,
            "updated_at": stamp,
            "comments": [first],
        }
        content = _json({"ticket": self._public(self._tickets[ticket_id])})
        headers_out: dict[str, str] = {"Location": self._ticket_url(ticket_id)}
        if key is not None:
            self._keys[key] = _Idempotent(fingerprint, 201, dict(headers_out), content, now)
            headers_out["x-idempotency-lookup"] = "miss"
        if self._drop_creates:
            self._drop_creates -= 1
            return None
        return 201, headers_out, content

    def _update(self, ticket_id: int, body: Any) -> tuple[int, dict[str, str], bytes]:
        ticket = self._tickets.get(ticket_id)
        if ticket is None:
            return _not_found()
        data = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            return 400, {}, _json({"error": "InvalidEndpoint",
                                   "description": "ticket parameter is missing"})  # fmt: skip
        if "status" in data and data["status"] not in STATUSES:
            return _invalid("status", f"Status: {data['status']} is not valid", "InvalidValue")
        now = self.clock()
        events: list[dict[str, Any]] = []
        comment = data.get("comment")
        if comment is not None:
            text = (
                comment.get("body") or comment.get("html_body")
                if isinstance(comment, dict)
                else None
            )
            if not isinstance(text, str) or not text.strip():
                return _invalid("comment", "Comment: cannot be blank")
            added = self._comment(comment, text, comment.get("author_id") or self.bot_user_id, now,
                                  channel="api")  # fmt: skip
            ticket["comments"].append(added)
            events.append({"id": added["id"], "type": "Comment", "author_id": added["author_id"],
                           "body": added["body"], "public": added["public"]})  # fmt: skip
        for name in UPDATABLE:
            if name in data and data[name] != ticket[name]:
                events.append({"id": next(self._audit_ids), "type": "Change", "field_name": name,
                               "value": data[name], "previous_value": ticket[name]})  # fmt: skip
                ticket[name] = data[name]
        ticket["updated_at"] = _iso(now)
        audit = {"id": next(self._audit_ids), "ticket_id": ticket_id, "created_at": _iso(now),
                 "author_id": self.bot_user_id, "metadata": {}, "via": {"channel": "api"},
                 "events": events}  # fmt: skip
        return 200, {}, _json({"ticket": self._public(ticket), "audit": audit})

    def _list(self, query: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        wanted = query.get("external_id")
        found = [self._public(t) for t in self._tickets.values()
                 if wanted is None or t["external_id"] == wanted]  # fmt: skip
        return 200, {}, _json({"tickets": found, "count": len(found),
                               "next_page": None, "previous_page": None})  # fmt: skip

    def _requester(self, data: dict[str, Any]) -> int:
        if isinstance(data.get("requester_id"), int):
            return data["requester_id"]
        requester = data.get("requester")
        if not isinstance(requester, dict):
            return self.bot_user_id
        # Zendesk matches an existing user on email; we also match on phone for callers
        for user in self._users.values():
            if requester.get("email") and user["email"] == requester["email"]:
                return user["id"]
            if requester.get("phone") and user["phone"] == requester["phone"]:
                return user["id"]
        user_id = next(self._user_ids)
        self._users[user_id] = _user(user_id, requester.get("name") or requester.get("email")
                                     or requester.get("phone") or "Caller",
                                     requester.get("email"), phone=requester.get("phone"))  # fmt: skip
        return user_id

    def _comment(self, comment: dict[str, Any], text: str, author_id: int, now: float,
                 channel: str) -> dict[str, Any]:  # fmt: skip
        return {
            "id": next(self._comment_ids),
            "type": "Comment",
            "author_id": author_id,
            "body": text,
            "html_body": comment.get("html_body") or f"<p>{text}</p>",
            "plain_body": text,
            "public": bool(comment.get("public", True)),
            "attachments": [],
            "via": {"channel": channel},
            "created_at": _iso(now),
        }

    def _public(self, ticket: dict[str, Any] | None) -> dict[str, Any]:
        """The ticket as the API returns it: no comments, with its `url`."""
        assert ticket is not None
        shown = {k: copy.deepcopy(v) for k, v in ticket.items() if k != "comments"}
        shown["url"] = self._ticket_url(ticket["id"])
        return shown

    def _ticket_url(self, ticket_id: int) -> str:
        return f"{self.url}/api/v2/tickets/{ticket_id}.json"

    # -- outbound event webhooks -----------------------------------------------------------------

    def add_agent_comment(self, ticket_id: int, body: str, author_name: str = "Agent",
                          author_id: int | None = None, public: bool = True, *,
                          is_staff: bool = True) -> str:  # fmt: skip
        """Add a comment as an agent in the UI would, and POST the signed
        zen:event-type:ticket.comment_added event to `webhook_url`. Returns the invocation id;
        the receiver's status is in `delivery(invocation_id).statuses`."""
        if self.webhook_url is None:
            raise RuntimeError("FakeZendesk has no webhook_url to send events to")
        author_id = self.agent_user_id if author_id is None else author_id
        now = self.clock()
        with self._lock:
            ticket = self._tickets.get(ticket_id)
            if ticket is None:
                raise KeyError(f"no ticket {ticket_id}")
            if author_id not in self._users:
                self._users[author_id] = _user(author_id, author_name, None, role="agent")
            added = self._comment({"public": public}, body, author_id, now, channel="web")
            ticket["comments"].append(added)
            if is_staff and ticket["status"] == "new":
                ticket["status"] = "open"  # an agent's update opens a new ticket
            ticket["updated_at"] = _iso(now)
            event = {
                "account_id": self.account_id,
                "detail": _event_detail(ticket, actor_id=author_id),
                "event": {
                    "comment": {
                        "id": str(added["id"]),
                        "body": body,
                        "author": {"id": str(author_id), "is_staff": is_staff, "name": author_name},
                        "is_public": public,
                    }
                },
                "id": str(uuid.uuid4()),
                "subject": f"zen:ticket:{ticket_id}",
                "time": _iso(now, fraction=True),
                "type": "zen:event-type:ticket.comment_added",
                "zendesk_event_version": EVENT_VERSION,
            }
            invocation_id = str(next(self._invocation_ids))
        content = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = _iso(now)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "Zendesk Webhook",
            "X-Zendesk-Account-Id": str(self.account_id),
            "X-Zendesk-Webhook-Id": self.webhook_id,
            "X-Zendesk-Webhook-Invocation-Id": invocation_id,
            "X-Zendesk-Webhook-Signature": zendesk_signature(
                self.webhook_secret, timestamp, content
            ),
            "X-Zendesk-Webhook-Signature-Timestamp": timestamp,
        }
        delivery = WebhookDelivery(invocation_id, content, headers)
        with self._lock:
            self._deliveries[invocation_id] = delivery
        self._send(delivery)
        return invocation_id

    def delivery(self, invocation_id: str) -> WebhookDelivery:
        with self._lock:
            return self._deliveries[invocation_id]

    def resend(self, invocation_id: str) -> int:
        """Send the identical request again (Zendesk's retry): same body, signature, headers."""
        return self._send(self.delivery(invocation_id))

    def send_raw(self, body: bytes | str, headers: dict[str, str]) -> int:
        """POST exactly this to `webhook_url` (forged or broken signatures); the receiver's status."""
        if self.webhook_url is None:
            raise RuntimeError("FakeZendesk has no webhook_url to send events to")
        content = body.encode() if isinstance(body, str) else body
        return _post(self.webhook_url, content, headers)

    def _send(self, delivery: WebhookDelivery) -> int:
        assert self.webhook_url is not None
        status = _post(self.webhook_url, delivery.body, delivery.headers)
        with self._lock:
            delivery.statuses.append(status)
        return status


def _post(url: str, content: bytes, headers: dict[str, str]) -> int:
    try:
        return httpx.post(url, content=content, headers=headers, timeout=10).status_code
    except httpx.TransportError:
        return 0  # receiver down or hung: Zendesk would retry later, tests call resend()


def _event_detail(ticket: dict[str, Any], actor_id: int) -> dict[str, Any]:
    """The ticket as event payloads carry it: ids as strings, enums upper-case."""

    def sid(value: Any) -> str | None:
        return None if value is None else str(value)

    def upper(value: Any) -> str | None:
        return None if value is None else str(value).upper()

    return {
        "actor_id": str(actor_id),
        "assignee_id": sid(ticket["assignee_id"]),
        "brand_id": sid(ticket["brand_id"]),
        "created_at": ticket["created_at"],
        "custom_status": None,
        "description": ticket["description"],
        "external_id": ticket["external_id"],
        "form_id": None,
        "group_id": sid(ticket["group_id"]),
        "id": str(ticket["id"]),
        "is_public": ticket["is_public"],
        "organization_id": sid(ticket["organization_id"]),
        "priority": upper(ticket["priority"]),
        "requester_id": str(ticket["requester_id"]),
        "status": upper(ticket["status"]),
        "subject": ticket["subject"],
        "submitter_id": str(ticket["submitter_id"]),
        "tags": list(ticket["tags"]),
        "type": upper(ticket["type"]),
        "updated_at": ticket["updated_at"],
        "via": {"channel": "web_service"},
    }


def _user(user_id: int, name: str, email: str | None, *, role: str = "end-user",
          phone: str | None = None) -> dict[str, Any]:  # fmt: skip
    return {"id": user_id, "name": name, "email": email, "phone": phone, "role": role}


def _failure_body(status: int) -> dict[str, str]:
    if status == 429:
        return {"error": "APIRateLimitExceeded", "description": "Rate limit exceeded"}
    if status == 503:
        return {"error": "ServiceUnavailable", "description": "Service temporarily unavailable"}
    return {"error": f"HTTP {status}", "description": "Injected failure"}


def _invalid(field_key: str, description: str, error: str = "BlankValue"
             ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
    return 422, {}, _json({
        "error": "RecordInvalid",
        "description": "Record validation errors",
        "details": {"base": [{"description": description, "error": error,
                              "field_key": field_key}]},
    })  # fmt: skip


def _not_found() -> tuple[int, dict[str, str], bytes]:
    return 404, {}, _json({"error": "RecordNotFound", "description": "Not found"})


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:150]


def _iso(ts: float, fraction: bool = False) -> str:
    """UTC ISO-8601 with a Z, as Zendesk writes it (`time` in events carries fractions)."""
    when = datetime.fromtimestamp(ts, UTC)
    if fraction:
        return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()
