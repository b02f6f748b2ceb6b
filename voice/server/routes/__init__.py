"""The app's routes, one module per concern; shared state in `ServerContext` (context.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from voice.server.routes.context import ServerContext, context
from voice.server.routes.events import events_sse, events_ws
from voice.server.routes.ingest import stream_ws, twilio_ws
from voice.server.routes.records import (
    config_endpoint,
    get_call,
    healthz,
    list_calls,
    metrics_endpoint,
)
from voice.server.routes.upload import transcribe_upload

__all__ = ["ROUTES", "ServerContext", "context"]

ROUTES: list[BaseRoute] = [
    Route("/healthz", healthz),
    Route("/metrics", metrics_endpoint),
    Route("/config", config_endpoint),
    Route("/calls", list_calls),
    Route("/events", events_sse),
    WebSocketRoute("/events", events_ws),
    Route("/calls/{call_id}/events", events_sse),
    WebSocketRoute("/calls/{call_id}/events", events_ws),
    Route("/calls/{call_id}", get_call),
    Route("/v1/transcribe", transcribe_upload, methods=["POST"]),
    WebSocketRoute("/twilio", twilio_ws),
    WebSocketRoute("/stream", stream_ws),
]
