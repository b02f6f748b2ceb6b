"""voice.pipeline: a call session over any encoding and chunking gives the same utterances."""

import pytest

from voice.audio import encode_bytes, float_to_pcm16, read_audio
from voice.pipeline import CallSession, StreamFormat
from voice.vad import VadOptions


def _events(session, data, chunk):
    events = []
    for i in range(0, len(data), chunk):
        events += session.push(data[i : i + chunk])
    return events + session.flush()


def _spans(events):
    return [(e.start, e.end) for e in events if e.type == "segment"]


@pytest.fixture(scope="module")
def demo_pcm8k(demo_call):
    return float_to_pcm16(read_audio(demo_call.path, target_rate=8000))


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "pcm16"])
def test_every_encoding_finds_the_demo_lines(demo_call, demo_pcm8k, encoding):
    data = encode_bytes(demo_pcm8k, encoding)
    session = CallSession("c1", None, VadOptions(), StreamFormat(encoding, 8000))
    events = _events(session, data, 160 if encoding != "pcm16" else 320)  # 20 ms frames
    spans = _spans(events)
    assert len(spans) == len(demo_call.lines)
    for (start, end), (true_start, true_end, _) in zip(spans, demo_call.lines, strict=True):
        assert abs(start - true_start) < 0.3 and abs(end - true_end) < 0.3
    assert events[-1].type == "end"
    assert events[-1].duration == pytest.approx(len(demo_pcm8k) / 8000, abs=0.01)


def test_chunking_of_the_byte_stream_does_not_change_utterances(demo_pcm8k):
    data = encode_bytes(demo_pcm8k, "mulaw")
    runs = [
        _spans(_events(CallSession("c", None, stream=StreamFormat("mulaw", 8000)), data, n))
        for n in (80, 333, 8000)
    ]
    assert runs[0] == runs[1] == runs[2]


def test_split_api_matches_push(demo_pcm8k, tiny_model_dir):
    from voice.asr import AsrOptions, Transcriber

    t = Transcriber.load(
        tiny_model_dir,
        AsrOptions(compute_type="float32", no_speech_threshold=1.0, no_speech_certain=1.0),
    )
    data = encode_bytes(demo_pcm8k, "pcm16")
    pushed = [
        e
        for e in _events(CallSession("c", t, stream=StreamFormat("pcm16", 8000)), data, 640)
        if e.type == "transcript"
    ]

    session = CallSession("c", t, stream=StreamFormat("pcm16", 8000))
    segments = []
    for i in range(0, len(data), 640):
        segments += session.feed(data[i : i + 640])
    segments += session.feed_end()
    results = t.transcribe_batch(segments)  # what a batching server does
    batched = [e for s, r in zip(segments, results, strict=True) for e in session.complete(s, r)]
    assert [(e.start, e.end, e.text) for e in batched] == [(e.start, e.end, e.text) for e in pushed]


def test_latency_counts_from_the_arrival_of_the_utterance_end(demo_pcm8k, tiny_model_dir):
    from voice.asr import AsrOptions, Transcriber

    t = Transcriber.load(
        tiny_model_dir,
        AsrOptions(compute_type="float32", no_speech_threshold=1.0, no_speech_certain=1.0),
    )
    now = {"t": 0.0}
    session = CallSession("c", t, stream=StreamFormat("pcm16", 8000), clock=lambda: now["t"])
    data = encode_bytes(demo_pcm8k, "pcm16")
    transcripts = []
    for i in range(0, len(data), 320):  # 20 ms chunks; the clock follows the stream exactly
        now["t"] = (i + 320) / 2 / 8000
        transcripts += [e for e in session.push(data[i : i + 320]) if e.type == "transcript"]
    assert transcripts
    for e in transcripts:
        # the VAD closes 400 ms of silence after the speech (minus the 200 ms post-pad)
        assert 150 <= e.latency_ms <= 300, e


def test_answer_engine_events_follow_each_transcript(demo_pcm8k, tiny_model_dir):
    from voice.answer import AnswerEngine
    from voice.asr import AsrOptions, Transcriber

    t = Transcriber.load(
        tiny_model_dir,
        AsrOptions(compute_type="float32", no_speech_threshold=1.0, no_speech_certain=1.0),
    )
    engine = AnswerEngine.from_file("voice/answer/data/sample_kb.csv")
    session = CallSession("c", t, stream=StreamFormat("pcm16", 8000), answer=engine.session("c"))
    events = _events(session, encode_bytes(demo_pcm8k, "pcm16"), 640)
    kinds = [e.type for e in events if e.type != "segment"]
    transcripts = kinds.count("transcript")
    assert transcripts >= 2
    assert kinds.count("suggestion") == transcripts
    for i, kind in enumerate(kinds):
        if kind == "transcript":
            assert kinds[i + 1] == "suggestion"
    # one language scheme: BCP 47 tags on transcripts (Whisper's `zh`) and on suggestions
    wire = [e.to_dict() for e in events]
    assert {d["language"] for d in wire if d["type"] == "transcript"} == {"yue-Hant-HK"}
    assert {d["language"] for d in wire if d["type"] == "suggestion"} <= {"yue-Hant-HK", "en"}
    # random text from the tiny model answers nothing: two misses in a row ask for a human
    assert "handoff" in kinds
