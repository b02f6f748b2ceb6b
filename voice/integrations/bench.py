"""Timing of the store's event writes with and without the integrations outbox in the transaction."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from voice.integrations import config as cfg
from voice.integrations.service import Integrations
from voice.server.store import Store

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
# The stored events of one caller turn as the hub writes them (a transcript, the answer engine's
# suggestion, then for every third turn a high-priority alert: the case that queues deliveries).
TURN = (
    {"type": "transcript", "text": "我想問下我張單點解貴咗咁多", "latency_ms": 500.0},
    {"type": "suggestion", "resolved": False, "language": "yue-Hant-HK",
     "suggestions": [{"id": "REF-001", "category": "退款", "reply": "...", "score": 0.7}]},
)  # fmt: skip
ALERT = {"type": "alert", "alert": "priority", "message": "high-priority matter",
         "details": {"id": "CMP-001", "category": "投訴"}}  # fmt: skip


def full_config() -> cfg.IntegrationsConfig:
    """Two webhooks, Zendesk and a routing rule: every extension runs in the transaction."""
    hook = {"url": "https://hooks.example.com/x", "secret": SECRET,
            "events": list(cfg.EVENT_TYPES)}  # fmt: skip
    return cfg.parse({
        "webhooks": [{"name": "a", **hook}, {"name": "b", **hook, "format": "standard"}],
        "zendesk": {"url": "https://acme.zendesk.com", "email": "bot@acme.hk", "token_env": "T"},
        "routing": [{"when": {"category": "退款", "outcome": "unresolved"},
                     "department": "finance", "sla_minutes": 30}],
    }, {"T": "token"})  # fmt: skip


def bench_writes(calls: int = 200, turns: int = 10, with_outbox: bool = True) -> dict:
    """Microseconds per stored event over `calls` calls of `turns` turns: the median and p95 of
    all, and the median per event type (`by_type`)."""
    with tempfile.TemporaryDirectory() as tmp:
        outbox = Integrations(full_config()).outbox if with_outbox else None
        store = Store(Path(tmp) / "calls.sqlite3", outbox)
        times, by_type = [], {}
        for c in range(calls):
            call_id = f"bench-{c}"
            store.open_call(call_id, "stream", None, None, {})
            seq = 0
            for t in range(turns):
                events = [*TURN, ALERT] if t % 3 == 2 else list(TURN)
                for event in events:
                    seq += 1
                    data = {**event, "call_id": call_id, "start": 3.0 * t, "end": 3.0 * t + 2}
                    start = time.perf_counter()
                    store.add_event(call_id, seq, data)
                    times.append(time.perf_counter() - start)
                    by_type.setdefault(event["type"], []).append(times[-1])
            start = time.perf_counter()
            store.add_event(call_id, seq + 1, {"type": "end", "call_id": call_id,
                                               "duration": 30.0, "utterances": turns})  # fmt: skip
            times.append(time.perf_counter() - start)
            by_type.setdefault("end", []).append(times[-1])
        deliveries = store.db.execute("SELECT count(*) FROM outbox_deliveries").fetchone()[0]
        store.close()
    times.sort()
    return {"events": len(times), "median_us": statistics.median(times) * 1e6,
            "p95_us": times[int(0.95 * len(times))] * 1e6, "deliveries": deliveries,
            "by_type": {k: statistics.median(v) * 1e6 for k, v in by_type.items()}}  # fmt: skip


__all__ = ["bench_writes", "full_config"]
