"""The AudioSocket TCP listener: Asterisk's `AudioSocket(uuid, host:port)` connects here.

The protocol carries no credentials, so the listener binds to `audiosocket_host` (loopback by
default) and calls from it are owned by no agent: supervisors see them, or an agent when the
bridge assigns it. Fatal errors are answered with an error frame (0xff, 1-byte code) and a
closed connection; a call silent for `idle_timeout_s` or longer than `max_call_seconds` gets a
hang-up frame (0x00). A hang-up or disconnect, either way, still transcribes the audio received.
"""

from __future__ import annotations

import asyncio
import logging

from voice.server.calls import CallHub, CallRefused, LiveCall
from voice.server.config import ServerConfig
from voice.server.limits import StreamLimits
from voice.server.serializers import Audio, Dtmf, ProtocolError, Start, Stop
from voice.server.serializers.audiosocket import KIND_ERROR, KIND_HANGUP, Reader, frame

log = logging.getLogger("voice")

PROTOCOL = "audiosocket"
READ_BYTES = 65_536
ERROR_CODES = {"protocol": 1, "overloaded": 2, "format": 3, "server": 4}  # our error frame codes


async def start_audiosocket(hub: CallHub, config: ServerConfig) -> asyncio.Server:
    """Listen on (audiosocket_host, audiosocket_port)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _serve_connection(hub, config, reader, writer)

    server = await asyncio.start_server(handle, config.audiosocket_host, config.audiosocket_port)
    log.info("AudioSocket listening on %s:%s", config.audiosocket_host, config.audiosocket_port)
    return server


async def _serve_connection(hub: CallHub, config: ServerConfig, reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:  # fmt: skip
    parser = Reader(config.max_frame_bytes)
    limits = StreamLimits(config)
    call: LiveCall | None = None
    status, bad = "disconnected", 0

    async def fail(kind: str, message: str, code: str | None) -> None:
        """Count and log; answer with an error frame, or with a hang-up when `code` is None."""
        hub.metrics.errors.inc(protocol=PROTOCOL, kind=kind)
        log.warning("%s: %s", kind, message,
                    extra={"call_id": call.call_id if call else None, "protocol": PROTOCOL})  # fmt: skip
        reply = (
            frame(KIND_HANGUP) if code is None else frame(KIND_ERROR, bytes([ERROR_CODES[code]]))
        )
        try:
            writer.write(reply)
            await asyncio.wait_for(writer.drain(), 2.0)
        except Exception:  # the peer may be gone already
            pass

    try:
        while True:
            if (limit := limits.expired()) is not None:
                # a silent call or one over the length limit is hung up, not failed: its audio is
                # still transcribed (finish below)
                await fail(limit.kind, limit.message, "protocol" if call is None else None)
                if call is not None:
                    status = limit.kind
                return
            try:
                data = await asyncio.wait_for(reader.read(READ_BYTES), limits.wait())
            except TimeoutError:
                continue  # the check above says which limit it was
            if not data:
                break
            for item in parser.feed(data):
                try:
                    if isinstance(item, ProtocolError):
                        raise item
                    if isinstance(item, Start):
                        if call is not None:
                            raise ProtocolError("start_twice", "second UUID frame", fatal=True)
                        call = hub.open(item, PROTOCOL, owner=None)
                        limits.start()
                    elif isinstance(item, Audio):
                        if call is None:
                            raise ProtocolError("audio_before_start", "audio before UUID", True)
                        call.set_sample_rate(item.sample_rate or 8_000)
                        if limits.audio(item.data):
                            call.feed(item.data)
                    elif isinstance(item, Dtmf) and call is not None:
                        call.dtmf(item.digit)
                    elif isinstance(item, Stop):
                        status = "completed" if item.reason == "hangup" else item.reason
                        return
                except ProtocolError as exc:
                    if exc.fatal:
                        await fail(exc.kind, str(exc), "format" if exc.kind == "bad_format"
                                   else "protocol")  # fmt: skip
                        return
                    bad += 1
                    hub.metrics.errors.inc(protocol=PROTOCOL, kind=exc.kind)
                    if bad > config.max_bad_messages:
                        await fail("too_many_bad_messages", "too many bad frames", "protocol")
                        return
                except CallRefused as exc:
                    await fail(exc.reason, str(exc), "overloaded")
                    return
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    except Exception:
        status = "error"
        log.exception("AudioSocket connection failed", extra={"protocol": PROTOCOL})
        hub.metrics.errors.inc(protocol=PROTOCOL, kind="server_error")
    finally:
        if call is not None:
            await call.finish(status)
        writer.close()
