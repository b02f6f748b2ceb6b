"""What every route shares: the config, metrics, authentication and the live call hub."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection, Request
from starlette.responses import JSONResponse

from voice.server.audit import audit
from voice.server.auth import Authenticator, Principal, token_from
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.metrics import ServerMetrics


@dataclass
class ServerContext:
    """One app's shared state, at `app.state.server`; routes find it with `context(conn)`."""

    config: ServerConfig
    metrics: ServerMetrics
    auth: Authenticator
    uploads: asyncio.Semaphore  # POST /v1/transcribe in progress
    hubs: dict[str, Any] = field(default_factory=dict)  # "hub" once the lifespan has started

    @property
    def hub(self) -> CallHub:
        return self.hubs["hub"]

    def principal_for(self, conn: HTTPConnection) -> tuple[Principal | None, bool]:
        """(principal, token_presented) for a request or WebSocket."""
        token = token_from(conn.headers, conn.query_params)
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
