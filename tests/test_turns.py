"""Turn-taking: candidates at short pauses, committed when the words end a turn, never a lost
sample; `ends_turn` on finished and unfinished Cantonese and English."""

import numpy as np
import pytest
from conftest import CLEAN_CALL_TEXTS

from voice.asr import Transcript
from voice.pipeline import CallSession
from voice.turns import ends_turn
from voice.types import Segment, SegmentEvent, TranscriptEvent
from voice.vad import Candidate, Segmenter, VadOptions

SR = 16000
FAST = VadOptions(candidate_ms=210, end_on_words=True)  # 7 webrtc frames of 30 ms
SLOW = VadOptions(candidate_ms=0)  # the VAD alone: every utterance waits for stop_ms


def _stream(audio, options, decide=lambda candidate: False, chunk=320):
    """Push `audio` in chunks; commit each candidate `decide` accepts, at once."""
    seg = Segmenter("c", options)
    out = []
    for i in range(0, audio.size, chunk):
        for item in seg.push(audio[i : i + chunk]):
            out.append(item)
            if isinstance(item, Candidate) and decide(item):
                out += seg.commit(item)
    return out + seg.flush()


def _tiles(out, total):
    position = 0
    for item in (o for o in out if not isinstance(o, Candidate)):
        assert round(item.start * SR) == position, item
        position = round(item.end * SR)
    assert position == total


@pytest.mark.parametrize(
    ("text", "finished"),
    [
        ("好啦，唔該晒", True),
        ("我想查下我張單。", True),
        ("點解我今個月嘅月費貴咗咁多㗎", True),
        ("你哋開唔開㗎？", True),
        ("唔該", True),
        ("喂？", False),  # "喂？喂？聽到我講嘢呀？": checking the line, more follows
        ("喂？喂？", False),
        ("Hello?", False),
        ("Can I change my plan?", True),
        ("OK thanks", True),
        ("我大概下晝十一點半去到", False),  # went on: "，仲開唔開？"
        ("我個account login唔到，", False),
        ("我嘅", False),
        ("band 係", False),
        ("I want to cancel because", False),
        ("My account is", False),
        ("", False),
        ("。", False),
    ],
)
def test_ends_turn(text, finished):
    assert ends_turn(text) is finished


def test_candidates_come_at_short_pauses_and_change_nothing_uncommitted(clean_call):
    audio, truth = clean_call
    plain = _stream(audio, SLOW)
    with_candidates = _stream(audio, FAST)
    candidates = [o for o in with_candidates if isinstance(o, Candidate)]
    assert len(candidates) >= len(truth)  # at least one per line: each line ends in a pause
    finals = [(type(o), o.start, o.end) for o in with_candidates if not isinstance(o, Candidate)]
    assert finals == [(type(o), o.start, o.end) for o in plain]
    # a candidate is what the segment would be: the same start, audio from the call
    for c in candidates:
        a, b = round(c.segment.start * SR), round(c.segment.end * SR)
        np.testing.assert_array_equal(c.segment.samples, audio[a:b])


def test_committing_ends_each_utterance_earlier_with_the_same_audio(clean_call):
    audio, truth = clean_call
    plain = [o for o in _stream(audio, SLOW) if isinstance(o, Segment)]
    out = _stream(audio, FAST, decide=lambda c: True)
    _tiles(out, audio.size)
    committed = [o for o in out if isinstance(o, Segment)]
    candidates = [o for o in out if isinstance(o, Candidate)]
    assert len(committed) >= len(plain)
    # every committed segment is exactly a candidate's audio, emitted right after it
    for seg in committed:
        twin = [c for c in candidates if c.segment.start == seg.start and c.segment.end == seg.end]
        assert twin, seg
        np.testing.assert_array_equal(twin[0].segment.samples, seg.samples)
    for seg, (_, end) in zip(committed[-len(truth) :], truth, strict=False):
        assert abs(seg.end - end) <= 0.3


def test_a_candidate_is_stale_once_the_caller_speaks_again(clean_call):
    audio, truth = clean_call
    seg = Segmenter("c", FAST)
    first = None
    for i in range(0, audio.size, 320):
        for item in seg.push(audio[i : i + 320]):
            if isinstance(item, Candidate) and first is None:
                first = item
        if first is not None and i / SR > truth[1][0] + 0.2:  # well into the next line
            break
    assert first is not None
    assert seg.commit(first) == []  # ended by the VAD or overtaken by new speech: no-op


class _Words:
    """A transcriber that reads the truth's text for whatever span it is given."""

    def __init__(self, lines):
        self.lines = lines
        self.calls = 0

    def transcribe(self, segment):
        self.calls += 1
        words = [t for (s, e, t) in self.lines if s < segment.end and e > segment.start]
        return Transcript(" ".join(words), asr_ms=1.0)


TEXTS = list(CLEAN_CALL_TEXTS)  # what clean_call's lines say, in order


def _spoken(clean_call):
    """(16-bit PCM of the call, its lines as (start, end, text))."""
    audio, truth = clean_call
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    return pcm, [(s, e, t) for (s, e), t in zip(truth, TEXTS, strict=True)]


def test_push_commits_finished_turns_early_and_decodes_each_once(clean_call):
    pcm, lines = _spoken(clean_call)
    texts = TEXTS

    def run(options):
        words = _Words(lines)
        session = CallSession("c", words, options)
        events, heard_at = [], []  # heard_at: stream seconds pushed when each transcript came
        for i in range(0, len(pcm), 640):  # 20 ms
            new = session.push(pcm[i : i + 640])
            events += new
            heard_at += [(i + 640) / 2 / SR for e in new if isinstance(e, TranscriptEvent)]
        events += session.flush()
        return events, heard_at, words.calls

    plain, plain_at, plain_calls = run(SLOW)
    fast, fast_at, fast_calls = run(FAST)
    text = [e.text for e in plain if isinstance(e, TranscriptEvent)]
    assert [e.text for e in fast if isinstance(e, TranscriptEvent)] == text == texts
    spans = [(e.start, e.end) for e in plain if isinstance(e, SegmentEvent)]
    assert [(e.start, e.end) for e in fast if isinstance(e, SegmentEvent)] == spans
    # the same utterances; a line whose words end the turn (呀, 晒) is out after 210 ms of
    # silence instead of 400, the others (ending 單, 嘅) wait for the whole pause
    assert len(fast_at) == len(plain_at) == len(texts)
    early = [round(p - f, 2) for f, p in zip(fast_at, plain_at, strict=True)]
    finished = [ends_turn(t) for t in texts]
    assert finished == [False, True, False, True]
    assert all((0.15 <= d <= 0.25) if f else d == 0 for d, f in zip(early, finished, strict=True))
    # every decode of a line is reused for its segment: a waiting line's candidate too
    assert fast_calls == plain_calls


def test_candidate_ms_is_checked(clean_call):
    from voice.errors import ConfigError

    with pytest.raises(ConfigError, match="candidate_ms"):
        VadOptions(candidate_ms=100).validate()  # below post_pad_ms: audio would differ
    # not below stop_ms: never offered, the VAD alone decides (a shorter --vad-stop-ms is fine)
    out = _stream(clean_call[0], VadOptions(candidate_ms=210, stop_ms=210).validate())
    assert not [o for o in out if isinstance(o, Candidate)]
    assert len([o for o in out if isinstance(o, Segment)]) == len(clean_call[1])


class _SlowWords(_Words):
    """Batched, with a decode time, as the server's scheduler calls it."""

    def transcribe_batch(self, segments):
        import time

        time.sleep(0.003)
        return [self.transcribe(s) for s in segments]


def _serve_call(clean_call, vad: VadOptions, partial_ms: int):
    """One call through a live hub (scheduler, store in memory), audio at 4x real time; returns
    (events sent to a subscriber, events stored, speculation counts)."""
    import asyncio

    from voice.server.calls import CallHub
    from voice.server.config import ServerConfig
    from voice.server.metrics import ServerMetrics
    from voice.server.serializers import Start
    from voice.server.store import Store

    pcm, lines = _spoken(clean_call)
    texts = TEXTS
    words = _SlowWords(lines)

    async def run():
        config = ServerConfig(insecure_no_auth=True, db_path=":memory:", partial_ms=partial_ms,
                              batch_wait_ms=0)  # fmt: skip
        hub = CallHub(config, Store(":memory:"), ServerMetrics(), vad, None, words)
        hub.scheduler.start()
        sub = hub.subscribe("t1")
        call = hub.open(Start("t1", encoding="pcm16", sample_rate=16000), "stream", None)
        for i in range(0, len(pcm), 640):
            call.feed(pcm[i : i + 640])
            await asyncio.sleep(0.005)  # 4x real time: a 190 ms pause tail is ~50 ms of wall time
        await call.finish()
        seen = []
        while not sub.queue.empty():
            seen.append(sub.queue.get_nowait())
        await hub.shutdown()
        counts = {k: hub.metrics.speculation.get(outcome=k)
                  for k in ("committed", "reused", "partial")}  # fmt: skip
        return seen, hub.store.events("t1"), counts

    return asyncio.run(run()), texts


def test_server_ends_finished_turns_at_the_short_pause_and_sends_partials(clean_call):
    (seen, stored, counts), texts = _serve_call(clean_call, FAST, partial_ms=1000)
    assert [e["text"] for e in seen if e["type"] == "transcript"] == texts
    assert counts["committed"] == 2  # the lines ending 呀 and 晒: 210 ms into their pause, not 400
    assert counts["reused"] == 2  # the others: the candidate decode served at the full pause
    partials = [e for e in seen if e["type"] == "partial"]
    assert partials, "a line over 1 s long gets a partial transcript while it is spoken"
    starts = {e["start"] for e in seen if e["type"] == "transcript"}
    assert all(p["start"] in starts and "seq" not in p for p in partials)
    assert not [e for e in stored if e["type"] == "partial"]  # sent, never stored
    # every partial of an utterance comes before its transcript
    for p in partials:
        first = next(i for i, e in enumerate(seen) if e["type"] == "transcript"
                     and e["start"] == p["start"])  # fmt: skip
        assert seen.index(p) < first


def test_server_without_turn_taking_waits_for_the_full_pause(clean_call):
    (seen, stored, counts), texts = _serve_call(clean_call, SLOW, partial_ms=0)
    assert [e["text"] for e in seen if e["type"] == "transcript"] == texts
    assert counts == {"committed": 0, "reused": 0, "partial": 0}
    assert not [e for e in seen if e["type"] == "partial"]


def test_a_call_subscriber_gets_partials_after_the_replay():
    """Per-call streams skip live events already replayed (by seq); a partial has none."""
    import asyncio

    from voice.server.calls import END, Subscription
    from voice.server.routes.events import stream_events

    async def run():
        sub = Subscription(16, "c")
        for data in (
            {"type": "transcript", "seq": 1},  # stored and replayed already
            {"type": "partial", "start": 4.0, "end": 5.0, "text": "點解"},
            {"type": "transcript", "seq": 2},
            END,
        ):
            sub.offer(data)
        return [d async for d in stream_events(sub, [{"type": "transcript", "seq": 1}])]

    got = asyncio.run(run())
    assert [(d["type"], d.get("seq")) for d in got] == [
        ("transcript", 1),
        ("partial", None),
        ("transcript", 2),
    ]


def test_by_default_every_line_waits_for_the_pause_but_its_decode_starts_early(clean_call):
    (seen, _, counts), texts = _serve_call(clean_call, VadOptions(), partial_ms=0)
    assert [e["text"] for e in seen if e["type"] == "transcript"] == texts
    assert counts["committed"] == 0  # no early ends: the utterances are the VAD's alone
    assert counts["reused"] == len(texts)  # each decoded from its 210 ms pause, used at 400 ms
