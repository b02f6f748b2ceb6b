"""The supervisor console: sign-in with a session cookie, and its pages (voice/server/console/)."""

from __future__ import annotations

import html
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from voice.server.audit import audit
from voice.server.auth import Principal
from voice.server.routes.context import (
    SESSION_COOKIE,
    SESSION_SECONDS,
    Session,
    context,
    same_secret,
)

CONSOLE_DIR = Path(__file__).resolve().parents[1] / "console"
CSRF_COOKIE = "voice_login_csrf"  # double-submit token of the sign-in form (no session yet)
CSRF_HEADER = "x-csrf-token"  # the session's CSRF token on a console script's POST
MAX_FORM_BYTES = 8192
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Everything from this origin, nothing inline: the pages are plain files and the JS builds the DOM.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HOME = {"wallboard": "/console", "heatmap": "/console/heatmap", "kpis": "/console/kpis",
        "calls": "/console/my-calls", "audit": "/console/audit"}  # fmt: skip
# A page reached from another's list is allowed with it (a call from the calls, a review from audit)
PARENT = {"call": "calls", "review": "audit", "customer": "calls"}
# page name -> (its body in CONSOLE_DIR, its script or None, its title's i18n key); every page
# is that body inside layout.html (head, navigation, sign-out form); who may open which: pages_for
PAGES = {
    "wallboard": ("wallboard.html", "wallboard.js", "wallboard"),
    "heatmap": ("heatmap.html", "heatmap.js", "heatmap"),
    "kpis": ("kpis.html", "kpis.js", "kpis"),
    "calls": ("calls.html", "calls.js", "calls"),
    "call": ("call.html", "call.js", "call_detail"),
    "customer": ("customer.html", "customer.js", "customer_title"),
    "audit": ("audit.html", "audit.js", "audit"),
    "review": ("review.html", "review.js", "review_title"),
    "forbidden": ("forbidden.html", None, "forbidden_title"),
}


def pages_for(principal: Principal) -> list[str]:
    """The console pages this principal may open, in navigation order: each needs the permission
    of the API it reads, so an admin (aggregates, no call content) gets the heatmap and KPIs."""
    wanted = {"wallboard": "all_calls", "heatmap": "analytics", "kpis": "analytics",
              "calls": "own_calls", "audit": "audit"}  # fmt: skip
    return [name for name, permission in wanted.items() if principal.can(permission)]


def render(template: str, status: int = 200, /, **values: str) -> HTMLResponse:
    """A page from CONSOLE_DIR with its {{placeholders}} filled, HTML-escaped."""
    return fill((CONSOLE_DIR / template).read_text(encoding="utf-8"), status, **values)


def render_page(name: str, status: int = 200, /, **values: str) -> HTMLResponse:
    """Console page `name`: its body and script inside layout.html, placeholders filled."""
    body, script, title = PAGES[name]
    tag = f'<script src="/console/static/{script}" defer></script>' if script else ""
    text = (CONSOLE_DIR / "layout.html").read_text(encoding="utf-8")
    text = text.replace("[[script]]", tag).replace(
        "[[main]]", (CONSOLE_DIR / body).read_text(encoding="utf-8")
    )
    blank = {"call_id": "", "customer_id": ""}  # pages without them
    return fill(text, status, page=name, title=title, **{**blank, **values})


def fill(text: str, status: int, /, **values: str) -> HTMLResponse:
    """`text` with its {{placeholders}} filled, HTML-escaped, as a response."""
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", html.escape(value, quote=True))
    return HTMLResponse(text, status, headers=SECURITY_HEADERS)


def session_of(request: Request) -> tuple[str | None, Session | None]:
    session_id = request.cookies.get(SESSION_COOKIE)
    return session_id, context(request).sessions.get(session_id)


def csrf_ok(request: Request, session: Session) -> bool:
    """May a console page's script POST as `session`? Only from this origin, carrying the
    session's CSRF token in the X-CSRF-Token header: the page has it (its sign-out form), another
    site can neither read it nor set that header on a cross-origin request without CORS."""
    if request.headers.get("sec-fetch-site", "same-origin") != "same-origin":
        return False
    return same_secret(request.headers.get(CSRF_HEADER), session.csrf)


async def read_form(request: Request) -> dict[str, str]:
    """An urlencoded form body (no python-multipart here); the first value of each field."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return {}
    fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
    return {k: v[0] for k, v in fields.items()}


def login_page(request: Request, error: str = "", status: int = 200) -> HTMLResponse:
    """The sign-in form, with a fresh double-submit CSRF token in a field and a cookie."""
    csrf = secrets.token_urlsafe(32)
    response = render("login.html", status, csrf=csrf, error=error)
    response.set_cookie(CSRF_COOKIE, csrf, max_age=3600, path="/console/login", httponly=True,
                        samesite="strict", secure=request.url.scheme == "https")  # fmt: skip
    return response


async def login_form(request: Request) -> Response:
    _, session = session_of(request)
    if session is not None:
        return RedirectResponse("/console", 303)
    return login_page(request)


async def login_submit(request: Request) -> Response:
    ctx = context(request)
    form = await read_form(request)
    if not same_secret(form.get("csrf"), request.cookies.get(CSRF_COOKIE)):
        audit("console.login", "failure", reason="csrf")
        return login_page(request, "expired", 403)
    principal = ctx.auth.check(form.get("token", "").strip() or None)  # audits a bad token
    if principal is None:
        ctx.metrics.auth_failures.inc(reason="bad_token")
        return login_page(request, "bad_token", 401)
    session_id, _ = ctx.sessions.open(principal)
    audit("console.login", "success", principal)
    response = RedirectResponse("/console", 303)
    response.set_cookie(SESSION_COOKIE, session_id, max_age=SESSION_SECONDS, path="/",
                        httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")  # fmt: skip
    response.delete_cookie(CSRF_COOKIE, path="/console/login")
    return response


async def logout(request: Request) -> Response:
    session_id, session = session_of(request)
    form = await read_form(request)
    if session is not None and not same_secret(form.get("csrf"), session.csrf):
        audit("console.logout", "failure", session.principal, reason="csrf")
        return Response("CSRF check failed", 403, headers=SECURITY_HEADERS)
    context(request).sessions.close(session_id)
    if session is not None:
        audit("console.logout", "success", session.principal)
    response = RedirectResponse("/console/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def page(name: str, session: Session, **values: str) -> HTMLResponse:
    principal = session.principal
    return render_page(name, csrf=session.csrf, role=principal.role, name=principal.name,
                       pages=" ".join(pages_for(principal)), **values)  # fmt: skip


def forbidden(session: Session) -> HTMLResponse:
    principal = session.principal
    audit("console.page", "failure", principal, reason="forbidden")
    return render_page("forbidden", 403, csrf=session.csrf, role=principal.role,
                       name=principal.name, pages=" ".join(pages_for(principal)))  # fmt: skip


def console_page(name: str):
    """A route for a page: sign-in first, then the page if the principal's role allows it."""

    async def endpoint(request: Request) -> Response:
        _, session = session_of(request)
        if session is None:
            return RedirectResponse("/console/login", 303)
        allowed = pages_for(session.principal)
        if name == "wallboard" and name not in allowed and allowed:
            return RedirectResponse(HOME[allowed[0]], 303)  # an agent's home is its calls
        if PARENT.get(name, name) not in allowed:
            return forbidden(session)
        call_id = request.path_params.get("call_id", "")
        customer_id = request.path_params.get("customer_id", "")
        return page(name, session, call_id=call_id, customer_id=customer_id)

    return endpoint


async def static(request: Request) -> Response:
    """A stylesheet or script of the console (public: they hold no data)."""
    name = request.path_params["name"]
    path = CONSOLE_DIR / name
    media_type = STATIC_TYPES.get(path.suffix)
    if media_type is None or "/" in name or name.startswith(".") or not path.is_file():
        return Response("not found", 404)
    return Response(path.read_bytes(), media_type=media_type,
                    headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})  # fmt: skip
