"""`voice serve`: the live call server (HTTP/WebSocket, optional AudioSocket and TLS)."""

from __future__ import annotations

import argparse
import logging

from voice.commands import add_asr_args
from voice.errors import ConfigError

log = logging.getLogger("voice")


def register(sub: argparse._SubParsersAction) -> None:
    from voice.server.config import TLS_VERSIONS, ServerConfig  # light: dataclasses only

    p = sub.add_parser(
        "serve",
        help="serve live calls: Twilio Media Streams, Asterisk AudioSocket, raw WebSocket",
        description="One process for many calls: audio in over Twilio Media Streams (/twilio), "
        "a raw WebSocket (/stream) or Asterisk AudioSocket (TCP); transcripts, suggestions and "
        "alerts out to subscribers (/calls/{id}/events, /events) and to a SQLite store "
        "(GET /calls/{id}). Requires --auth unless --insecure-no-auth on a loopback host.",
    )
    p.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="HTTP/WebSocket port (default 8080)")
    p.add_argument("--auth", metavar="FILE",
                   help='YAML/JSON {"tokens": {"<token>": "agent|supervisor|admin"}}')  # fmt: skip
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="no tokens (local development; loopback host only)")  # fmt: skip
    p.add_argument("--tls-cert", help="PEM certificate (serve HTTPS/WSS with --tls-key)")
    p.add_argument("--tls-key", help="PEM private key")
    p.add_argument("--tls-min-version", choices=TLS_VERSIONS, default=ServerConfig.tls_min_version,
                   help="oldest TLS version accepted (default %(default)s; 1.2 only for clients "
                   "that cannot do 1.3)")  # fmt: skip
    p.add_argument("--audiosocket-port", type=int, help="also accept Asterisk AudioSocket here")
    p.add_argument("--audiosocket-host", default="127.0.0.1",
                   help="AudioSocket listen address (default 127.0.0.1: it has no auth)")  # fmt: skip
    p.add_argument("--audiosocket-allow-remote", action="store_true",
                   help="allow a non-loopback --audiosocket-host. AudioSocket is plain TCP with no "
                   "authentication or encryption: anyone who reaches the port can start calls and "
                   "anyone on the path hears the audio, so only on a network private to the PBX")  # fmt: skip
    p.add_argument("--db", help="SQLite store of calls and events, created 0600 (default "
                   "$XDG_DATA_HOME/voice/voice_calls.sqlite3, else "
                   "~/.local/share/voice/voice_calls.sqlite3, in a folder created 0700)")  # fmt: skip
    p.add_argument("--retention-days", type=int, default=ServerConfig.retention_days, metavar="N",
                   help="delete calls (and their events) that started more than N days ago, at "
                   "start and every --retention-interval (default 0: keep forever)")  # fmt: skip
    p.add_argument("--retention-interval", type=float, default=ServerConfig.retention_check_s,
                   metavar="SECONDS", help="how often expired calls are deleted (default "
                   f"{ServerConfig.retention_check_s:g})")  # fmt: skip
    p.add_argument("--kb", help="knowledge base (CSV/XLSX) for suggested replies")
    p.add_argument("--kb-watch", type=float, default=5.0, metavar="SECONDS",
                   help="reload the KB this often when its file changes; a broken edit is "
                   "logged and the old KB kept (default 5; 0: never)")  # fmt: skip
    p.add_argument("--max-calls", type=int, default=32, help="concurrent calls (default 32)")
    p.add_argument("--start-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="close a stream that sends no start message in this time (default 10)")  # fmt: skip
    p.add_argument("--idle-timeout", type=float, default=ServerConfig.idle_timeout_s,
                   metavar="SECONDS", help="end a call that sends no audio for this long: "
                   "WebSocket close 4408, AudioSocket hang-up (default %(default)g)")  # fmt: skip
    p.add_argument("--max-call-seconds", type=float, default=ServerConfig.max_call_seconds,
                   metavar="SECONDS", help="end a call this long after its start: WebSocket close "
                   "4413, AudioSocket hang-up (default %(default)g = 4 h)")  # fmt: skip
    p.add_argument("--max-upload-seconds", type=float, default=ServerConfig.max_upload_seconds,
                   metavar="SECONDS", help="POST /v1/transcribe refuses (413) audio longer than "
                   "this, read from the file's header (default %(default)g = 2 h)")  # fmt: skip
    p.add_argument("--max-uploads", type=int, default=ServerConfig.max_uploads, metavar="N",
                   help="uploads transcribed at once; more are answered 503 with Retry-After "
                   "(default %(default)s)")  # fmt: skip
    p.add_argument("--batch-max", type=int, default=8, help="segments per ASR batch (default 8)")
    p.add_argument("--max-queue-seconds", type=float, default=6.0,
                   help="ASR backlog bound before segments are shed (default 6)")  # fmt: skip
    p.add_argument("--subscriber-queue", type=int, default=256,
                   help="events buffered per subscriber before it is dropped (default 256)")  # fmt: skip
    add_asr_args(p)
    p.set_defaults(func=run_serve)


def config_from_args(args: argparse.Namespace):
    """A validated ServerConfig from the command line (reads the auth file)."""
    from voice.server.auth import load_tokens
    from voice.server.config import ServerConfig, default_db_path

    tokens = load_tokens(args.auth) if args.auth else {}
    if args.auth and args.insecure_no_auth:
        raise ConfigError("--auth and --insecure-no-auth exclude each other")
    return ServerConfig(
        host=args.host, port=args.port, tokens=tokens, insecure_no_auth=args.insecure_no_auth,
        tls_cert=args.tls_cert, tls_key=args.tls_key, audiosocket_port=args.audiosocket_port,
        audiosocket_host=args.audiosocket_host, db_path=args.db or default_db_path(),
        retention_days=args.retention_days, retention_check_s=args.retention_interval,
        max_calls=args.max_calls,
        batch_max=args.batch_max, max_queue_seconds=args.max_queue_seconds,
        subscriber_queue=args.subscriber_queue, kb_watch_seconds=args.kb_watch,
        start_timeout_s=args.start_timeout,
        idle_timeout_s=args.idle_timeout, max_call_seconds=args.max_call_seconds,
        max_upload_seconds=args.max_upload_seconds, max_uploads=args.max_uploads,
        tls_min_version=args.tls_min_version, audiosocket_allow_remote=args.audiosocket_allow_remote,
    ).validate()  # fmt: skip


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from voice.commands import asr_from_args
    from voice.server import logs
    from voice.server.app import create_app

    config = config_from_args(args)  # refuse bad settings before loading the model
    logs.configure(logging.DEBUG if args.verbose else logging.INFO, secrets=config.tokens)
    transcriber, vad = asr_from_args(args)
    engine = None
    if args.kb:
        from voice.answer import AnswerEngine
        from voice.prosody import preload

        engine = AnswerEngine.from_file(args.kb)
        preload()  # librosa's ~3 s first import now, not inside the first caller's utterance
    app = create_app(config, transcriber, vad, engine)
    if config.insecure_no_auth:
        log.warning("authentication is OFF (--insecure-no-auth): every client is a supervisor")
    uv = uvicorn.Config(
        app, host=config.host, port=config.port, ssl_certfile=config.tls_cert,
        ssl_keyfile=config.tls_key, ws_max_size=4 * config.max_frame_bytes, log_config=None,
        access_log=False, lifespan="on", ws_ping_interval=20, ws_ping_timeout=20,
        ssl_context_factory=tls_minimum(config.tls_min_version) if config.tls_cert else None,
    )  # fmt: skip
    uvicorn.Server(uv).run()
    return 0


def tls_minimum(version: str):
    """A uvicorn `ssl_context_factory`: its usual server context, refusing TLS below `version`."""
    import ssl

    minimum = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}[version]

    def factory(uv_config, default_factory) -> ssl.SSLContext:
        context = default_factory()
        context.minimum_version = minimum
        return context

    return factory
