"""What every route shares: the config, metrics, authentication, console sessions and the hub."""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from voice.server.audit import audit
from voice.server.auth import Authenticator, Principal, token_from
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics

SESSION_COOKIE = "voice_session"
SESSION_SECONDS = 8 * 3600  # one shift


@dataclass(frozen=True)
class Session:
    """A signed-in console user: who, until when, and the CSRF token its forms carry."""

    principal: Principal
    expires: float
    csrf: str


class Sessions:
    """Console sign-ins in memory: a random id (the cookie) -> Session; never the token itself,
    so a leaked cookie ends with its session and a restart signs everyone out."""

    def __init__(self, lifetime: float = SESSION_SECONDS):
        self.lifetime = lifetime
        self._by_id: dict[str, Session] = {}

    def open(self, principal: Principal) -> tuple[str, Session]:
        self._expire()
        session_id = secrets.token_urlsafe(32)
        session = Session(principal, time.time() + self.lifetime, secrets.token_urlsafe(32))
        self._by_id[session_id] = session
        return session_id, session

    def get(self, session_id: str | None) -> Session | None:
        session = self._by_id.get(session_id or "")
        if session is None or session.expires < time.time():
            return None
        return session

    def close(self, session_id: str | None) -> None:
        self._by_id.pop(session_id or "", None)

    def _expire(self) -> None:
        now = time.time()
        for session_id in [k for k, s in self._by_id.items() if s.expires < now]:
            del self._by_id[session_id]


def cookie_allowed(conn: HTTPConnection) -> bool:
    """May the session cookie stand for a token here? Only on plain HTTP reads (pages, JSON, SSE)
    from this origin: never on a WebSocket or a state-changing method, which would need CSRF
    checks of their own, and never when the browser says the request came from another site."""
    if conn.scope["type"] != "http" or conn.scope.get("method") not in ("GET", "HEAD"):
        return False
    return conn.headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def same_secret(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(a.encode(), b.encode())


@dataclass
class ServerContext:
    """One app's shared state, at `app.state.server`; routes find it with `context(conn)`."""

    config: ServerConfig
    metrics: ServerMetrics
    auth: Authenticator
    uploads: asyncio.Semaphore  # POST /v1/transcribe in progress
    hubs: dict[str, Any] = field(default_factory=dict)  # "hub" once the lifespan has started
    sessions: Sessions = field(default_factory=Sessions)  # console sign-ins
    integrations: Any = None  # voice.integrations.service.Integrations, with --integrations

    @property
    def hub(self) -> CallHub:
        return self.hubs["hub"]

    def principal_for(self, conn: HTTPConnection) -> tuple[Principal | None, bool]:
        """(principal, token_presented) for a request or WebSocket: the token if one is given,
        else a console session's cookie on a same-origin GET (pages, /events SSE, analytics)."""
        token = token_from(conn.headers, conn.query_params)
        if not token and cookie_allowed(conn) and not self.auth.insecure:
            session = self.sessions.get(conn.cookies.get(SESSION_COOKIE))
            if session is not None:
                return session.principal, True
        return self.auth.check(token), bool(token)

    def refuse(self, presented: bool, reason: str = "") -> JSONResponse:
        if not presented or reason == "bad_token":
            self.metrics.auth_failures.inc(reason="bad_token" if presented else "no_token")
            return JSONResponse({"error": "missing or invalid token"}, 401,
                                headers={"WWW-Authenticate": "Bearer"})  # fmt: skip
        self.metrics.auth_failures.inc(reason="forbidden")
        return JSONResponse({"error": "your role may not do this"}, 403)

    def require(self, request: Request, permission: str) -> Principal | JSONResponse:
        """The request's principal if it may do `permission`, else the 401/403 to answer."""
        principal, presented = self.principal_for(request)
        if principal is None:
            if not presented:  # an unknown token is audited by auth.check
                audit("authenticate", "failure", reason="no_token")
            return self.refuse(presented, "bad_token" if presented else "")
        if not principal.can(permission):
            audit("authorize", "failure", principal, reason=f"needs {permission}")
            return self.refuse(True)
        return principal


def context(conn: HTTPConnection) -> ServerContext:
    """The shared state of the app serving this request or WebSocket."""
    return conn.app.state.server
