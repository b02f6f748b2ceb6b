"""JSON-line logs for a SIEM, with HKID, phone and card numbers masked in every message."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

# Runs of digits, written with ASCII, full-width or Chinese numerals (spoken numbers come out of
# ASR as 九八七六...), optionally split by spaces or dashes.
_DIGIT = r"[0-9０-９零〇一二三四五六七八九]"
_HKID = re.compile(r"(?<![A-Za-z])[A-Za-z]{1,2}\s?\d{6}\s?(?:\(\s?[0-9Aa]\s?\)|[0-9Aa])(?!\d)")
_CARD = re.compile(rf"(?<!{_DIGIT})(?:{_DIGIT}[ -]?){{12,18}}{_DIGIT}(?!{_DIGIT})")
_PHONE = re.compile(
    rf"(?:\+?852[ -]?)?(?<!{_DIGIT})[2-9２-９二三四五六七八九]"
    rf"(?:[ -]?{_DIGIT}){{7}}(?!{_DIGIT})"
)
_LONG_NUMBER = re.compile(rf"(?:{_DIGIT}[ -]?){{7,}}{_DIGIT}")  # anything else 8+ digits long


def redact(text: str) -> str:
    """Mask HKID numbers, card numbers (13-19 digits), HK phone numbers and other long numbers."""
    text = _HKID.sub("[HKID]", text)
    text = _CARD.sub("[CARD]", text)
    text = _PHONE.sub("[PHONE]", text)
    return _LONG_NUMBER.sub("[NUMBER]", text)


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message (redacted), and `extra` fields."""

    FIELDS = ("call_id", "protocol", "event", "role", "client", "code", "status", "path")

    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in self.FIELDS:
            value = record.__dict__.get(key)
            if value is not None:
                data[key] = redact(str(value)) if isinstance(value, str) else value
        if record.exc_info:
            data["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(data, ensure_ascii=False)


def configure(level: int = logging.INFO, stream=None) -> None:
    """Send the `voice` logger (and uvicorn's) to `stream` as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("voice", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # query strings may carry tokens
