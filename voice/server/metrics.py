"""Prometheus text exposition, by hand: counters, gauges and histograms with labels."""

from __future__ import annotations

import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0)  # seconds
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32, 64)  # segments per encoder call


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(
        f'{k}="{str(v).replace(chr(92), "/").replace(chr(34), "")}"' for k, v in labels
    )
    return "{" + inner + "}"


class Metric:
    """A named metric family."""

    kind = "untyped"

    def __init__(self, name: str, help: str):
        self.name = name
        self.help = help

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]


class Counter(Metric):
    """Monotonic counts per label set."""

    kind = "counter"

    def __init__(self, name: str, help: str):
        super().__init__(name, help)
        self.values: dict[tuple, float] = defaultdict(float)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] += amount

    def get(self, **labels: str) -> float:
        return self.values.get(tuple(sorted(labels.items())), 0.0)

    def render(self) -> list[str]:
        lines = self.header()
        for key, v in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(key)} {v:g}")
        if not self.values:
            lines.append(f"{self.name} 0")
        return lines


class Gauge(Counter):
    """A value that goes up and down, or is read from a function at scrape time."""

    kind = "gauge"

    def __init__(self, name: str, help: str, read=None):
        super().__init__(name, help)
        self.read = read

    def set(self, value: float, **labels: str) -> None:
        self.values[tuple(sorted(labels.items()))] = value

    def render(self) -> list[str]:
        if self.read is not None:
            self.set(float(self.read()))
        return super().render()


class Histogram(Metric):
    """Cumulative bucket counts, sum and count (one label set)."""

    kind = "histogram"

    def __init__(self, name: str, help: str, buckets=LATENCY_BUCKETS):
        super().__init__(name, help)
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines, running = self.header(), 0
        for bound, n in zip(self.buckets, self.counts, strict=False):
            running += n
            lines.append(f'{self.name}_bucket{{le="{bound:g}"}} {running}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {self.sum:.6f}", f"{self.name}_count {self.count}"]
        return lines


class ServerMetrics:
    """Every metric the server exports; one instance per app."""

    def __init__(self):
        self.active_calls = Gauge("voice_active_calls", "Live calls being transcribed")
        self.calls = Counter("voice_calls_total", "Calls started, by protocol")
        self.calls_refused = Counter("voice_calls_refused_total", "Calls refused, by reason")
        self.queue_depth = Gauge("voice_asr_queue_segments", "Segments waiting for ASR")
        self.queue_seconds = Gauge(
            "voice_asr_queue_estimated_seconds", "Estimated seconds to clear the ASR queue"
        )
        self.overloaded = Gauge("voice_overloaded", "1 while the ASR queue is above its warn level")
        self.segments_shed = Counter(
            "voice_segments_shed_total", "Queued segments dropped under overload"
        )
        self.transcripts = Counter("voice_transcripts_total", "Transcript events produced")
        self.events = Counter("voice_events_total", "Events published, by type")
        self.errors = Counter(
            "voice_errors_total", "Rejected or failed input, by protocol and kind"
        )
        self.subscribers = Gauge("voice_subscribers", "Connected event subscribers")
        self.subscribers_dropped = Counter(
            "voice_subscribers_dropped_total", "Subscribers disconnected for reading too slowly"
        )
        self.auth_failures = Counter("voice_auth_failures_total", "Requests refused, by reason")
        self.latency = Histogram(
            "voice_transcript_latency_seconds", "End of utterance audio received -> transcript"
        )
        self.queue_wait = Histogram("voice_asr_queue_wait_seconds", "Time a segment waited for ASR")
        self.asr_batch_seconds = Histogram("voice_asr_batch_seconds", "Wall time of one ASR batch")
        self.batch_size = Histogram(
            "voice_asr_batch_size", "Segments per ASR batch", buckets=BATCH_BUCKETS
        )

    def all(self) -> list[Metric]:
        return [m for m in self.__dict__.values() if isinstance(m, Metric)]

    def render(self) -> str:
        return "\n".join(line for m in self.all() for line in m.render()) + "\n"
