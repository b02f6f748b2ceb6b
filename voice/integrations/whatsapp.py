"""WhatsApp Business Cloud API webhooks: the signature check and the payload's customer messages.

The only module that knows the wire format (a serializer, as serializers/twilio.py is for calls):
Meta POSTs `{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages",
"value": {"contacts": [...], "messages": [...], "statuses": [...]}}]}]}`, signed with
`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body keyed with the app secret>`.
Text messages (`type` "text") become `Inbound`; delivery statuses and other message types
(image, audio, reaction, ...) are listed as ignored, by type only.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

SIGNATURE_PREFIX = "sha256="
MAX_ID = 256  # characters of a wamid / wa_id kept


class BadPayload(ValueError):
    """A webhook body that is not the documented shape; `field` is the JSON path at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class Inbound:
    """One text message a customer sent."""

    wa_id: str  # the sender's WhatsApp id: their phone number with country code, digits only
    message_id: str  # the wamid, unique per message: redeliveries repeat it
    text: str
    timestamp: str = ""  # Unix seconds as Meta sends it (a string)


@dataclass(frozen=True)
class Parsed:
    """What one webhook body holds: text messages, and the types of what was ignored."""

    messages: tuple[Inbound, ...]
    ignored: tuple[str, ...]  # "status", "image", "audio", ...


def verify_signature(secret: str, header: str | None, body: bytes) -> str | None:
    """None if `header` is the body's signature with `secret`, else why not ("missing",
    "malformed", "mismatch"). Compared in constant time."""
    if not header:
        return "missing"
    if not header.startswith(SIGNATURE_PREFIX):
        return "malformed"
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = header[len(SIGNATURE_PREFIX) :].strip().lower()
    return None if hmac.compare_digest(expected.encode(), given.encode()) else "mismatch"


def sign(secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value Meta would send for `body` (for tests and tools)."""
    return SIGNATURE_PREFIX + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _list(value: Any, field: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise BadPayload(field, "expected a list")
    return value


def _object(value: Any, field: str) -> dict:
    if not isinstance(value, dict):
        raise BadPayload(field, "expected an object")
    return value


def _string(value: Any, field: str) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID:
        raise BadPayload(field, f"expected a non-empty string of at most {MAX_ID} characters")
    return value.strip()


def parse(body: bytes) -> Parsed:
    """The messages in a webhook body; raises BadPayload naming the field at fault."""
    try:
        data = json.loads(body)
    except ValueError:
        raise BadPayload("body", "not JSON") from None
    data = _object(data, "body")
    messages: list[Inbound] = []
    ignored: list[str] = []
    for i, entry in enumerate(_list(data.get("entry"), "entry")):
        entry = _object(entry, f"entry[{i}]")
        for j, change in enumerate(_list(entry.get("changes"), f"entry[{i}].changes")):
            where = f"entry[{i}].changes[{j}]"
            change = _object(change, where)
            value = _object(change.get("value", {}), f"{where}.value")
            ignored += ["status"] * len(_list(value.get("statuses"), f"{where}.value.statuses"))
            for k, message in enumerate(_list(value.get("messages"), f"{where}.value.messages")):
                at = f"{where}.value.messages[{k}]"
                message = _object(message, at)
                kind = message.get("type")
                if kind != "text":
                    ignored.append(str(kind)[:40] if kind else "unknown")
                    continue
                text = _object(message.get("text"), f"{at}.text").get("body")
                if not isinstance(text, str):
                    raise BadPayload(f"{at}.text.body", "expected a string")
                wa_id = _string(message.get("from"), f"{at}.from")
                if not wa_id.isdigit():
                    raise BadPayload(f"{at}.from", "expected digits (a WhatsApp id)")
                messages.append(Inbound(wa_id, _string(message.get("id"), f"{at}.id"), text,
                                        str(message.get("timestamp", ""))[:20]))  # fmt: skip
    return Parsed(tuple(messages), tuple(ignored))


__all__ = ["BadPayload", "Inbound", "Parsed", "verify_signature", "sign", "parse"]
