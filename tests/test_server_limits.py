"""Limits of `voice serve` (issue 13, items 3, 4 and 10): upload bombs and concurrent uploads,
silent and over-long calls, empty frames, malformed messages from clients not yet authenticated.

End-to-end tests run a real server subprocess (`_serve` from test_server.py) with small limits;
its log is the subprocess's whole stdout and stderr, so a traceback printed anywhere shows up.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
import websockets
from test_server import AGENT1, SUPERVISOR, TOKENS, _bearer, _serve, _stored
from websockets.asyncio.client import connect

from voice.audio import Upsampler2x, read_audio, read_audio_blocks
from voice.pipeline import CallSession, StreamFormat
from voice.server.config import ServerConfig
from voice.server.limits import StreamLimits
from voice.server.serializers import audiosocket

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]  # live servers and the tiny model

IDLE_S = 1.0  # --idle-timeout of the test server
MAX_CALL_S = 3.0  # --max-call-seconds
MAX_UPLOAD_S = 60.0  # --max-upload-seconds
UPLOAD_TIMEOUT_S = 5.0  # --upload-timeout
HANGUP = audiosocket.frame(audiosocket.KIND_HANGUP)
PCM_100MS = b"\0\0" * 800  # 100 ms of 8 kHz pcm16 silence: audio, though quiet


@pytest.fixture(scope="module")
def limited(tmp_path_factory, tiny_model_dir):
    """`voice serve` with the tiny model, auth, AudioSocket, and small limits."""
    tmp = tmp_path_factory.mktemp("limited")
    (tmp / "auth.json").write_text(json.dumps({"tokens": TOKENS}))
    args = ["--model", str(tiny_model_dir), "--auth", str(tmp / "auth.json"),
            "--idle-timeout", str(IDLE_S), "--max-call-seconds", str(MAX_CALL_S),
            "--max-upload-seconds", str(MAX_UPLOAD_S), "--max-uploads", "1",
            "--upload-timeout", str(UPLOAD_TIMEOUT_S)]  # fmt: skip
    with _serve(tmp, *args) as running:
        yield running


@pytest.fixture(scope="module")
def silence_8h(tmp_path_factory) -> Path:
    """8 hours of 8 kHz silence as FLAC: 0.7 MB on disk, 0.9 GB once decoded to float32."""
    path = tmp_path_factory.mktemp("bomb") / "silence_8h.flac"
    ten_minutes = np.zeros(8000 * 600, np.int16)
    with sf.SoundFile(path, "w", 8000, 1, "PCM_16", format="FLAC") as f:
        for _ in range(8 * 6):
            f.write(ten_minutes)
    return path


def _peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc/<pid>/status")


def _without_length(flac: Path, out: Path) -> Path:
    """A copy of a FLAC whose header says 'length unknown', as a streaming encoder writes it."""
    data = bytearray(flac.read_bytes())
    assert data[:4] == b"fLaC"
    data[21] &= 0xF0  # STREAMINFO's 36-bit total-samples field: low 4 bits of byte 21, bytes 22-25
    data[22:26] = bytes(4)
    out.write_bytes(data)
    return out


def _log_since(server, offset: int) -> str:
    return server.log.read_text()[offset:]


# --- item 3: uploads ----------------------------------------------------------------------------


def test_upload_bomb_is_refused_from_its_header_and_memory_stays_flat(
    limited, silence_8h, tmp_path
):
    url, auth = f"{limited.http}/v1/transcribe", _bearer(AGENT1)
    peak_before = _peak_rss_mb(limited.proc.pid)
    began = time.monotonic()
    r = httpx.post(url, content=silence_8h.read_bytes(), headers=auth, timeout=15)
    took = time.monotonic() - began
    assert r.status_code == 413, r.text
    assert "8.0 h" in r.json()["error"] and "max_upload_seconds" in r.json()["error"]
    assert took < 5  # answered from the header, nothing decoded
    # a header that does not say the length: stopped while decoding, once past the limit
    unknown = _without_length(silence_8h, tmp_path / "unknown_length.flac")
    assert sf.info(str(unknown)).frames == 2**63 - 1  # libsndfile's "unknown"
    r = httpx.post(url, content=unknown.read_bytes(), headers=auth, timeout=60)
    assert r.status_code == 413 and "longer than" in r.json()["error"], r.text
    # the 8 h would be 0.9 GB of float32 at 8 kHz and 1.8 GB more at 16 kHz
    assert _peak_rss_mb(limited.proc.pid) - peak_before < 100


def test_uploads_over_the_cap_get_503_with_retry_after(limited, demo_call):
    """--max-uploads 1: while one upload is sending its body, another is refused at once."""
    url, auth = f"{limited.http}/v1/transcribe", _bearer(AGENT1)
    wav = demo_call.path.read_bytes()

    async def run():
        release = asyncio.Event()

        async def slow_body(sent: asyncio.Event):
            yield wav[:4096]
            sent.set()
            await release.wait()
            yield wav[4096:]

        async with httpx.AsyncClient(timeout=120) as client:

            async def upload_in_progress() -> asyncio.Task:
                sent = asyncio.Event()
                task = asyncio.create_task(client.post(url, content=slow_body(sent), headers=auth))
                await sent.wait()
                return task

            first = await upload_in_progress()
            for _ in range(50):  # until the server has taken the first upload's slot
                await asyncio.sleep(0.2)
                busy = await client.post(url, content=b"not audio", headers=auth)
                if busy.status_code == 503:
                    break
                assert busy.status_code == 400  # the slot was free: a quick refusal of the body
                if first.done():  # the probe held the slot when the first one came: start again
                    first = await upload_in_progress()
            release.set()
            done = await first
            again = await client.post(url, content=wav, headers=auth)
        return busy, done, again

    busy, done, again = asyncio.run(run())
    assert busy.status_code == 503 and busy.headers["Retry-After"].isdigit(), busy.text
    assert "try again" in busy.json()["error"]
    for r in (done, again):  # the slot is given back
        assert r.status_code == 200, r.text
        assert r.json()["events"][-1]["type"] == "end"


def test_upload_whose_body_stalls_gets_408_and_frees_its_slot(limited, demo_call):
    """A client that sends a few bytes and then nothing cannot hold the only upload slot."""
    url, auth = f"{limited.http}/v1/transcribe", _bearer(AGENT1)
    wav = demo_call.path.read_bytes()
    host, port = limited.http.removeprefix("http://").split(":")
    head = (f"POST /v1/transcribe HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {auth['Authorization']}\r\nContent-Length: {len(wav)}\r\n\r\n")  # fmt: skip

    async def stall() -> tuple[bytes, float]:
        reader, writer = await asyncio.open_connection(host, int(port))
        began = time.monotonic()
        writer.write(head.encode() + wav[:4096])  # then nothing more, connection kept open
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), UPLOAD_TIMEOUT_S + 30)  # until closed
        writer.close()
        return answer, time.monotonic() - began

    answer, took = asyncio.run(stall())
    head_back, _, body = answer.partition(b"\r\n\r\n")
    assert head_back.startswith(b"HTTP/1.1 408"), answer[:200]
    assert b"did not arrive within 5 s" in body
    assert took >= UPLOAD_TIMEOUT_S
    after = httpx.post(url, content=wav, headers=auth, timeout=120)  # the slot was given back
    assert after.status_code == 200 and after.json()["events"][-1]["type"] == "end", after.text


@pytest.mark.parametrize("rate, channels", [(8000, 1), (16000, 1), (44100, 2)])
def test_audio_read_in_blocks_equals_audio_read_whole(tmp_path, rate, channels):
    rng = np.random.default_rng(rate)
    samples = (rng.standard_normal((int(rate * 2.3), channels)) * 0.1).astype(np.float32)
    path = tmp_path / "x.flac"
    sf.write(path, samples, rate, subtype="PCM_16")
    blocks = list(read_audio_blocks(path, block_seconds=0.37))
    assert len(blocks) > 6
    np.testing.assert_array_equal(np.concatenate(blocks), read_audio(path))


# --- item 4: idle and over-long calls, empty frames ---------------------------------------------


async def _stream_until_closed(server, feed) -> tuple[list[dict], int | None, str, float]:
    """Start a raw-stream call, run `feed(ws)` until the server closes: (messages, close code,
    reason, seconds from start to close)."""
    call_id = "limit-" + uuid.uuid4().hex[:8]
    got: list[dict] = []
    async with connect(f"{server.ws}/stream", additional_headers=_bearer(AGENT1)) as ws:
        await ws.send(json.dumps({"type": "start", "call_id": call_id, "encoding": "pcm16",
                                  "sample_rate": 8000}))  # fmt: skip
        began = time.monotonic()
        feeding = asyncio.create_task(feed(ws))
        with contextlib.suppress(websockets.ConnectionClosed):
            async for message in ws:
                got.append(json.loads(message))
        took = time.monotonic() - began
        feeding.cancel()
        return got, ws.close_code, ws.close_reason, took


async def _audiosocket_until_hangup(server, audio: bytes) -> tuple[bytes, str, float]:
    """An AudioSocket call sending an audio frame of `audio` every 100 ms until the server hangs
    up: (all the server sent, call id, seconds from the UUID frame to the close)."""
    call = uuid.uuid4()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.as_port)
    writer.write(audiosocket.frame(audiosocket.KIND_UUID, call.bytes))
    began = time.monotonic()

    async def send(frame: bytes) -> None:
        writer.write(frame)
        await writer.drain()

    feeding = asyncio.create_task(_forever(send, audiosocket.frame(audiosocket.KIND_AUDIO, audio)))
    reply = await asyncio.wait_for(reader.read(), 20)  # until the server closes
    took = time.monotonic() - began
    feeding.cancel()
    writer.close()
    return reply, str(call), took


async def _forever(send, message, every: float = 0.1) -> None:
    with contextlib.suppress(Exception):  # the server closes while we are still sending
        while True:
            await send(message)
            await asyncio.sleep(every)


def test_silent_calls_are_ended_and_empty_frames_do_not_keep_them_alive(limited):
    async def twilio_empty_media() -> tuple[int | None, str, float]:
        sid = "CA" + uuid.uuid4().hex
        async with connect(f"{limited.ws}/twilio", additional_headers=_bearer(AGENT1)) as tw:
            await tw.send(json.dumps({"event": "start", "start": {"callSid": sid}}))
            began = time.monotonic()
            empty = json.dumps({"event": "media", "media": {"track": "inbound", "payload": ""}})
            feeding = asyncio.create_task(_forever(tw.send, empty))
            with contextlib.suppress(websockets.ConnectionClosed):
                await asyncio.wait_for(tw.recv(), 20)
            feeding.cancel()
            return tw.close_code, sid, time.monotonic() - began

    async def run():
        async def audio_then_empty(ws) -> None:
            await ws.send(PCM_100MS)
            await _forever(ws.send, b"")

        return await asyncio.gather(
            _stream_until_closed(limited, audio_then_empty),
            twilio_empty_media(),
            _audiosocket_until_hangup(limited, b""),
        )

    (got, code, reason, took), (tw_code, sid, tw_took), (reply, as_call, as_took) = asyncio.run(
        run()
    )
    assert code == 4408 and "no audio" in reason, (code, reason)
    assert [m["code"] for m in got if m["type"] == "error"] == ["idle_timeout"]
    assert got[-1]["type"] == "end"  # what was received is still transcribed and sent first
    assert tw_code == 4408
    assert reply == HANGUP  # AudioSocket: the server hangs up
    for seconds in (took, tw_took, as_took):
        assert IDLE_S <= seconds < IDLE_S + 4
    assert _stored(limited, got[0]["call_id"], SUPERVISOR)["status"] == "idle_timeout"
    assert _stored(limited, sid, SUPERVISOR)["status"] == "idle_timeout"
    assert _stored(limited, as_call, SUPERVISOR)["status"] == "idle_timeout"


def test_calls_are_ended_at_the_maximum_length_while_audio_flows(limited):
    async def run():
        return await asyncio.gather(
            _stream_until_closed(limited, lambda ws: _forever(ws.send, PCM_100MS)),
            _audiosocket_until_hangup(limited, PCM_100MS),
        )

    (got, code, reason, took), (reply, as_call, as_took) = asyncio.run(run())
    assert code == 4413 and "limit" in reason, (code, reason)
    assert got[-1]["type"] == "end" and got[-1]["duration"] > 1  # the audio sent was kept
    assert reply.endswith(HANGUP)
    for seconds in (took, as_took):
        assert MAX_CALL_S <= seconds < MAX_CALL_S + 4
    assert _stored(limited, got[0]["call_id"], SUPERVISOR)["status"] == "max_call_length"
    assert _stored(limited, as_call, SUPERVISOR)["status"] == "max_call_length"


def test_empty_frames_add_nothing_to_a_session():
    """Empty frames (and half a pcm16 sample) carry no audio: they add no samples, record no
    arrival, and the segments are those of the audio alone."""
    assert Upsampler2x().push(np.zeros(0)).size == 0
    pcm = np.sin(np.arange(8000 * 6) / 3) * 8000 * (np.arange(8000 * 6) % 16000 < 8000)
    pcm = pcm.astype("<i2").tobytes()  # 1 s of tone, 1 s of silence, three times
    plain = CallSession("a", None, stream=StreamFormat("pcm16", 8000))
    padded = CallSession("a", None, stream=StreamFormat("pcm16", 8000))
    found: dict[str, list] = {"plain": [], "padded": []}
    for i in range(0, len(pcm), 320):
        found["plain"] += plain.feed(pcm[i : i + 320])
        found["padded"] += padded.feed(pcm[i : i + 320])
        arrivals = len(padded._arrivals_at)
        for _ in range(200):
            found["padded"] += padded.feed(b"")
        found["padded"] += padded.feed(b"\x00") + padded.feed(b"\x00")  # one sample in halves
        found["plain"] += plain.feed(b"\x00\x00")
        assert len(padded._arrivals_at) <= arrivals + 1  # the whole sample, not the empties
    found["plain"] += plain.feed_end()
    found["padded"] += padded.feed_end()
    assert padded.segmenter.samples_seen == plain.segmenter.samples_seen
    assert found["plain"], "the tone should make segments"
    assert [(s.start, s.end) for s in found["padded"]] == [(s.start, s.end) for s in found["plain"]]


def test_stream_limits_deadlines():
    now = [0.0]
    config = ServerConfig(insecure_no_auth=True, start_timeout_s=5, idle_timeout_s=10,
                          max_call_seconds=25)  # fmt: skip
    waiting = StreamLimits(config, clock=lambda: now[0])
    assert waiting.expired() is None and waiting.wait() == 5
    now[0] = 5.0
    assert (waiting.expired().kind, waiting.expired().close_code) == ("start_timeout", 1002)

    now[0] = 0.0
    limits = StreamLimits(config, clock=lambda: now[0])
    limits.start()
    assert limits.wait() == 10  # idle comes before the length limit
    now[0] = 9.0
    assert not limits.audio(b"") and limits.wait() == 1  # an empty frame is not audio
    assert limits.audio(b"\0")  # idle now due at 19 s
    now[0] = 18.9
    assert limits.expired() is None
    now[0] = 19.0
    assert (limits.expired().kind, limits.expired().close_code) == ("idle_timeout", 4408)
    for t in range(19, 25):  # audio every second: only the length limit can end it, at 25 s
        now[0] = float(t)
        limits.audio(b"\0")
        assert limits.expired() is None
    now[0] = 25.0
    assert (limits.expired().kind, limits.expired().close_code) == ("max_call_length", 4413)


# --- item 10: malformed Twilio messages before authentication ---------------------------------


def _twilio_start(**start) -> str:
    body = {"callSid": "CA" + uuid.uuid4().hex,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}  # fmt: skip
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {**body, **start}})


async def _close_of(url: str, messages: list[str], headers: dict | None = None):
    """Send `messages` (stopping if the server closes first); the server's close code and reason."""
    async with connect(url, additional_headers=headers or {}, max_size=None) as ws:
        with contextlib.suppress(websockets.ConnectionClosed):
            for message in messages:
                await ws.send(message)
            async with asyncio.timeout(10):
                async for _ in ws:
                    pass
        return ws.close_code, ws.close_reason


DEEP = "[" * 30_000 + "]" * 30_000  # under the 64 kB frame limit, far past the JSON decoder's depth
MEDIA = json.dumps({"event": "media", "media": {"track": "inbound", "payload": "//8="}})


@pytest.mark.parametrize(
    "messages, code",
    [
        ([_twilio_start(mediaFormat="audio/opus")], 1002),  # not an object
        ([_twilio_start(mediaFormat=["x"])], 1002),
        ([_twilio_start(mediaFormat={"encoding": "audio/x-opus", "sampleRate": 48000})], 1003),
        (['{"event": "start", "start": ' + DEEP + "}"], 1007),
        ([DEEP], 1007),
        ([_twilio_start(callSid="CA" + "7" * 60_000)], 1002),
        ([json.dumps({"event": "x" * 60_000})], 1002),
        (["{not json", "{not json"], 1007),  # no second chance before authentication
        ([MEDIA], 1008),  # audio before any start
        (
            [
                json.dumps({"event": "connected"}),
                json.dumps({"event": "dtmf", "dtmf": {"digit": "1"}}),
            ],
            1008,
        ),  # fmt: skip
        ([json.dumps({"event": "connected"}), _twilio_start(), MEDIA], 1008),  # start, no token
    ],
    ids=[
        "format-string",
        "format-list",
        "format-unknown",
        "deep-start",
        "deep",
        "60kB-callSid",
        "60kB-event",
        "bad-json",
        "media-first",
        "dtmf-first",
        "no-token",
    ],  # fmt: skip
)
def test_unauthenticated_malformed_twilio_messages_get_a_clean_close(limited, messages, code):
    offset = len(limited.log.read_text())
    got, reason = asyncio.run(_close_of(f"{limited.ws}/twilio", messages))
    assert got == code and reason, (got, reason)
    assert len(reason.encode()) <= 123
    log = _log_since(limited, offset)
    assert "Traceback" not in log and "ingest failed" not in log, log[-2000:]
    assert all(len(line) < 1000 for line in log.splitlines())  # nothing the client sent, at length


def test_authenticated_clients_get_the_same_checks(limited):
    """A token in the header lets a client past authentication, not past the format checks: a
    60 kB callSid is refused (and never stored); deep JSON mid-call is a counted bad message."""
    offset = len(limited.log.read_text())
    auth = _bearer(AGENT1)
    sid = "CA" + "7" * 60_000
    code, _ = asyncio.run(_close_of(f"{limited.ws}/twilio", [_twilio_start(callSid=sid)], auth))
    assert code == 1002

    async def deep_mid_call() -> list[dict]:
        async with connect(f"{limited.ws}/stream", additional_headers=auth) as ws:
            await ws.send(json.dumps({"type": "start", "encoding": "pcm16", "sample_rate": 8000}))
            await ws.send(PCM_100MS)
            await ws.send(DEEP)
            await ws.send(PCM_100MS)
            await ws.send(json.dumps({"type": "stop"}))
            return [json.loads(m) async for m in ws]

    got = asyncio.run(deep_mid_call())
    assert [m["code"] for m in got if m["type"] == "error"] == ["bad_json"]
    assert got[-1]["type"] == "end"
    calls = httpx.get(f"{limited.http}/calls", headers=_bearer(SUPERVISOR)).json()["calls"]
    assert all(len(c["id"]) <= 128 for c in calls)
    log = _log_since(limited, offset)
    assert "Traceback" not in log and sid not in log
