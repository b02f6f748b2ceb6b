"""Audio in and out: G.711 and PCM codecs, resampling to 16 kHz, and reading audio files."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from voice.errors import VoiceError
from voice.types import SAMPLE_RATE

log = logging.getLogger(__name__)

ENCODINGS = ("pcm16", "mulaw", "alaw")  # what a live stream may carry
PHONE_RATE = 8_000  # G.711 telephony sample rate
MIN_FILE_RATE = 8_000  # below this a file is not speech audio we can use
MAX_FILE_RATE = 192_000

# G.711 constants, as in the reference implementation (Sun Microsystems' g711.c, used by audioop)
_MULAW_BIAS = 0x84  # added to the magnitude before finding the segment
_MULAW_CLIP = 8159  # largest 14-bit magnitude mu-law represents
_MULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF])
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


class AudioError(VoiceError, ValueError):
    """Audio that cannot be used: unreadable, empty, or implausible. The message names the file."""


# --- G.711 ------------------------------------------------------------------------------------


def _mulaw_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = ((u & 0x0F) << 3) + _MULAW_BIAS
    t = t << ((u & 0x70) >> 4)
    return np.where(u & 0x80, _MULAW_BIAS - t, t - _MULAW_BIAS).astype(np.int16)


def _alaw_decode_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(np.int16)


_MULAW_TO_PCM = _mulaw_decode_table()
_ALAW_TO_PCM = _alaw_decode_table()


def mulaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 mu-law bytes -> int16 samples (bit-exact with audioop.ulaw2lin)."""
    return _MULAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]


def alaw_decode(data: bytes | np.ndarray) -> np.ndarray:
    """G.711 A-law bytes -> int16 samples (bit-exact with audioop.alaw2lin)."""
    return _ALAW_TO_PCM[np.frombuffer(data, dtype=np.uint8)]


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> G.711 mu-law bytes (bit-exact with audioop.lin2ulaw)."""
    val = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 2  # 14-bit
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), _MULAW_CLIP) + (_MULAW_BIAS >> 2)
    seg = np.searchsorted(_MULAW_SEG_END, mag, side="left")
    uval = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    out = np.where(seg >= 8, 0x7F ^ mask, uval ^ mask)
    return out.astype(np.uint8).tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> G.711 A-law bytes (bit-exact with audioop.lin2alaw)."""
    val = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 3  # 13-bit
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, seg)
    aval = (seg << 4) | ((mag >> shift) & 0x0F)
    out = np.where(seg >= 8, 0x7F ^ mask, aval ^ mask)
    return out.astype(np.uint8).tobytes()


# --- PCM and sample formats ---------------------------------------------------------------------


def pcm16_to_float(pcm: np.ndarray) -> np.ndarray:
    return (np.asarray(pcm, dtype=np.int16).astype(np.float32)) / 32768.0


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    return (np.clip(samples, -1.0, 1.0 - 1.0 / 32768) * 32768.0).round().astype(np.int16)


def decode_bytes(data: bytes, encoding: str) -> np.ndarray:
    """Raw stream bytes in `encoding` -> int16 samples. pcm16 is little-endian."""
    if encoding == "mulaw":
        return mulaw_decode(data)
    if encoding == "alaw":
        return alaw_decode(data)
    if encoding == "pcm16":
        if len(data) % 2:
            raise AudioError(f"pcm16 data has an odd number of bytes ({len(data)})")
        return np.frombuffer(data, dtype="<i2").astype(np.int16)
    raise AudioError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


def encode_bytes(pcm: np.ndarray, encoding: str) -> bytes:
    """int16 samples -> raw stream bytes in `encoding`."""
    if encoding == "mulaw":
        return mulaw_encode(pcm)
    if encoding == "alaw":
        return alaw_encode(pcm)
    if encoding == "pcm16":
        return np.asarray(pcm, dtype="<i2").tobytes()
    raise AudioError(f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}")


# --- Resampling ---------------------------------------------------------------------------------

UPSAMPLE_TAPS = 97  # odd, so the filter delay is a whole number of output samples (48 = 3 ms)
UPSAMPLE_CUTOFF_HZ = 3_700.0  # flat through the 3.4 kHz phone band, images above 4 kHz removed


def _upsample_filter() -> np.ndarray:
    n = np.arange(UPSAMPLE_TAPS) - (UPSAMPLE_TAPS - 1) / 2
    fc = UPSAMPLE_CUTOFF_HZ / SAMPLE_RATE
    h = 2 * fc * np.sinc(2 * fc * n) * np.kaiser(UPSAMPLE_TAPS, 8.0)
    return (2 * h / h.sum()).astype(np.float64)  # gain 2 restores the level after zero-stuffing


_UPSAMPLE_H = _upsample_filter()


class Upsampler2x:
    """8 kHz -> 16 kHz for live streams: a windowed-sinc FIR on the zero-stuffed signal.

    Stateful, so output does not depend on chunking; 3 ms of delay (soxr's streaming resampler
    releases audio in ~100 ms blocks, which would add to every live transcript's latency).
    Output is aligned with the input and `flush()` makes the total exactly twice the input.
    """

    delay = (UPSAMPLE_TAPS - 1) // 2  # output samples

    def __init__(self) -> None:
        self._history = np.zeros(UPSAMPLE_TAPS - 1)
        self._to_skip = self.delay

    def push(self, samples: np.ndarray) -> np.ndarray:
        if not len(samples):  # np.convolve would swap its operands and invent two samples
            return np.zeros(0, dtype=np.float32)
        stuffed = np.zeros(2 * len(samples))
        stuffed[::2] = samples
        buffer = np.concatenate([self._history, stuffed])
        self._history = buffer[-(UPSAMPLE_TAPS - 1) :]
        out = np.convolve(buffer, _UPSAMPLE_H, mode="valid")
        skip = min(self._to_skip, out.size)
        self._to_skip -= skip
        return out[skip:].astype(np.float32)

    def flush(self) -> np.ndarray:
        return self.push(np.zeros(self.delay // 2))


def resample(samples: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Whole-signal resampling to `target` Hz, float32. 8 -> 16 kHz uses the streaming filter,
    so a file read from disk and the same audio streamed live are identical sample for sample."""
    samples = np.asarray(samples, dtype=np.float32)
    if rate == target or samples.size == 0:
        return samples
    resampler = Resampler(rate, target)
    return np.concatenate([resampler.push(samples), resampler.flush()])


class Resampler:
    """Mono float32 from `rate` to `target` Hz in pieces; the output does not depend on how the
    input was cut (8 -> 16 kHz: `Upsampler2x`; other rates: soxr's stream, equal to its whole-
    signal resampling)."""

    def __init__(self, rate: int, target: int = SAMPLE_RATE):
        self._up = Upsampler2x() if (rate, target) == (PHONE_RATE, SAMPLE_RATE) else None
        self._soxr = None
        if rate != target and self._up is None:
            import soxr

            self._soxr = soxr.ResampleStream(rate, target, 1, dtype="float32", quality="HQ")

    def push(self, samples: np.ndarray, last: bool = False) -> np.ndarray:
        samples = np.asarray(samples, dtype=np.float32)
        if self._up is not None:
            return self._up.push(samples)
        if self._soxr is not None:
            return self._soxr.resample_chunk(samples, last=last).astype(np.float32)
        return samples

    def flush(self) -> np.ndarray:
        if self._up is not None:
            return self._up.flush()
        return self.push(np.zeros(0, np.float32), last=True)


class StreamDecoder:
    """Turns a live byte stream (any supported encoding and rate) into 16 kHz float32 chunks.

    Keeps the resampler's filter state and any odd trailing byte between pushes, so the output
    does not depend on how the stream was chunked.
    """

    def __init__(self, encoding: str = "mulaw", sample_rate: int = PHONE_RATE):
        if encoding not in ENCODINGS:
            raise AudioError(
                f"unknown encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
            )
        if sample_rate not in (PHONE_RATE, SAMPLE_RATE):
            raise AudioError(
                f"unsupported stream sample rate {sample_rate}; expected 8000 or 16000"
            )
        self.encoding = encoding
        self.sample_rate = sample_rate
        self._carry = b""
        self._upsampler = Upsampler2x() if sample_rate == PHONE_RATE else None

    def push(self, data: bytes) -> np.ndarray:
        if self.encoding == "pcm16":
            data = self._carry + data
            cut = len(data) - len(data) % 2
            data, self._carry = data[:cut], data[cut:]
        samples = pcm16_to_float(decode_bytes(data, self.encoding))
        return self._upsampler.push(samples) if self._upsampler else samples

    def flush(self) -> np.ndarray:
        return self._upsampler.flush() if self._upsampler else np.zeros(0, dtype=np.float32)


# --- Files --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AudioInfo:
    """What a file held before conversion to 16 kHz mono."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe(path: str | Path) -> AudioInfo:
    """Read a file's header; raises AudioError naming the file when libsndfile cannot."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except Exception as exc:  # soundfile raises several types (RuntimeError, LibsndfileError)
        raise AudioError(f"{path}: cannot read audio ({_reason(exc)})") from exc
    return AudioInfo(str(path), info.samplerate, info.channels, info.frames, info.subtype)


def read_audio(
    path: str | Path,
    offset: float = 0.0,
    duration: float | None = None,
    channel: int | None = None,
    target_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Read any file libsndfile reads as mono float32 at `target_rate`.

    `offset`/`duration` select a span in seconds. Multichannel audio is mixed down with a
    warning unless `channel` picks one (0-based; the customer's side of a stereo call recording).
    """
    import soundfile as sf

    info = _readable(path)
    start = int(round(offset * info.sample_rate))
    if start >= info.frames:
        raise AudioError(f"{path}: offset {offset:.2f}s is past the end ({info.duration:.2f}s)")
    stop = (
        info.frames
        if duration is None
        else min(info.frames, start + int(round(duration * info.sample_rate)))
    )
    try:
        data, rate = sf.read(str(path), start=start, stop=stop, dtype="float32", always_2d=True)
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from exc
    if data.shape[0] == 0:
        raise AudioError(f"{path}: the file holds no audio")
    if channel is not None:
        if not 0 <= channel < data.shape[1]:
            raise AudioError(
                f"{path}: has {data.shape[1]} channel(s); channel {channel} does not exist"
            )
        mono = data[:, channel]
    else:
        if data.shape[1] > 1:
            log.warning(
                "%s: %d channels mixed down to mono (pick one with --channel)", path, data.shape[1]
            )
        mono = data.mean(axis=1)
    return resample(mono, rate, target_rate)


def read_audio_blocks(
    path: str | Path, block_seconds: float = 30.0, target_rate: int = SAMPLE_RATE
) -> Iterator[np.ndarray]:
    """`read_audio(path)` in pieces of about `block_seconds` (mono float32 at `target_rate`), so a
    long file never sits decoded in memory; joined, the pieces equal `read_audio(path)`."""
    import soundfile as sf

    info = _readable(path)
    if info.channels > 1:
        log.warning("%s: %d channels mixed down to mono", path, info.channels)
    resampler = Resampler(info.sample_rate, target_rate)
    frames = max(1, int(block_seconds * info.sample_rate))
    try:
        with sf.SoundFile(str(path)) as f:
            while (data := f.read(frames, dtype="float32", always_2d=True)).shape[0]:
                yield resampler.push(data.mean(axis=1))
    except Exception as exc:
        raise AudioError(f"{path}: cannot decode audio ({_reason(exc)})") from exc
    yield resampler.flush()


def _readable(path: str | Path) -> AudioInfo:
    """The header of a file `read_audio` can use, or AudioError saying why not."""
    info = probe(path)
    if not MIN_FILE_RATE <= info.sample_rate <= MAX_FILE_RATE:
        raise AudioError(
            f"{path}: implausible sample rate {info.sample_rate} Hz "
            f"(expected {MIN_FILE_RATE}-{MAX_FILE_RATE}); is the header right?"
        )
    if info.frames == 0:
        raise AudioError(f"{path}: the file holds no audio")
    return info


def write_wav(
    path: str | Path, samples: np.ndarray, sample_rate: int, subtype: str = "PCM_16"
) -> None:
    """Write mono audio atomically (temp file, then rename); subtype ULAW gives G.711 mu-law WAV."""
    import soundfile as sf

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    sf.write(
        str(tmp), np.asarray(samples, dtype=np.float32), sample_rate, subtype=subtype, format="WAV"
    )
    tmp.replace(path)


def _reason(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__


__all__ = [
    "ENCODINGS",
    "PHONE_RATE",
    "AudioError",
    "AudioInfo",
    "Resampler",
    "StreamDecoder",
    "Upsampler2x",
    "alaw_decode",
    "alaw_encode",
    "decode_bytes",
    "encode_bytes",
    "float_to_pcm16",
    "mulaw_decode",
    "mulaw_encode",
    "pcm16_to_float",
    "probe",
    "read_audio",
    "read_audio_blocks",
    "resample",
    "write_wav",
]
