"""The app's routes, one module per concern; shared state in `ServerContext` (context.py)."""

from __future__ import annotations

from starlette.routing import BaseRoute, Route, WebSocketRoute

from voice.server.routes.analytics import heatmap, heatmap_csv, kpis, unresolved
from voice.server.routes.console import console_page, login_form, login_submit, logout, static
from voice.server.routes.context import ServerContext, context
from voice.server.routes.events import events_sse, events_ws
from voice.server.routes.ingest import stream_ws, twilio_ws
from voice.server.routes.messages import get_customer, post_message
from voice.server.routes.records import (
    config_endpoint,
    get_call,
    healthz,
    list_calls,
    metrics_endpoint,
)
from voice.server.routes.referrals import ack_referral, list_referrals
from voice.server.routes.review import (
    corrections_endpoint,
    get_agreement,
    get_audio,
    get_job,
    get_rubric,
    get_sheet,
    list_jobs,
    reviews_endpoint,
)
from voice.server.routes.upload import transcribe_upload
from voice.server.routes.whatsapp import whatsapp_webhook
from voice.server.routes.zendesk import zendesk_webhook

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
    Route("/v1/analytics/heatmap", heatmap),
    Route("/v1/analytics/heatmap.csv", heatmap_csv),
    Route("/v1/analytics/kpis", kpis),
    Route("/v1/analytics/unresolved", unresolved),
    Route("/v1/referrals", list_referrals),
    Route("/v1/referrals/{referral_id}/ack", ack_referral, methods=["POST"]),
    Route("/v1/audit/jobs", list_jobs),
    Route("/v1/audit/jobs/{job_id}", get_job),
    Route("/v1/audit/rubric", get_rubric),
    Route("/v1/audit/agreement", get_agreement),
    Route("/v1/audit/calls/{call_id}", get_sheet),
    Route("/v1/calls/{call_id}/audio", get_audio),
    Route("/v1/calls/{call_id}/corrections", corrections_endpoint, methods=["GET", "POST"]),
    Route("/v1/calls/{call_id}/reviews", reviews_endpoint, methods=["GET", "POST"]),
    Route("/integrations/zendesk/webhook", zendesk_webhook, methods=["POST"]),
    Route("/v1/messages", post_message, methods=["POST"]),
    Route("/v1/customers/{customer_id}", get_customer),
    Route("/integrations/whatsapp", whatsapp_webhook, methods=["GET", "POST"]),
    Route("/console/login", login_form, methods=["GET"]),
    Route("/console/login", login_submit, methods=["POST"]),
    Route("/console/logout", logout, methods=["POST"]),
    Route("/console", console_page("wallboard")),
    Route("/console/heatmap", console_page("heatmap")),
    Route("/console/kpis", console_page("kpis")),
    Route("/console/my-calls", console_page("calls")),
    Route("/console/calls/{call_id}", console_page("call")),
    Route("/console/customers/{customer_id}", console_page("customer")),
    Route("/console/audit", console_page("audit")),
    Route("/console/audit/calls/{call_id}", console_page("review")),
    Route("/console/static/{name}", static),
]
