"""What a webhook request looks like per format: Standard Webhooks 1.0, DingTalk robot, Slack.

`standard` sends the event JSON signed as the Standard Webhooks spec says (`webhook-id`,
`webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`, keyed
with the base64 secret after `whsec_`). DingTalk group robots and Slack incoming webhooks take a
message for people: a markdown summary with a link to the call in the console; DingTalk's is
signed with `timestamp` and `sign` query parameters.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from urllib.parse import quote_plus

from voice.integrations.config import Endpoint
from voice.integrations.outbox import Delivery


@dataclass(frozen=True)
class Request:
    url: str
    headers: dict[str, str]
    content: bytes


def build(endpoint: Endpoint, delivery: Delivery, now: float) -> Request:
    """The HTTP POST that delivers `delivery` to `endpoint` at time `now`."""
    if endpoint.format == "dingtalk":
        return dingtalk(endpoint, delivery, now)
    if endpoint.format == "slack":
        body = {"text": summary(delivery, link_style="slack")}
        return Request(endpoint.url, JSON, _json(body))
    return standard(endpoint.url, endpoint.secret, delivery.event_id, delivery.body(), now)


def standard(url: str, secret: str, message_id: str, body: dict, now: float) -> Request:
    content = _json(body)
    timestamp = str(int(now))
    return Request(
        url,
        {**JSON, "webhook-id": message_id, "webhook-timestamp": timestamp,
         "webhook-signature": sign_standard(secret, message_id, timestamp, content)},
        content,
    )  # fmt: skip


def sign_standard(secret: str, message_id: str, timestamp: str, content: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + content
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def dingtalk(endpoint: Endpoint, delivery: Delivery, now: float) -> Request:
    """A markdown message; with a secret (`SEC...`), signed the way DingTalk's robot checks:
    sign = base64(HMAC-SHA256(secret, "<ms timestamp>\\n<secret>")), URL-encoded."""
    url = endpoint.url
    if endpoint.secret:
        timestamp = str(int(now * 1000))
        digest = hmac.new(endpoint.secret.encode(), f"{timestamp}\n{endpoint.secret}".encode(),
                          hashlib.sha256).digest()  # fmt: skip
        sign = quote_plus(base64.b64encode(digest).decode())
        url += ("&" if "?" in url else "?") + f"timestamp={timestamp}&sign={sign}"
    title = TITLES.get(delivery.event_type, delivery.event_type)
    body = {
        "msgtype": "markdown",
        "markdown": {"title": title, "text": summary(delivery, link_style="markdown")},
    }
    return Request(url, JSON, _json(body))


TITLES = {
    "alert.high_priority": "高優先 High priority",
    "alert.negative": "客人不滿 Upset caller",
    "handoff": "轉真人 Handoff",
    "referral.created": "轉介 Referral",
    "referral.sla_breached": "轉介逾時 SLA breached",
    "call.ended": "通話結束 Call ended",
    "ticket.comment": "Zendesk 回覆 Ticket reply",
}


def summary(delivery: Delivery, link_style: str) -> str:
    """A few lines for people: what happened, on which call, the KB entry, the caller's words."""
    data = delivery.data
    lines = [f"**{TITLES.get(delivery.event_type, delivery.event_type)}** · call "
             f"`{data.get('call_id')}`"]  # fmt: skip
    if data.get("category") or data.get("kb_id"):
        lines.append(f"KB: {data.get('category') or ''} {data.get('kb_id') or ''}".strip())
    if data.get("department"):
        lines.append(f"department: {data['department']}, deadline {data.get('deadline')}")
    if data.get("text"):
        lines.append(f"> {data['text']}")
    if data.get("body"):
        lines.append(f"> {data['body']}")
    if data.get("duration") is not None and delivery.event_type == "call.ended":
        lines.append(f"{data['duration']:.0f} s, {data.get('utterances')} utterances")
    link = data.get("console_url")
    if link:
        lines.append(f"<{link}|open in console>" if link_style == "slack"
                     else f"[open in console]({link})")  # fmt: skip
    text = "\n\n".join(lines) if link_style == "markdown" else "\n".join(lines)
    return text.replace("**", "*") if link_style == "slack" else text


JSON = {"Content-Type": "application/json"}


def _json(body: dict) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


__all__ = ["Request", "build", "sign_standard", "standard", "summary"]
