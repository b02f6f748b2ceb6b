"""The Starlette app: ingest WebSockets, event subscriptions, call records, upload, health, metrics.

Endpoints (token on all but /healthz; see auth.py for roles):
- WS  /twilio                 Twilio Media Streams (token: header, `?token=` or customParameters)
- WS  /stream                 raw stream: JSON start, binary audio; events come back as JSON
- WS|GET(SSE) /calls/{id}/events   one call's events: stored ones first, then live
- WS|GET(SSE) /events         every live call's events (supervisor view)
- GET /calls, GET /calls/{id} call records; the latter with its events in order
- POST /v1/transcribe         an audio file in the body -> its events as JSON (413 over
                              `max_upload_seconds` by its header; 503 while `max_uploads` run;
                              408 when the body takes longer than `upload_timeout_s`)
- GET /healthz, GET /metrics, GET /config
- GET /v1/referrals, POST /v1/referrals/{id}/ack     department referrals (routes/referrals.py)
- POST /integrations/zendesk/webhook   agents' ticket replies, signed by Zendesk (routes/zendesk.py)
- POST /v1/messages           a customer's text message (web, whatsapp, wechat) -> its answer
                              events; GET /v1/customers/{id}: their timeline across channels
                              (routes/messages.py, conversations.py, customers.py)
- GET|POST /integrations/whatsapp   WhatsApp Cloud API webhook: verify handshake, signed messages
                              (routes/whatsapp.py)

The routes live in voice/server/routes/ (one module per concern); every ingest stream, WebSocket
or AudioSocket, is driven by session.py. Ingest streams end at the limits in limits.py (no start:
1002, no audio: 4408, too long: 4413). A client that has not authenticated by header or query is
read no further than its start message: anything else, or anything malformed, closes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from starlette.applications import Starlette
from starlette.middleware import Middleware

from voice.integrations.config import IntegrationsConfig
from voice.integrations.service import Integrations
from voice.server.auth import Authenticator
from voice.server.calls import CallHub
from voice.server.config import ServerConfig
from voice.server.logs import RequestContext
from voice.server.metrics import ServerMetrics
from voice.server.routes import ROUTES, ServerContext
from voice.server.routes.events import sse  # noqa: F401 (re-exported)
from voice.server.routes.upload import UPLOAD_RETRY_AFTER_S  # noqa: F401 (re-exported)
from voice.server.session import END_WAIT_S  # noqa: F401 (re-exported)
from voice.server.store import Store
from voice.server.websocket import (  # noqa: F401 (re-exported)
    MAX_CLOSE_REASON,
    SEND_TIMEOUT_S,
    safe_close,
    safe_send,
)
from voice.vad import VadOptions

log = logging.getLogger(__name__)


def create_app(
    config: ServerConfig,
    transcriber,
    vad_options: VadOptions = VadOptions(),
    answer_engine=None,
    integrations: IntegrationsConfig | None = None,
) -> Starlette:
    """Build the app; the scheduler, store, AudioSocket listener and integrations (webhooks,
    Zendesk, referrals: voice/integrations/) start with it."""
    config = config.validate()
    service = Integrations(integrations) if integrations is not None else None
    metrics = ServerMetrics()
    server = ServerContext(
        config=config,
        metrics=metrics,
        auth=Authenticator(config.tokens, config.insecure_no_auth),
        uploads=asyncio.Semaphore(config.max_uploads),
        integrations=service,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        store = Store(config.db_path, service.outbox if service else None)
        router = service.referrals if service else None
        hub = CallHub(config, store, metrics, vad_options, answer_engine, transcriber, router)
        hub.scheduler.start()
        if service is not None:
            service.start(hub, store, metrics)
        server.hubs["hub"] = hub
        listener = None
        if config.audiosocket_port is not None:
            from voice.server.audiosocket_server import start_audiosocket

            listener = await start_audiosocket(hub, config)
        watcher = None
        if answer_engine is not None and config.kb_watch_seconds > 0:
            from voice.server.kbwatch import watch_kb

            watcher = asyncio.create_task(watch_kb(answer_engine, config.kb_watch_seconds))
        log.info("server ready", extra={"status": "ready"})
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
            if listener is not None:
                listener.close()
            await hub.shutdown()
            if service is not None:
                await service.stop()
            store.close()

    app = Starlette(routes=ROUTES, lifespan=lifespan, middleware=[Middleware(RequestContext)])
    app.state.server = server
    app.state.metrics = metrics
    app.state.config = config
    app.state.hubs = server.hubs
    return app
