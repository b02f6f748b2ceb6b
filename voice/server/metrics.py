"""The server's Prometheus metrics, exported with prometheus_client from one registry per app.

Each `ServerMetrics` owns its own `CollectorRegistry` (never the process-wide default), so several
apps can live in one process, as they do in the tests. The small wrappers below keep the call
sites' shape (`errors.inc(protocol=..., kind=...)`, `gauge.read = fn`) and add `get()` for tests.
"""

from __future__ import annotations

from collections.abc import Callable

import prometheus_client
from prometheus_client import CollectorRegistry, generate_latest

__all__ = ["BATCH_BUCKETS", "CONTENT_TYPE", "LATENCY_BUCKETS", "ServerMetrics"]

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)  # seconds
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)  # segments per encoder call
CONTENT_TYPE = prometheus_client.CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes

# No `<name>_created` series beside each counter and histogram: /metrics serves what it always did.
# (A process-wide switch in prometheus_client; it applies to metrics created after this line.)
prometheus_client.disable_created_metrics()


class Counter:
    """Monotonic counts, optionally per label set."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str, labels=()):
        self._registry = registry
        self._sample = name if name.endswith("_total") else name + "_total"
        self._metric = prometheus_client.Counter(name, help, tuple(labels), registry=registry)

    def _child(self, labels: dict[str, str]):
        return self._metric.labels(**labels) if labels else self._metric

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self._child(labels).inc(amount)

    def get(self, **labels: str) -> float:
        """The current value for one label set (0 if never touched)."""
        return self._registry.get_sample_value(self._sample, labels) or 0.0


class Gauge:
    """A value that goes up and down, or is read from a function at scrape time (`read`)."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str):
        self._registry = registry
        self._name = name
        self._metric = prometheus_client.Gauge(name, help, registry=registry)
        self._read: Callable[[], float] | None = None

    @property
    def read(self) -> Callable[[], float] | None:
        return self._read

    @read.setter
    def read(self, fn: Callable[[], float] | None) -> None:
        self._read = fn
        if fn is not None:
            self._metric.set_function(lambda: float(fn()))

    def set(self, value: float) -> None:
        self._metric.set(value)

    def get(self) -> float:
        return self._registry.get_sample_value(self._name) or 0.0


class Histogram:
    """Cumulative bucket counts, sum and count (no labels)."""

    def __init__(self, registry: CollectorRegistry, name: str, help: str, buckets=LATENCY_BUCKETS):
        self._metric = prometheus_client.Histogram(name, help, buckets=buckets, registry=registry)

    def observe(self, value: float) -> None:
        self._metric.observe(value)


class ServerMetrics:
    """Every metric the server exports; one instance (and one registry) per app."""

    content_type = CONTENT_TYPE

    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.active_calls = Gauge(r, "voice_active_calls", "Live calls being transcribed")
        self.calls = Counter(r, "voice_calls_total", "Calls started, by protocol", ["protocol"])
        self.calls_refused = Counter(
            r, "voice_calls_refused_total", "Calls refused, by reason", ["reason"]
        )
        self.queue_depth = Gauge(r, "voice_asr_queue_segments", "Segments waiting for ASR")
        self.queue_seconds = Gauge(
            r, "voice_asr_queue_estimated_seconds", "Estimated seconds to clear the ASR queue"
        )
        self.overloaded = Gauge(
            r, "voice_overloaded", "1 while the ASR queue is above its warn level"
        )
        self.segments_shed = Counter(
            r, "voice_segments_shed_total", "Queued segments dropped under overload"
        )
        self.transcripts = Counter(r, "voice_transcripts_total", "Transcript events produced")
        self.events = Counter(r, "voice_events_total", "Events published, by type", ["type"])
        self.speculation = Counter(
            r, "voice_speculative_decodes_total",
            "Utterances decoded before the VAD ended them, by use: committed (the turn ended at "
            "a short pause), reused (the VAD ended it with the same audio), partial (shown "
            "greyed)", ["outcome"],
        )  # fmt: skip
        self.errors = Counter(
            r,
            "voice_errors_total",
            "Rejected or failed input, by protocol and kind",
            ["protocol", "kind"],
        )
        self.subscribers = Gauge(r, "voice_subscribers", "Connected event subscribers")
        self.subscribers_dropped = Counter(
            r, "voice_subscribers_dropped_total", "Subscribers disconnected for reading too slowly"
        )
        self.auth_failures = Counter(
            r, "voice_auth_failures_total", "Requests refused, by reason", ["reason"]
        )
        self.latency = Histogram(
            r, "voice_transcript_latency_seconds", "End of utterance audio received -> transcript"
        )
        self.queue_wait = Histogram(
            r, "voice_asr_queue_wait_seconds", "Time a segment waited for ASR"
        )
        self.asr_batch_seconds = Histogram(
            r, "voice_asr_batch_seconds", "Wall time of one ASR batch"
        )
        self.batch_size = Histogram(
            r, "voice_asr_batch_size", "Segments per ASR batch", buckets=BATCH_BUCKETS
        )

        self.deliveries = Counter(
            r, "voice_integration_deliveries_total",
            "Webhook and Zendesk delivery attempts, by target and outcome "
            "(delivered, retry, dead, gone)", ["target", "outcome"],
        )  # fmt: skip
        self.delivery_seconds = Histogram(
            r, "voice_integration_delivery_seconds", "Wall time of one delivery attempt"
        )
        self.outbox_pending = Gauge(
            r, "voice_integration_outbox_pending", "Deliveries waiting to be sent or retried"
        )

    def render(self) -> bytes:
        """The exposition for GET /metrics; serve it as `content_type`."""
        return generate_latest(self.registry)
