"""voice.audio: G.711 bit-exactness, stream decoding, and clear errors on bad files."""

import logging
import subprocess
import warnings

import numpy as np
import pytest
import soundfile as sf

from voice.audio import (
    AudioError,
    StreamDecoder,
    alaw_decode,
    alaw_encode,
    encode_bytes,
    mulaw_decode,
    mulaw_encode,
    read_audio,
)

ALL_INT16 = np.arange(-32768, 32768, dtype=np.int16)
ALL_CODES = bytes(range(256))

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import audioop
    except ImportError:  # Python 3.13 removed it; sox checks below still run
        audioop = None


@pytest.mark.skipif(audioop is None, reason="audioop removed in this Python")
def test_g711_matches_audioop_on_every_value():
    assert mulaw_encode(ALL_INT16) == audioop.lin2ulaw(ALL_INT16.tobytes(), 2)
    assert alaw_encode(ALL_INT16) == audioop.lin2alaw(ALL_INT16.tobytes(), 2)
    assert mulaw_decode(ALL_CODES).tobytes() == audioop.ulaw2lin(ALL_CODES, 2)
    assert alaw_decode(ALL_CODES).tobytes() == audioop.alaw2lin(ALL_CODES, 2)


@pytest.mark.parametrize(
    "sox_name, decode, encode",
    [("u-law", mulaw_decode, mulaw_encode), ("a-law", alaw_decode, alaw_encode)],
)
def test_g711_decoding_matches_sox_on_every_code(tmp_path, sox_name, decode, encode):
    raw = tmp_path / "codes.raw"
    raw.write_bytes(ALL_CODES)
    out = subprocess.run(
        ["sox", "-t", "raw", "-r", "8000", "-e", sox_name, "-b", "8", "-c", "1", str(raw),
         "-t", "raw", "-e", "signed", "-b", "16", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert np.array_equal(np.frombuffer(out, "<i2"), decode(ALL_CODES))
    # Round trip: every code decodes and re-encodes to itself (except A-law/mu-law's two zeros).
    again = np.frombuffer(encode(decode(ALL_CODES)), np.uint8)
    assert (again == np.arange(256)).sum() >= 254


def test_stream_decoder_output_does_not_depend_on_chunking():
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(8000) * 3000).astype(np.int16)
    data = encode_bytes(pcm, "pcm16")

    def run(chunk):
        dec = StreamDecoder("pcm16", 8000)
        parts = [dec.push(data[i : i + chunk]) for i in range(0, len(data), chunk)]
        return np.concatenate(parts + [dec.flush()])

    whole, odd = run(len(data)), run(33)  # 33 bytes: splits samples across pushes
    assert whole.size == odd.size == 16000
    np.testing.assert_allclose(whole, odd, atol=1e-6)


def test_stream_decoder_rejects_unsupported_formats():
    with pytest.raises(AudioError, match="unknown encoding"):
        StreamDecoder("opus", 8000)
    with pytest.raises(AudioError, match="8000 or 16000"):
        StreamDecoder("mulaw", 44100)


def test_read_audio_resamples_mulaw_wav_to_16k(tmp_path):
    t = np.arange(8000) / 8000
    sf.write(tmp_path / "tone.wav", 0.5 * np.sin(2 * np.pi * 440 * t), 8000, subtype="ULAW")
    x = read_audio(tmp_path / "tone.wav")
    assert x.dtype == np.float32 and x.size == 16000
    assert 0.3 < np.abs(x).max() < 0.6


def test_corrupt_file_error_names_the_file(tmp_path):
    bad = tmp_path / "corrupt.wav"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk" * 10)
    with pytest.raises(AudioError, match="corrupt.wav"):
        read_audio(bad)


def test_empty_file_is_rejected(tmp_path):
    sf.write(tmp_path / "empty.wav", np.zeros(0), 8000)
    with pytest.raises(AudioError, match="empty.wav: the file holds no audio"):
        read_audio(tmp_path / "empty.wav")


def test_implausible_sample_rate_is_rejected(tmp_path):
    sf.write(tmp_path / "slow.wav", np.zeros(1000), 1000)
    with pytest.raises(AudioError, match="implausible sample rate 1000"):
        read_audio(tmp_path / "slow.wav")


def test_stereo_is_mixed_down_with_a_warning_or_channel_picked(tmp_path, caplog):
    stereo = np.stack([np.full(1600, 0.5), np.zeros(1600)], axis=1)
    sf.write(tmp_path / "call.wav", stereo, 16000)
    with caplog.at_level(logging.WARNING, logger="voice"):
        mixed = read_audio(tmp_path / "call.wav")
    assert "mixed down" in caplog.text
    assert np.allclose(mixed, 0.25, atol=1e-3)
    assert np.allclose(read_audio(tmp_path / "call.wav", channel=0), 0.5, atol=1e-3)
    with pytest.raises(AudioError, match="channel 2 does not exist"):
        read_audio(tmp_path / "call.wav", channel=2)


def test_offset_past_end_is_rejected(tmp_path):
    sf.write(tmp_path / "short.wav", np.zeros(8000), 8000)
    with pytest.raises(AudioError, match="past the end"):
        read_audio(tmp_path / "short.wav", offset=2.0)
