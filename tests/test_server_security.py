"""`voice serve` security: no credential in any log line, personal data masked by field, TLS
minimum version, AudioSocket kept on loopback, audit records in the documented ECS-style schema
(issue 13 items 2, 6, 7, 8)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import re
import socket
import ssl
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest
import websockets
from test_server import _bearer, _free_port, _serve
from websockets.asyncio.client import connect

from voice.answer.text import extract_order_id
from voice.server import logs
from voice.server.pii import redact

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # live servers and the tiny model

ALICE = "SECRET-agent-q8w7e6r5t4y3u2i1"  # agent
BOB = "SECRET-agent-m1n2b3v4c5x6z7l8"  # another agent
SAM = "SECRET-super-z1x2c3v4b5n6m7k8"  # supervisor
WRONG = "SECRET-wrong-a1s2d3f4g5h6j7k8"  # configured nowhere: redacted by its shape alone
TOKENS = {
    ALICE: {"role": "agent", "name": "alice"},
    BOB: {"role": "agent", "name": "bob"},
    SAM: {"role": "supervisor", "name": "sam"},
}
README = Path(__file__).parents[1] / "README.md"
START = {"type": "start", "encoding": "pcm16", "sample_rate": 8000}


def _leaks(text: str, secrets) -> list[str]:
    """Any 8 consecutive characters of a secret found in `text` (a cut token leaks too)."""
    return [s[i : i + 8] for s in secrets for i in range(len(s) - 7) if s[i : i + 8] in text]


def _records(server) -> list[dict]:
    lines = server.log.read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _audit(server, request_id: str) -> list[dict]:
    return [r for r in _records(server)
            if r.get("event.dataset") == "voice.audit" and r.get("http.request.id") == request_id]  # fmt: skip


@pytest.fixture(scope="module")
def secured(tmp_path_factory, base_model_dir):
    """`voice -v serve` (DEBUG) with three tokens; its whole stdout and stderr go to `log`."""
    tmp = tmp_path_factory.mktemp("secured")
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    args = ["--model", str(base_model_dir), "--auth", str(tmp / "auth.json")]
    with _serve(tmp, *args, verbose=True) as running:
        yield running


@contextlib.contextmanager
def _logging_state():
    """Put every logger back as it was (logs.configure rewires the root and uvicorn's)."""
    loggers = [
        logging.getLogger(),
        *(logging.getLogger(name) for name in logging.root.manager.loggerDict),
    ]
    saved = [
        (lg, lg.handlers[:], lg.filters[:], lg.level, lg.propagate, lg.disabled) for lg in loggers
    ]
    try:
        yield
    finally:
        for logger, handlers, filters, level, propagate, disabled in saved:
            logger.handlers[:], logger.filters[:] = handlers, filters
            logger.setLevel(level)
            logger.propagate, logger.disabled = propagate, disabled


# --- item 2: no credential in any log line ------------------------------------------------------


@pytest.mark.slow
def test_no_token_appears_in_any_log_line(secured):
    """Tokens in `?token=`, `Authorization` and Twilio customParameters, valid or not."""

    async def run() -> None:
        async with connect(f"{secured.ws}/stream?token={ALICE}",
                           additional_headers=_bearer(ALICE)) as ws:  # fmt: skip
            await ws.send(json.dumps({**START, "call_id": "leak-1"}))
            assert json.loads(await ws.recv())["type"] == "started"
            await ws.send(b"\0" * 3200)
            await ws.send(json.dumps({"type": "stop"}))
            _ = [m async for m in ws]
        async with connect(f"{secured.ws}/twilio") as tw:  # the token inside the start message
            await tw.send(json.dumps({"event": "start", "start": {
                "callSid": "CAleak2", "customParameters": {"token": ALICE, "agent": "alice"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))  # fmt: skip
            await tw.send(json.dumps({"event": "stop"}))
            _ = [m async for m in tw]
        async with connect(f"{secured.ws}/twilio") as tw:  # a wrong one: refused
            await tw.send(json.dumps({"event": "start", "start": {
                "callSid": "CAleak3", "customParameters": {"token": WRONG},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))  # fmt: skip
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await asyncio.wait_for(tw.recv(), 10)
        with pytest.raises(websockets.InvalidStatus):  # a wrong one in the query: refused
            async with connect(f"{secured.ws}/stream?token={WRONG}"):
                pass
        async with connect(f"{secured.ws}/calls/leak-1/events?token={SAM}") as sub:
            _ = [m async for m in sub]

    asyncio.run(run())
    assert httpx.get(f"{secured.http}/calls?token={BOB}").status_code == 200
    assert httpx.get(f"{secured.http}/calls/leak-1", headers=_bearer(WRONG)).status_code == 401
    last = httpx.get(f"{secured.http}/calls/leak-1?access_token={WRONG}&token={WRONG}")
    assert last.status_code == 401
    deadline = time.time() + 10  # the access line is written after the response
    while last.headers.get("x-request-id", "?") not in secured.log.read_text():
        if time.time() > deadline:
            break
        time.sleep(0.1)

    text = secured.log.read_text()
    assert _leaks(text, [*TOKENS, WRONG]) == []
    messages = [r["message"] for r in _records(secured)]
    assert '"WebSocket /stream?token=***" [accepted]' in " ".join(messages)  # there, redacted
    assert any(r["log.level"] == "debug" for r in _records(secured))  # DEBUG was on


def test_credentials_are_redacted_before_any_handler_even_at_debug(caplog):
    """What websockets and uvicorn log at DEBUG during a real handshake (request line, headers,
    frames) reaches no handler with a token in it: not ours, not pytest's on the root logger."""
    from websockets.frames import Frame, Opcode
    from websockets.server import ServerProtocol

    out = io.StringIO()
    with _logging_state():
        logs.configure(logging.DEBUG, stream=out, secrets=TOKENS)
        logging.getLogger().addHandler(caplog.handler)
        logging.getLogger("uvicorn.error").setLevel(logging.DEBUG)  # as a deployment might
        caplog.set_level(logging.DEBUG)
        server = ServerProtocol(logger=logging.getLogger("uvicorn.error"))  # as uvicorn does
        server.receive_data(
            f"GET /twilio?token={WRONG}&x=1 HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            f"Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {ALICE}\r\n\r\n".encode()
        )
        server.send_response(server.accept(server.events_received()[0]))
        start = {"event": "start", "start": {"customParameters": {"token": WRONG}}}
        server.receive_data(Frame(Opcode.TEXT, json.dumps(start).encode()).serialize(mask=True))
        logging.getLogger("uvicorn.error").info(
            '%s - "WebSocket %s" [accepted]', "127.0.0.1:5000", f"/twilio?token={ALICE}"
        )  # uvicorn's handshake line, verbatim
        logging.getLogger("voice.server.app").warning("start rejected: %s", start)
        try:
            raise ValueError(f"cannot open wss://x/calls?token={SAM}")
        except ValueError:
            logging.getLogger("voice.server.calls").exception("failed")
        captured = caplog.text
        handler_lines = [r.getMessage() for r in caplog.records]
    assert any("< Authorization: ***" in m for m in handler_lines)
    assert any("< GET /twilio?token=***&x=1" in m for m in handler_lines)
    assert _leaks(captured, [*TOKENS, WRONG]) == []
    assert _leaks(out.getvalue(), [*TOKENS, WRONG]) == []


# --- item 6: personal data masked by field --------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("身份證A123456（7）", "身份證[HKID]"),  # full-width brackets
        ("身份證Ａ１２３４５６（７）喎", "身份證[HKID]喎"),  # full-width letters and digits
        ("身份證 A 一二三四五六 括號 七", "身份證 [HKID]"),  # spoken
        ("HKID: AB987654 3 ok", "HKID: [HKID] ok"),
        ("電話九一二三四五六七", "電話[PHONE]"),  # spoken digits
        ("電話９１２３ ４５６７", "電話[PHONE]"),
        ("電話9123  4567", "電話[PHONE]"),  # double space
        ("電話9123-4567，唔該", "電話[PHONE]，唔該"),
        ("call +852 2345 6789 now", "call [PHONE] now"),
        ("+85291234567", "[PHONE]"),
        ("卡4111.1111.1111.1111", "卡[CARD]"),  # dotted
        ("卡號4111-1111-1111-1111", "卡號[CARD]"),
        ("email chan.taiman88@gmail.com thanks", "email [EMAIL] thanks"),
        ("ｃｈａｎ＠ｇｍａｉｌ．ｃｏｍ", "[EMAIL]"),  # full-width
        ("account 0123456789", "account [NUMBER]"),
        ("A1234567", "[HKID]"),  # an unbracketed HKID and a letter + 7-digit order id look alike
        # left alone
        ("2026-11-25", "2026-11-25"),
        ("25/11/2026 10:30", "25/11/2026 10:30"),
        ("2026-11-25T10:30:00.123456Z", "2026-11-25T10:30:00.123456Z"),
        ("訂單A12345", "訂單A12345"),
        ("訂單號碼853210", "訂單號碼853210"),
        ("client 192.168.100.200:54321", "client 192.168.100.200:54321"),
        ("月費$1,234,567.89", "月費$1,234,567.89"),
        ("一齊去三星", "一齊去三星"),
        ("call C-42 ended", "call C-42 ended"),
    ],
)
def test_masking(text, expected):
    assert redact(text) == expected
    assert redact(expected) == expected  # masking twice changes nothing


@pytest.mark.parametrize(
    "utterance",
    ["我張單號碼係A12345", "訂單號碼八五三二一", "單號 A 一二三四五", "order 853210 到咗未"],
)
def test_masking_keeps_what_the_order_lookup_reads(utterance):
    """Order ids of up to 7 digits stay readable in logs (the lookup itself reads the raw text)."""
    assert extract_order_id(redact(utterance)) == extract_order_id(utterance) is not None


def test_json_lines_mask_the_message_but_never_ids_or_times():
    record = logging.LogRecord("voice", logging.INFO, __file__, 1, "caller said %s", ("九一二三四五六七",), None)  # fmt: skip
    record.call_id = "CA1234567890123456789012345678901"  # a Twilio callSid: 32 digits here
    record.request_id = "20261125123456789"
    data = json.loads(logs.JsonFormatter().format(record))
    assert data["message"] == "caller said [PHONE]"
    assert data["voice.call.id"] == record.call_id
    assert data["http.request.id"] == record.request_id
    assert datetime.fromisoformat(data["@timestamp"].replace("Z", "+00:00")).year >= 2024


# --- item 7: TLS minimum version, AudioSocket on loopback ----------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl)."""
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)  # fmt: skip
    return cert, key


def _handshake(url: str, cert: Path, version: ssl.TLSVersion) -> str:
    """The TLS version negotiated with a client that offers `version` only."""
    context = ssl.create_default_context(cafile=str(cert))
    context.minimum_version = context.maximum_version = version
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
            return tls.version()


@pytest.mark.slow
def test_tls_refuses_1_2_unless_allowed(tmp_path, certificate, base_model_dir):
    cert, key = certificate
    args = ["--model", str(base_model_dir), "--insecure-no-auth", "--tls-cert", str(cert),
            "--tls-key", str(key)]  # fmt: skip
    with _serve(tmp_path, *args) as default:
        assert _handshake(default.http, cert, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        with pytest.raises(ssl.SSLError):
            _handshake(default.http, cert, ssl.TLSVersion.TLSv1_2)
    with _serve(tmp_path, *args, "--tls-min-version", "1.2") as older:
        assert _handshake(older.http, cert, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        trusted = ssl.create_default_context(cafile=str(cert))
        assert httpx.get(older.http + "/healthz", verify=trusted).status_code == 200


def test_audiosocket_stays_on_loopback_unless_allowed(tmp_path):
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps({"tokens": TOKENS}))
    run = [sys.executable, "-m", "voice", "serve", "--auth", str(auth), "--db",
           str(tmp_path / "x.db"), "--audiosocket-port", str(_free_port())]  # fmt: skip
    r = subprocess.run([*run, "--audiosocket-host", "0.0.0.0"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 2 and "--audiosocket-allow-remote" in r.stderr, r.stderr

    from voice.cli import build_parser
    from voice.server.cli import config_from_args

    args = build_parser().parse_args([*run[3:], "--audiosocket-host", "0.0.0.0",
                                      "--audiosocket-allow-remote"])  # fmt: skip
    config = config_from_args(args)
    assert config.audiosocket_allow_remote and config.tls_min_version == "1.3"
    help_text = " ".join(
        subprocess.run(
            [*run[:4], "--help"], capture_output=True, text=True, timeout=60
        ).stdout.split()
    )
    assert "--audiosocket-allow-remote" in help_text and "no authentication" in help_text
    assert "--tls-min-version {1.2,1.3}" in help_text and "default 1.3" in help_text


# --- item 8: audit records and the documented log schema ----------------------------------------


@pytest.mark.slow
def test_failed_authentication_is_one_audit_record(secured):
    bad = httpx.get(f"{secured.http}/calls", headers=_bearer(WRONG))
    missing = httpx.get(f"{secured.http}/calls")
    forbidden = httpx.get(f"{secured.http}/config", headers=_bearer(ALICE))
    assert (bad.status_code, missing.status_code, forbidden.status_code) == (401, 401, 403)
    for response, action, reason in [(bad, "authenticate", "bad_token"),
                                     (missing, "authenticate", "no_token"),
                                     (forbidden, "authorize", "needs config")]:  # fmt: skip
        [record] = _audit(secured, response.headers["x-request-id"])
        assert record["event.action"] == action and record["event.outcome"] == "failure"
        assert record["event.reason"] == reason and record["client.ip"] == "127.0.0.1"
        assert record["log.level"] == "warning" and record["log.logger"] == "voice.audit"
        datetime.fromisoformat(record["@timestamp"].replace("Z", "+00:00"))
    assert "user.id" not in _audit(secured, bad.headers["x-request-id"])[0]
    [denied] = _audit(secured, forbidden.headers["x-request-id"])
    assert (denied["user.id"], denied["user.roles"]) == ("alice", ["agent"])
    assert _audit(secured, bad.headers["x-request-id"])[0]["event.category"] == ["authentication"]


@pytest.mark.slow
def test_reading_a_call_is_one_audit_record(secured):
    async def call() -> None:
        async with connect(f"{secured.ws}/stream", additional_headers=_bearer(ALICE)) as ws:
            await ws.send(json.dumps({**START, "call_id": "audit-1"}))
            await ws.send(json.dumps({"type": "stop"}))
            _ = [m async for m in ws]

    asyncio.run(call())
    url = f"{secured.http}/calls/audit-1"
    read, not_yours = httpx.get(url, headers=_bearer(SAM)), httpx.get(url, headers=_bearer(BOB))
    events = httpx.get(url + "/events", headers=_bearer(ALICE))
    assert (read.status_code, not_yours.status_code, events.status_code) == (200, 404, 200)
    expected = [(read, "call.read", "success", "sam", "supervisor"),
                (not_yours, "call.read", "failure", "bob", "agent"),
                (events, "call.subscribe", "success", "alice", "agent")]  # fmt: skip
    for response, action, outcome, user, role in expected:
        [record] = _audit(secured, response.headers["x-request-id"])
        assert (record["event.action"], record["event.outcome"]) == (action, outcome)
        assert (record["user.id"], record["user.roles"]) == (user, [role])
        assert record["voice.call.id"] == "audit-1" and record["client.ip"] == "127.0.0.1"
        assert datetime.fromisoformat(record["@timestamp"].replace("Z", "+00:00"))


@pytest.mark.slow
def test_every_log_field_is_in_the_documented_schema(secured):
    httpx.get(f"{secured.http}/calls", headers=_bearer(SAM))  # at least one audit and access line
    section = README.read_text().split("### Logs and audit", 1)[1]
    table = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {name for line in table for name in re.findall(r"`([@\w.]+)`", line.split("|")[1])}
    records = _records(secured)
    assert records and all({"@timestamp", "log.level", "log.logger", "message"} <= r.keys()
                           for r in records)  # fmt: skip
    assert {key for r in records for key in r} <= documented
