"""Voice agitation on espeak-ng speech: one caller's calm lines, then the same voice raised."""

from __future__ import annotations

import math

import numpy as np
import pytest

from voice.audio import resample
from voice.errors import ConfigError
from voice.prosody import AgitationTracker, ProsodyOptions, measure


def calibrated(calm) -> AgitationTracker:
    """A tracker that has heard the caller's first three calm lines."""
    tracker = AgitationTracker()
    for _, samples in calm[:3]:
        tracker.push(samples)
    return tracker


def test_first_utterances_have_no_baseline_and_score_zero(caller_lines):
    calm, agitated = caller_lines
    tracker = AgitationTracker()
    first = tracker.push(agitated[0][1])  # even a raised voice: nothing to compare it with yet
    second = tracker.push(calm[0][1])
    assert (first.score, first.baseline_utterances) == (0.0, 0)
    assert (second.score, second.baseline_utterances) == (0.0, 1)
    assert first.pitch_hz and first.energy_db is not None  # measured, just not scored
    assert first.pitch_z == first.energy_z == 0.0


def test_raised_voice_scores_clearly_higher_than_a_further_calm_line(caller_lines):
    calm, agitated = caller_lines
    tracker = calibrated(calm)
    raised = tracker.push(agitated[0][1])  # same words as the first calm line
    again = tracker.push(calm[4][1])
    assert raised.baseline_utterances == 3
    assert raised.score >= 0.6, raised
    assert again.score <= 0.2, again
    assert raised.score - again.score >= 0.4
    assert raised.pitch_z > 2.0 and raised.energy_z > 1.0
    assert raised.pitch_hz > 1.3 * again.pitch_hz  # espeak-ng -p 80 against -p 50
    # the raised line did not become the norm; the calm one did
    assert again.baseline_utterances == 3 and tracker.baseline_utterances == 4


@pytest.mark.parametrize("index", [1, 2])
def test_every_raised_line_scores_high(caller_lines, index):
    calm, agitated = caller_lines
    assert calibrated(calm).push(agitated[index][1]).score >= 0.6


def test_calm_lines_stay_calm(caller_lines):
    calm, _ = caller_lines
    tracker = AgitationTracker()
    scores = [tracker.push(samples).score for _, samples in calm]
    assert scores == [0.0] * len(calm)


def test_a_naturally_raised_voice_is_its_own_norm(caller_lines):
    _, agitated = caller_lines
    tracker = AgitationTracker()
    scores = [tracker.push(samples).score for _, samples in agitated * 2]
    assert max(scores) <= 0.2, scores


@pytest.mark.parametrize(
    "clip",
    [
        np.zeros(16_000, np.float32),  # a second of silence
        np.zeros(0, np.float32),
        np.full(16_000, np.nan, np.float32),
        (0.01 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32),  # hiss
    ],
    ids=["silence", "empty", "nan", "noise"],
)
def test_unusable_clips_score_zero_and_leave_the_norm_alone(caller_lines, clip):
    calm, _ = caller_lines
    tracker = calibrated(calm)
    result = tracker.push(clip)
    assert result.score == 0.0 and result.pitch_hz is None and result.energy_db is None
    assert result.baseline_utterances == tracker.baseline_utterances == 3


def test_a_tenth_of_a_second_scores_zero(caller_lines):
    calm, agitated = caller_lines
    tracker = calibrated(calm)
    result = tracker.push(agitated[0][1][:1600])
    assert result.score == 0.0 and tracker.baseline_utterances == 3


def test_phone_rate_audio_measures_like_wideband(caller_lines):
    calm, _ = caller_lines
    samples = calm[1][1]
    wide = measure(samples, 16_000)
    phone = measure(resample(samples, 16_000, 8_000), 8_000)
    assert wide and phone
    assert abs(12 * math.log2(wide.pitch_hz / phone.pitch_hz)) < 1.0  # within a semitone
    assert abs(wide.energy_db - phone.energy_db) < 1.0


def test_options_are_checked():
    with pytest.raises(ConfigError):
        ProsodyOptions(calm_z=4.0, agitated_z=4.0)
    with pytest.raises(ConfigError):
        ProsodyOptions(min_baseline=0)
    with pytest.raises(ConfigError):
        ProsodyOptions(pitch_weight=1.5)
