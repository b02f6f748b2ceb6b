"""GET /metrics (issue 13, "One core"): prometheus_client exposition from one registry per app.

The end-to-end test runs a real server subprocess (`_serve` from test_server.py), makes a refused
request and one short call, and parses what /metrics serves with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from test_server import ADMIN, SUPERVISOR, TOKENS, _bearer, _serve, _stored, _stream_call

from voice.server.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, ServerMetrics

# Every family /metrics serves: (name as the parser reports it, type, help). Counters are exposed
# as `<name>_total`; the parser names their family without the suffix.
FAMILIES = [
    ("voice_active_calls", "gauge", "Live calls being transcribed"),
    ("voice_calls", "counter", "Calls started, by protocol"),
    ("voice_calls_refused", "counter", "Calls refused, by reason"),
    ("voice_asr_queue_segments", "gauge", "Segments waiting for ASR"),
    ("voice_asr_queue_estimated_seconds", "gauge", "Estimated seconds to clear the ASR queue"),
    ("voice_overloaded", "gauge", "1 while the ASR queue is above its warn level"),
    ("voice_segments_shed", "counter", "Queued segments dropped under overload"),
    ("voice_transcripts", "counter", "Transcript events produced"),
    ("voice_events", "counter", "Events published, by type"),
    ("voice_speculative_decodes", "counter",
     "Utterances decoded before the VAD ended them, by use: committed (the turn ended at a short "
     "pause), reused (the VAD ended it with the same audio), partial (shown greyed)"),
    ("voice_errors", "counter", "Rejected or failed input, by protocol and kind"),
    ("voice_subscribers", "gauge", "Connected event subscribers"),
    ("voice_subscribers_dropped", "counter", "Subscribers disconnected for reading too slowly"),
    ("voice_auth_failures", "counter", "Requests refused, by reason"),
    ("voice_transcript_latency_seconds", "histogram",
     "End of utterance audio received -> transcript"),
    ("voice_asr_queue_wait_seconds", "histogram", "Time a segment waited for ASR"),
    ("voice_asr_batch_seconds", "histogram", "Wall time of one ASR batch"),
    ("voice_asr_batch_size", "histogram", "Segments per ASR batch"),
    ("voice_integration_deliveries", "counter", "Webhook and Zendesk delivery attempts, by target "
     "and outcome (delivered, retry, dead, gone)"),
    ("voice_integration_delivery_seconds", "histogram", "Wall time of one delivery attempt"),
    ("voice_integration_outbox_pending", "gauge", "Deliveries waiting to be sent or retried"),
]  # fmt: skip


def _parse(text: str) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels): value} for every sample in an exposition."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _buckets(samples: dict, name: str) -> list[float]:
    return sorted(float(dict(k)["le"]) for n, k in samples if n == name + "_bucket")


# --- without a server -----------------------------------------------------------------------------


def test_each_app_has_its_own_registry_and_exposes_every_family():
    a, b = ServerMetrics(), ServerMetrics()  # would raise on a shared registry: duplicate names
    a.errors.inc(protocol="stream", kind="bad_json")
    a.errors.inc(2, protocol="stream", kind="bad_json")
    a.batch_size.observe(3)
    a.queue_depth.set(5)
    calls = ["x", "y"]
    a.active_calls.read = lambda: len(calls)
    assert a.errors.get(protocol="stream", kind="bad_json") == 3
    assert a.errors.get(protocol="twilio", kind="bad_json") == 0  # never touched
    assert b.errors.get(protocol="stream", kind="bad_json") == 0  # the other app saw nothing
    a.segments_shed.inc()
    assert a.segments_shed.get() == 1 and b.segments_shed.get() == 0

    families = list(text_string_to_metric_families(a.render().decode()))
    assert [(f.name, f.type, f.documentation) for f in families] == FAMILIES
    samples = _parse(a.render().decode())
    assert _value(samples, "voice_errors_total", protocol="stream", kind="bad_json") == 3
    assert _value(samples, "voice_active_calls") == 2  # read at scrape time
    calls.append("z")
    assert _value(_parse(a.render().decode()), "voice_active_calls") == 3
    assert _value(samples, "voice_asr_queue_segments") == 5
    # unlabelled counters are served from the start, labelled ones from their first use
    assert _value(samples, "voice_transcripts_total") == 0
    assert _buckets(samples, "voice_asr_batch_size") == [*BATCH_BUCKETS, float("inf")]
    latency_buckets = _buckets(samples, "voice_transcript_latency_seconds")
    assert latency_buckets == [*LATENCY_BUCKETS, float("inf")]
    assert _value(samples, "voice_asr_batch_size_bucket", le="2.0") == 0
    assert _value(samples, "voice_asr_batch_size_bucket", le="3.0") == 1  # le is inclusive
    assert _value(samples, "voice_asr_batch_size_sum") == 3
    assert not any(name.endswith("_created") for name, _ in samples)


# --- end to end -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_model_dir):
    """`voice serve` with the packaged base model and auth; nothing else has called it."""
    tmp = tmp_path_factory.mktemp("metrics_server")
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    with _serve(tmp, "--model", str(base_model_dir), "--auth", str(tmp / "auth.json")) as running:
        yield running


def _scrape(server) -> tuple[httpx.Response, dict]:
    r = httpx.get(server.http + "/metrics", headers=_bearer(ADMIN), timeout=10)
    assert r.status_code == 200
    return r, _parse(r.text)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_metrics_scraped_and_parsed_after_a_refusal_and_a_call(server, demo_call):
    r, before = _scrape(server)
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    names = [(f.name, f.type, f.documentation) for f in text_string_to_metric_families(r.text)]
    assert names == FAMILIES

    bad = httpx.get(server.http + "/metrics", headers=_bearer("not-a-token"), timeout=10)
    assert bad.status_code == 401
    pcm, rate = sf.read(str(demo_call.path), dtype="int16")
    short = pcm[: int((demo_call.lines[0][1] + 0.8) * rate)]  # just the first line
    events = asyncio.run(_stream_call(server, "metrics-1", short))
    _stored(server, "metrics-1", token=SUPERVISOR)
    n_transcripts = sum(e["type"] == "transcript" for e in events)
    assert n_transcripts >= 1

    _, after = _scrape(server)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("voice_auth_failures_total", reason="bad_token") == 1
    assert moved("voice_calls_total", protocol="stream") == 1
    assert moved("voice_transcripts_total") == n_transcripts
    assert moved("voice_events_total", type="transcript") == n_transcripts
    assert moved("voice_transcript_latency_seconds_count") == n_transcripts
    assert moved("voice_transcript_latency_seconds_sum") > 0
    # every segment waited once and went in one batch; every batch was timed
    segments = _value(after, "voice_asr_batch_size_sum")
    assert segments >= n_transcripts
    assert _value(after, "voice_asr_queue_wait_seconds_count") == segments
    batches = _value(after, "voice_asr_batch_size_count")
    assert 1 <= batches == _value(after, "voice_asr_batch_seconds_count")
    assert _value(after, "voice_asr_batch_size_bucket", le="+Inf") == batches
    assert _value(after, "voice_errors_total", protocol="stream", kind="bad_json") == 0
