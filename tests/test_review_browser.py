"""Reviewing a sampled call in the console, in a real browser (Debian's chromium via Playwright):
an auditor signs in, opens the call from its audit sample, plays a line, corrects it, scores it.

Screenshots go to $CONSOLE_SCREENSHOTS if set, else the test's tmp folder."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from conftest import CHROMIUM
from test_review import (
    AGENT,
    AUDITOR,
    AUDITOR2,
    GOOD,
    JOB,
    SAMPLED,
    seed_sample,
    start_server,
    stream_calls,
)
from test_server import _bearer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not Path(CHROMIUM).exists(), reason=f"no {CHROMIUM}: apt-get install chromium"
    ),
]
playwright_api = pytest.importorskip("playwright.sync_api", reason="pip install playwright")
from test_console_browser import _sign_in  # noqa: E402  (after the skips)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir, demo_call):
    tmp = tmp_path_factory.mktemp("review-browser")
    with start_server(tmp, tiny_model_dir) as running:
        stream_calls(running, demo_call, {SAMPLED: None})
        seed_sample(tmp / "calls.sqlite3", JOB, [SAMPLED])
        yield running


def test_an_auditor_plays_corrects_and_scores_a_sampled_call(server, browser, shots):
    expect = playwright_api.expect
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="zh-HK")
    page = _sign_in(context, server, AUDITOR)
    page.wait_for_url(f"{server.http}/console/audit")  # an auditor's home
    expect(page.locator("nav a")).to_have_text(["質素審核"])
    link = f'section.job[data-job-id="{JOB}"] a[href="/console/audit/calls/{SAMPLED}"]'
    page.wait_for_selector(link, timeout=15000)
    assert "未審核" in page.inner_text(f'tr[data-call-id="{SAMPLED}"]')
    page.screenshot(path=str(shots / "audit.png"), full_page=True)
    page.click(link)
    page.wait_for_url(f"{server.http}/console/audit/calls/{SAMPLED}")

    # play the first line: the player loads that utterance's WAV (padded by 0.25 s each side)
    first = page.locator("#lines li[data-seq]").first
    first.wait_for(timeout=15000)
    sheet = httpx.get(f"{server.http}/v1/audit/calls/{SAMPLED}", headers=_bearer(AUDITOR),
                      timeout=10).json()  # fmt: skip
    line = sheet["lines"][0]
    first.locator("button.play").click()
    page.wait_for_function("() => { const p = document.getElementById('player');"
                           " return p.src.includes('/audio?') && p.readyState >= 1; }",
                           timeout=15000)  # fmt: skip
    duration = page.evaluate("document.getElementById('player').duration")
    expected = line["end"] + 0.25 - max(0.0, line["start"] - 0.25)
    assert duration == pytest.approx(expected, abs=0.05)
    expect(first).to_have_class(re.compile(r"\bplaying\b"))

    # correct it: the saved correction shows with who made it
    first.locator("textarea.fix").fill("喂，你好，我想查下我張單。")
    first.locator("button.save").click()
    expect(first.locator(".correction-info")).to_contain_text("auditor-lee", timeout=10000)
    expect(first.locator(".saved-text")).to_have_text("喂，你好，我想查下我張單。")
    corrections = httpx.get(f"{server.http}/v1/calls/{SAMPLED}/corrections",
                            headers=_bearer(AUDITOR), timeout=10).json()["corrections"]  # fmt: skip
    assert [(c["seq"], c["text"]) for c in corrections] == [
        (line["seq"], "喂，你好，我想查下我張單。")
    ]

    # another auditor reviewed first: blind until this one submits
    r = httpx.post(f"{server.http}/v1/calls/{SAMPLED}/reviews", headers=_bearer(AUDITOR2),
                   json={"scores": {**GOOD, "empathy": 5}}, timeout=10)  # fmt: skip
    assert r.status_code == 201
    page.reload()
    page.wait_for_selector("#others-hidden", timeout=10000)
    assert "auditor-wong" not in page.inner_text("#reviews")

    # the rubric form: a required item left out is refused naming it, then submitted in full
    form = page.locator("#review-form")
    form.locator('input[name="greeting"][value="true"]').check()
    form.locator('button[type="submit"]').click()
    expect(page.locator("#form-error")).to_contain_text("scores.suggestion_accuracy")
    form.locator('input[name="suggestion_accuracy"][value="4"]').check()
    form.locator('input[name="compliance"][value="compliant"]').check()
    form.locator('input[name="empathy"][value="3"]').check()
    form.locator('textarea[name="comment"]').fill("語氣有禮")
    page.screenshot(path=str(shots / "review-form.png"), full_page=True)
    form.locator('button[type="submit"]').click()
    page.wait_for_selector('#reviews th[data-reviewer="auditor-wong"]', timeout=10000)
    expect(page.locator("#review-form")).to_be_hidden()
    empathy = page.locator('#reviews tr[data-item="empathy"]')
    expect(empathy.locator('td[data-reviewer="auditor-lee"]')).to_have_text("3")
    expect(empathy.locator('td[data-reviewer="auditor-wong"]')).to_have_text("5")
    expect(empathy).to_have_class("differs")
    expect(page.locator('#reviews tr[data-item="comment"]')).to_contain_text("語氣有禮")
    expect(page.locator("#agreement")).to_have_text("75%")  # 3 of 4 items alike
    page.screenshot(path=str(shots / "review.png"), full_page=True)
    page.click("#lang-toggle")
    expect(page.locator('#reviews tr[data-item="greeting"] th')).to_have_text(
        "Greeted the caller and gave their name")  # fmt: skip
    page.click("#lang-toggle")

    # the audit list shows both reviews; an agent may not open the review page's data
    page.goto(f"{server.http}/console/audit")
    expect(page.locator(f'tr[data-call-id="{SAMPLED}"] .review-status')).to_contain_text(
        "2 · auditor-wong, auditor-lee", timeout=10000)  # fmt: skip
    expect(page.locator("#calibration-agreement")).to_have_text("75%")
    expect(page.locator('table.calibration tr[data-item="empathy"]')).to_contain_text("同理心")
    page.screenshot(path=str(shots / "audit-reviewed.png"), full_page=True)
    context.close()
    agent = browser.new_context()
    page = _sign_in(agent, server, AGENT)
    page.wait_for_url(f"{server.http}/console/my-calls")
    assert page.goto(f"{server.http}/console/audit/calls/{SAMPLED}").status == 403
    assert agent.request.get(f"{server.http}/v1/calls/{SAMPLED}/audio").status == 403
    agent.close()
