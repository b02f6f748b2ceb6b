"""The supervisor console's sign-in, session cookie, CSRF checks and role gates, in process."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from voice.server.app import create_app
from voice.server.config import ServerConfig
from voice.server.routes.console import CONSOLE_DIR, CSRF_COOKIE
from voice.server.routes.context import SESSION_COOKIE

TOKENS = {
    "agent-token-aaaaaaaaaaaa": {"role": "agent", "name": "agent-1"},
    "supervisor-token-cccccccc": {"role": "supervisor", "name": "sup-1"},
    "admin-token-dddddddddddd": {"role": "admin", "name": "admin-1"},
}
AGENT, SUPERVISOR, ADMIN = list(TOKENS)
PAGES = ["/console", "/console/heatmap", "/console/kpis", "/console/my-calls", "/console/calls/x"]


@pytest.fixture
def client(tmp_path):
    config = ServerConfig(tokens=TOKENS, db_path=str(tmp_path / "calls.sqlite3"))
    with TestClient(create_app(config, transcriber=None), follow_redirects=False) as c:
        yield c


def _csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def _login(client: TestClient, token: str):
    form = client.get("/console/login")
    return client.post("/console/login", data={"token": token, "csrf": _csrf(form.text)})


def test_signed_out_pages_redirect_to_the_form(client):
    for path in PAGES:
        r = client.get(path)
        assert r.status_code == 303 and r.headers["location"] == "/console/login", path
    r = client.get("/console/login")
    assert r.status_code == 200 and "登入" in r.text
    assert "script-src" not in r.headers["content-security-policy"]  # default-src 'self' covers it
    assert "'unsafe-inline'" not in r.headers["content-security-policy"]


def test_sign_in_sets_a_strict_http_only_session_cookie_that_is_not_the_token(client):
    r = _login(client, SUPERVISOR)
    assert r.status_code == 303 and r.headers["location"] == "/console"
    cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie  # plain HTTP here
    assert SUPERVISOR not in cookie and SUPERVISOR not in r.headers.get("location", "")
    for path in PAGES[:4]:
        assert client.get(path).status_code == 200, path
    page = client.get("/console").text
    assert 'data-role="supervisor"' in page and "{{" not in page
    assert client.get("/calls").status_code == 200  # the cookie stands for the token on GETs


def test_sign_in_over_https_marks_the_cookie_secure(tmp_path):
    config = ServerConfig(tokens=TOKENS, db_path=str(tmp_path / "calls.sqlite3"))
    app = create_app(config, transcriber=None)
    with TestClient(app, base_url="https://testserver", follow_redirects=False) as c:
        r = _login(c, SUPERVISOR)
        assert r.status_code == 303
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith(SESSION_COOKIE))
        assert "Secure" in cookie


def test_a_bad_token_or_a_missing_csrf_token_is_refused(client):
    r = _login(client, "not-a-real-token-at-all")
    assert r.status_code == 401 and 'data-error="bad_token"' in r.text
    assert SESSION_COOKIE not in r.cookies
    client.get("/console/login")
    r = client.post("/console/login", data={"token": SUPERVISOR, "csrf": "forged"})
    assert r.status_code == 403 and 'data-error="expired"' in r.text
    client.cookies.delete(CSRF_COOKIE, path="/console/login")
    r = client.post("/console/login", data={"token": SUPERVISOR, "csrf": "x"})
    assert r.status_code == 403
    assert client.get("/console").status_code == 303


def test_an_agent_sees_only_its_calls(client):
    assert _login(client, AGENT).status_code == 303
    r = client.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/console/my-calls"
    assert client.get("/console/my-calls").status_code == 200
    for path in ("/console/heatmap", "/console/kpis"):
        r = client.get(path)
        assert r.status_code == 403 and "無權存取" in r.text, path
    assert client.get("/events").status_code == 403  # the all-calls stream, by cookie


def test_an_admin_sees_aggregates_but_no_call_content(client):
    assert _login(client, ADMIN).status_code == 303
    r = client.get("/console")
    assert r.status_code == 303 and r.headers["location"] == "/console/heatmap"
    assert client.get("/console/heatmap").status_code == 200
    assert client.get("/console/kpis").status_code == 200
    assert client.get("/console/my-calls").status_code == 403
    assert client.get("/console/calls/x").status_code == 403
    assert 'data-pages="heatmap kpis"' in client.get("/console/kpis").text


def test_the_cookie_is_not_a_token_for_websockets_cross_site_requests_or_posts(client):
    _login(client, SUPERVISOR)
    assert client.get("/calls", headers={"Sec-Fetch-Site": "cross-site"}).status_code == 401
    assert client.post("/v1/transcribe", content=b"").status_code == 401
    from starlette.websockets import WebSocketDisconnect

    with pytest.raises(WebSocketDisconnect), client.websocket_connect("/events") as ws:
        ws.receive_text()


def test_sign_out_needs_the_session_csrf_token_and_ends_the_session(client):
    _login(client, SUPERVISOR)
    session_id = client.cookies.get(SESSION_COOKIE)
    page = client.get("/console").text
    assert client.post("/console/logout", data={"csrf": "forged"}).status_code == 403
    assert client.get("/console").status_code == 200
    r = client.post("/console/logout", data={"csrf": _csrf(page)})
    assert r.status_code == 303 and r.headers["location"] == "/console/login"
    assert client.get("/console").status_code == 303
    client.cookies.set(SESSION_COOKIE, session_id)  # a copied cookie is dead too
    assert client.get("/calls").status_code == 401


def test_static_files_are_served_and_nothing_else(client):
    r = client.get("/console/static/common.js")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/javascript")
    assert client.get("/console/static/style.css").status_code == 200
    for name in ("login.html", "..%2Fcontext.py", ".hidden.js", "nope.js"):
        assert client.get(f"/console/static/{name}").status_code == 404, name


def test_pages_have_no_inline_script_and_no_remote_resources():
    for path in CONSOLE_DIR.glob("*.html"):
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), path.name
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), path.name
        assert not re.search(r"\s(style|on\w+)=", text), path.name  # the CSP would block them
    for path in CONSOLE_DIR.glob("*.js"):
        assert "http://" not in path.read_text().replace("http://www.w3.org/2000/svg", ""), path
