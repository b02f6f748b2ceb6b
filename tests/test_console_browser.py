"""The supervisor console in a real browser (Debian's chromium via Playwright) against `voice serve`:
sign-in, a call streamed live onto the wallboard, the heatmap and KPI pages, roles, sign-out.

Screenshots go to $CONSOLE_SCREENSHOTS if set (e.g. reports/console), else the test's tmp folder."""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from conftest import CHROMIUM

SUPERVISOR = "supervisor-token-cccccccc"
AGENT = "agent-token-aaaaaaaaaaaa"
TOKENS = {SUPERVISOR: {"role": "supervisor", "name": "主管陳"},
          AGENT: {"role": "agent", "name": "agent-1"}}  # fmt: skip
KB = Path(__file__).parents[1] / "voice" / "answer" / "data" / "sample_kb.csv"
HK = timezone(timedelta(hours=8))
CALL_ID = "console-call-1"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
from test_server import _serve  # noqa: E402  (after the skip: needs only the server's deps)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("console")
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    # CONSOLE_MODEL: a real model for screenshots of real Cantonese (the tiny one says nonsense)
    model = os.environ.get("CONSOLE_MODEL") or str(tiny_model_dir)
    with _serve(tmp, "--model", model, "--auth", str(tmp / "auth.json"),
                "--kb", str(KB), "--max-calls", "4") as running:  # fmt: skip
        yield running


def _bearer(token: str = SUPERVISOR) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _stream_call(server, call_id: str, path: Path) -> None:
    """The demo call over WS /stream at four times real time, so the wallboard sees it live."""
    import soundfile as sf
    from websockets.asyncio.client import connect

    from voice.audio import mulaw_encode

    pcm, rate = sf.read(str(path), dtype="int16")
    assert rate == 8000
    data = mulaw_encode(pcm)
    async with connect(f"{server.ws}/stream", additional_headers=_bearer()) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "mulaw",
                                  "sample_rate": 8000, "agent": "agent-1"}))  # fmt: skip
        for i in range(0, len(data), 1600):
            await ws.send(data[i : i + 1600])
            await asyncio.sleep(0.05)
        await ws.send(json.dumps({"type": "stop"}))
        async for _ in ws:
            pass


def _sign_in(context, server, token: str):
    page = context.new_page()
    page.goto(f"{server.http}/console/login")
    page.fill("#token", token)
    page.click("button[type=submit]")
    return page


def _wait_ended(server, call_id: str, timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = httpx.get(f"{server.http}/calls/{call_id}", headers=_bearer(), timeout=5)
        if r.status_code == 200 and r.json()["status"] != "live":
            return r.json()
        time.sleep(0.5)
    raise AssertionError(f"call {call_id} did not end")


def test_supervisor_console_end_to_end(server, browser, shots, demo_call):
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="zh-HK")
    page = _sign_in(context, server, SUPERVISOR)
    page.wait_for_url(f"{server.http}/console")
    assert SUPERVISOR not in page.url
    page.wait_for_selector("#conn.live", timeout=15000)
    assert "即時連線" in page.inner_text("#conn")

    streamer = threading.Thread(
        target=lambda: asyncio.run(_stream_call(server, CALL_ID, demo_call.path)), daemon=True
    )
    streamer.start()
    card = f'article.call-card[data-call-id="{CALL_ID}"]'
    page.wait_for_selector(f"{card} .transcript p.line", timeout=90000)
    page.screenshot(path=str(shots / "wallboard.png"), full_page=True)
    streamer.join(120)
    record = _wait_ended(server, CALL_ID)
    transcripts = [e for e in record["events"] if e["type"] == "transcript"]
    assert transcripts
    # every transcript the server stored reached the board (the last 30 of them)
    page.wait_for_function(
        "([sel, n]) => document.querySelectorAll(sel).length >= n",
        arg=[f"{card} .transcript p.line", min(len(transcripts), 30)],
        timeout=20000,
    )
    page.wait_for_selector(f"{card}.ended", timeout=20000)
    assert "agent-1" in page.inner_text(card)  # from the call's record
    types = {e["type"] for e in record["events"]}
    if "handoff" in types:  # the tiny model's nonsense goes unanswered: the server hands it off
        page.wait_for_selector(f"{card}.handoff .handoff-banner", timeout=10000)
        assert "需要轉接真人" in page.inner_text(f"{card} .handoff-banner")
    if "alert" in types:
        page.wait_for_selector(f'#feed a[href="/console/calls/{CALL_ID}"]', timeout=10000)
    suggestions = [e for e in record["events"] if e["type"] == "suggestion"]
    if suggestions:  # the card shows the last turn's best reply, or that nothing matched
        page.wait_for_selector(f"{card} .suggestion", timeout=10000)
        last = suggestions[-1]["suggestions"]
        shown = page.inner_text(f"{card} .suggestion")
        assert (last[0]["reply"] in shown) if last else ("知識庫沒有相關答案" in shown), shown
    page.wait_for_function("document.querySelector('#health').innerText.includes('正常')")
    page.screenshot(path=str(shots / "wallboard-after-call.png"), full_page=True)

    # heatmap: today by hour, a cell of the call's category counting its unresolved turns; the
    # console's periods are whole Hong Kong days, today's included
    start_hk = datetime.now(UTC).astimezone(HK).replace(hour=0, minute=0, second=0, microsecond=0)
    end_hk = start_hk + timedelta(days=1)
    api = httpx.get(f"{server.http}/v1/analytics/heatmap", headers=_bearer(), timeout=10,
                    params={"from": start_hk.isoformat(), "to": end_hk.isoformat(),
                            "bucket": "hour"}).json()  # fmt: skip
    unresolved = {c: sum(row) for c, row in zip(api["categories"], api["unresolved"], strict=True)}
    assert sum(unresolved.values()) >= 1, api
    page.goto(f"{server.http}/console/heatmap")
    page.wait_for_selector("table.heat td[data-count]:not(.zero)", timeout=20000)
    cells = page.eval_on_selector_all(
        "table.heat td:not(.zero)",
        "tds => tds.map(td => [td.dataset.category, Number(td.dataset.count)])",
    )
    shown = {}
    for category, count in cells:
        shown[category] = shown.get(category, 0) + count
    assert shown == {c: n for c, n in unresolved.items() if n}, (shown, api)
    assert all(n >= 1 for n in shown.values())
    page.click("table.heat td:not(.zero) >> nth=0")
    page.wait_for_selector(f'#utterances a[href="/console/calls/{CALL_ID}"]', timeout=20000)
    csv = page.get_attribute("#csv", "href")
    assert csv.startswith("/v1/analytics/heatmap.csv?") and "token" not in csv
    r = context.request.get(server.http + csv)  # the session cookie, not a token, in the browser
    assert r.status == 200 and "category,bucket,unresolved,total" in r.text()
    page.screenshot(path=str(shots / "heatmap.png"), full_page=True)

    # KPIs: the calls tile shows the API's figure for the same period (the last 7 HK days)
    page.goto(f"{server.http}/console/kpis")
    page.wait_for_selector('#kpi-calls .value:not([data-value=""])', timeout=20000)
    kpis = httpx.get(f"{server.http}/v1/analytics/kpis", headers=_bearer(), timeout=10,
                     params={"from": (start_hk - timedelta(days=6)).isoformat(),
                             "to": end_hk.isoformat()}).json()  # fmt: skip
    assert kpis["calls"] >= 1
    assert page.get_attribute("#kpi-calls .value", "data-value") == str(kpis["calls"])
    assert page.inner_text("#kpi-calls .value") == str(kpis["calls"])
    assert "開始的通話" in page.get_attribute("#kpi-calls", "title")
    page.wait_for_selector("#kpi-calls svg path.line", timeout=30000)  # the daily trend
    page.screenshot(path=str(shots / "kpis.png"), full_page=True)
    page.click("#lang-toggle")
    assert page.inner_text("#kpi-calls .label") == "Calls"
    assert page.get_attribute("#kpi-calls", "title") == "Calls started in the period."
    page.screenshot(path=str(shots / "kpis-en.png"), full_page=True)
    page.click("#lang-toggle")  # back to Chinese (stored in localStorage)

    # the call's own page, from the stored events
    page.goto(f"{server.http}/console/calls/{CALL_ID}")
    page.wait_for_selector("#timeline li.transcript", timeout=20000)
    assert page.locator("#timeline li.transcript").count() == len(transcripts)
    page.screenshot(path=str(shots / "call.png"), full_page=True)

    # sign out: the session is gone, pages and the API refuse the cookie
    page.click("#logout")
    page.wait_for_url(f"{server.http}/console/login")
    page.goto(f"{server.http}/console")
    assert page.url == f"{server.http}/console/login"
    assert context.request.get(f"{server.http}/calls").status == 401
    context.close()


def test_an_agent_sees_its_calls_and_is_refused_the_supervisor_pages(server, browser, shots):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = _sign_in(context, server, AGENT)
    page.wait_for_url(f"{server.http}/console/my-calls")
    playwright_api.expect(page.locator("nav a")).to_have_text(["我的通話"])
    mine = httpx.get(f"{server.http}/calls", headers=_bearer(AGENT), timeout=5).json()["calls"]
    for call in mine:  # the end-to-end test's call is assigned to agent-1
        page.wait_for_selector(f'#rows tr[data-call-id="{call["id"]}"]', timeout=10000)
    assert page.locator("#rows tr").count() == len(mine)
    for path in ("/console/heatmap", "/console/kpis"):
        response = page.goto(server.http + path)
        assert response.status == 403, path
        assert "無權存取" in page.inner_text("main")
    page.screenshot(path=str(shots / "agent-forbidden.png"))
    assert context.request.get(f"{server.http}/events").status == 403
    assert context.request.get(f"{server.http}/v1/analytics/kpis").status == 403
    context.close()


def test_a_bad_token_shows_the_form_again(server, browser, shots):
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    response = page.goto(f"{server.http}/console/login")
    assert response.status == 200
    page.screenshot(path=str(shots / "login.png"))
    page.fill("#token", "wrong-token-wrong-token")
    with page.expect_response(lambda r: r.url.endswith("/console/login")) as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    playwright_api.expect(page.locator("#error")).to_contain_text("權杖無效")
    assert "token" not in page.url.split("/console/login")[1]
    context.close()
