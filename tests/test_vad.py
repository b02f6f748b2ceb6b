"""voice.vad: finds the utterances of a call, loses no audio, and ignores how audio is chunked."""

import numpy as np
import pytest

from voice.types import Gap, Segment
from voice.vad import Candidate, Segmenter, VadOptions, segment_audio

SR = 16000


def _check_coverage(out, total):
    """Segments and gaps tile [0, total) in order, and segments hold exactly their samples."""
    position = 0
    for item in out:
        assert round(item.start * SR) == position, item
        position = round(item.end * SR)
        if isinstance(item, Segment):
            assert item.samples.size == round(item.end * SR) - round(item.start * SR)
    assert position == total


def _stream(audio, chunk, options=VadOptions()):
    """Segments and Gaps (Candidates, never committed here, are tests/test_turns.py's)."""
    seg = Segmenter("c", options)
    out = []
    for i in range(0, audio.size, chunk):
        out += seg.push(audio[i : i + chunk])
    return [o for o in out + seg.flush() if not isinstance(o, Candidate)]


@pytest.mark.parametrize("backend", ["webrtc", "silero"])
def test_finds_each_utterance_within_300ms(clean_call, backend):
    audio, truth = clean_call
    out = segment_audio(audio, "c", VadOptions(backend=backend))
    segments = [s for s in out if isinstance(s, Segment)]
    assert len(segments) == len(truth)
    for seg, (start, end) in zip(segments, truth, strict=True):
        assert abs(seg.start - start) <= 0.3, (backend, seg.start, start)
        assert abs(seg.end - end) <= 0.3, (backend, seg.end, end)
    _check_coverage(out, audio.size)


@pytest.mark.parametrize("chunk", [160, 7, 16000, 1234])  # 10 ms, odd, 1 s, arbitrary
def test_chunk_size_does_not_change_segments(clean_call, chunk):
    audio, _ = clean_call
    reference = [(type(o), o.start, o.end) for o in _stream(audio, 480)]
    assert [(type(o), o.start, o.end) for o in _stream(audio, chunk)] == reference


def test_no_samples_are_lost_and_samples_are_the_call_audio(clean_call):
    audio, _ = clean_call
    out = _stream(audio, 321)
    _check_coverage(out, audio.size)
    for seg in (o for o in out if isinstance(o, Segment)):
        a, b = round(seg.start * SR), round(seg.end * SR)
        np.testing.assert_array_equal(seg.samples, audio[a:b])


def test_silence_gives_only_gaps():
    out = segment_audio(np.zeros(SR * 5, np.float32))
    assert out and all(isinstance(o, Gap) for o in out)
    _check_coverage(out, SR * 5)


def test_long_speech_is_split_at_a_quiet_point(clean_call):
    audio, truth = clean_call
    # Utterances joined by 100 ms pauses (shorter than stop_ms): one long stretch of speech.
    pieces = [audio[round(s * SR) : round(e * SR)] for s, e in truth] * 3
    joined = np.concatenate([np.concatenate([p, np.zeros(1600, np.float32)]) for p in pieces])
    out = segment_audio(joined, "c", VadOptions(max_segment_s=6.0))
    segments = [o for o in out if isinstance(o, Segment)]
    assert len(segments) >= 3
    assert all(s.duration <= 6.0 + 1e-6 for s in segments)
    # the cut lands in a pause: the samples at each inner boundary are quiet
    for s in segments[:-1]:
        edge = s.samples[-160:]
        assert np.sqrt(np.mean(edge**2)) < 0.01
    _check_coverage(out, joined.size)


def test_flush_mid_utterance_returns_the_partial_segment(clean_call):
    audio, truth = clean_call
    cut = round((truth[0][0] + 1.0) * SR)  # hang up one second into the first utterance
    out = _stream(audio[:cut], 320)
    segments = [o for o in out if isinstance(o, Segment)]
    assert len(segments) == 1 and segments[0].end == pytest.approx(cut / SR)


def test_bad_options_are_rejected():
    from voice.errors import ConfigError

    with pytest.raises(ConfigError):
        VadOptions(backend="energy").validate()
    with pytest.raises(ConfigError):
        VadOptions(post_pad_ms=900, stop_ms=400).validate()
