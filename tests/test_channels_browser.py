"""The customer timeline page in a real browser (Debian's chromium via Playwright): a WhatsApp
message and a phone call from one customer, shown in time order with the context carried over;
linked from the call page; zh/en toggle. Screenshot: customer-timeline.png (see `shots`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from conftest import CHROMIUM

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
from test_channels import (  # noqa: E402
    BACK_REFERENCE,
    QUESTION,
    SECRET,
    SUPERVISOR,
    TOKENS,
    VERIFY,
    LineTranscriber,
    _call_audio,
    _wa_body,
    _wa_text,
)

CALL_ID = "timeline-call-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _live(app):
    """The app on a loopback port, served by uvicorn in a thread (the browser needs real HTTP)."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        assert time.time() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from voice.answer import SAMPLE_KB, AnswerEngine, AnswerOptions, SqliteCustomerProvider
    from voice.answer.crm import create_sample_db
    from voice.server.app import create_app
    from voice.server.config import ServerConfig

    tmp = tmp_path_factory.mktemp("timeline")
    crm = SqliteCustomerProvider(create_sample_db(tmp / "crm.db"))
    engine = AnswerEngine.from_file(SAMPLE_KB, AnswerOptions(semantic=False), crm=crm)
    pcm, lines = _call_audio(BACK_REFERENCE)
    saved = {k: os.environ.get(k) for k in ("WHATSAPP_VERIFY_TOKEN", "WHATSAPP_APP_SECRET")}
    os.environ.update(WHATSAPP_VERIFY_TOKEN=VERIFY, WHATSAPP_APP_SECRET=SECRET)
    config = ServerConfig(tokens=TOKENS, db_path=str(tmp / "calls.sqlite3"))
    app = create_app(config, LineTranscriber(lines), answer_engine=engine)
    try:
        with _live(app) as base:
            yield base, pcm
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {SUPERVISOR}"}


async def _phone_call(base: str, pcm: bytes) -> None:
    from websockets.asyncio.client import connect

    async with connect(base.replace("http", "ws") + "/stream", additional_headers=_bearer()) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": CALL_ID, "encoding": "pcm16",
                                  "sample_rate": 16000, "caller": "91234567"}))  # fmt: skip
        for i in range(0, len(pcm), 3200):
            await ws.send(pcm[i : i + 3200])
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass


def test_the_customer_timeline_page(live, browser, shots):
    from voice.integrations import whatsapp

    base, pcm = live
    body = _wa_body(_wa_text(QUESTION, "wamid.timeline"))
    r = httpx.post(f"{base}/integrations/whatsapp", content=body, headers={
        "X-Hub-Signature-256": whatsapp.sign(SECRET, body), "Content-Type": "application/json"})  # fmt: skip
    assert r.status_code == 200
    deadline = time.time() + 30
    while not httpx.get(f"{base}/v1/customers/C1001", headers=_bearer()).json()["context"]:
        assert time.time() < deadline
        time.sleep(0.1)
    # in a thread of its own: Playwright's sync API keeps an event loop in this one
    caller = threading.Thread(target=lambda: asyncio.run(_phone_call(base, pcm)), daemon=True)
    caller.start()
    caller.join(120)
    assert not caller.is_alive()

    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-HK")
    page = context.new_page()
    page.goto(f"{base}/console/login")
    page.fill("#token", SUPERVISOR)
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console")

    page.goto(f"{base}/console/calls/{CALL_ID}")  # the call page links to its customer
    page.wait_for_selector("#customer-link")
    assert "陳大文" in page.inner_text("#customer-link")
    page.click("#customer-link")
    page.wait_for_url(f"{base}/console/customers/C1001")
    page.wait_for_function("document.querySelectorAll('section.conversation').length === 2")
    sections = page.query_selector_all("section.conversation")
    assert [s.get_attribute("data-protocol") for s in sections] == ["whatsapp", "stream"]
    whatsapp_text, call_text = sections[0].inner_text(), sections[1].inner_text()
    assert QUESTION in whatsapp_text and "DEV-001" in whatsapp_text
    assert BACK_REFERENCE in call_text and "DEV-001" in call_text and "轉接" in call_text
    assert "陳大文 (C1001)" in page.inner_text("h1")
    assert "DEV-001" in page.inner_text("#context")  # the topic carried over
    page.screenshot(path=str(shots / "customer-timeline.png"), full_page=True)

    page.click("#lang-toggle")
    page.wait_for_function("document.querySelector('h1').innerText.includes('Customer timeline')")
    assert "Phone call" in page.inner_text("#conversations")
    assert "WhatsApp" in page.inner_text("#conversations")
    page.screenshot(path=str(shots / "customer-timeline-en.png"), full_page=True)
    context.close()
