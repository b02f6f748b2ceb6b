"""`voice serve`: the live call server (HTTP/WebSocket, optional AudioSocket and TLS)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from voice.cliopts import add_option
from voice.commands import add_asr_args
from voice.errors import ConfigError

log = logging.getLogger(__name__)

# `voice serve` flags that set a ServerConfig field (argparse dest -> field). Their defaults are
# ServerConfig()'s, so each lives in config.py alone; config_from_args maps them back.
CONFIG_FLAGS = {
    "host": "host",
    "port": "port",
    "insecure_no_auth": "insecure_no_auth",
    "tls_cert": "tls_cert",
    "tls_key": "tls_key",
    "tls_min_version": "tls_min_version",
    "audiosocket_port": "audiosocket_port",
    "audiosocket_host": "audiosocket_host",
    "audiosocket_allow_remote": "audiosocket_allow_remote",
    "record_dir": "record_dir",
    "rubric": "rubric",
    "retention_days": "retention_days",
    "retention_interval": "retention_check_s",
    "kb_watch": "kb_watch_seconds",
    "context_hours": "context_hours",
    "conversation_idle": "conversation_idle_s",
    "max_calls": "max_calls",
    "start_timeout": "start_timeout_s",
    "idle_timeout": "idle_timeout_s",
    "max_call_seconds": "max_call_seconds",
    "max_upload_seconds": "max_upload_seconds",
    "max_uploads": "max_uploads",
    "upload_timeout": "upload_timeout_s",
    "batch_max": "batch_max",
    "partial_ms": "partial_ms",
    "max_queue_seconds": "max_queue_seconds",
    "subscriber_queue": "subscriber_queue",
}


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
    defaults = ServerConfig()

    def opt(flag: str, **kwargs) -> None:  # a flag setting a ServerConfig field, its default
        add_option(p, flag, defaults, CONFIG_FLAGS[flag[2:].replace("-", "_")], **kwargs)

    opt("--host", help="listen address (default %(default)s)")
    opt("--port", type=int, help="HTTP/WebSocket port (default %(default)s)")
    p.add_argument("--auth", metavar="FILE",
                   help='YAML/JSON {"tokens": {"<token>": "agent|supervisor|admin"}}')  # fmt: skip
    opt("--insecure-no-auth", action="store_true",
        help="no tokens (local development; loopback host only)")  # fmt: skip
    opt("--tls-cert", help="PEM certificate (serve HTTPS/WSS with --tls-key)")
    opt("--tls-key", help="PEM private key")
    opt("--tls-min-version", choices=TLS_VERSIONS,
        help="oldest TLS version accepted (default %(default)s; 1.2 only for clients that cannot "
        "do 1.3)")  # fmt: skip
    opt("--audiosocket-port", type=int, help="also accept Asterisk AudioSocket here")
    opt("--audiosocket-host",
        help="AudioSocket listen address (default %(default)s: it has no auth)")  # fmt: skip
    opt("--audiosocket-allow-remote", action="store_true",
        help="allow a non-loopback --audiosocket-host. AudioSocket is plain TCP with no "
        "authentication or encryption: anyone who reaches the port can start calls and anyone on "
        "the path hears the audio, so only on a network private to the PBX")  # fmt: skip
    p.add_argument("--db", help="SQLite store of calls and events, created 0600 (default "
                   "$XDG_DATA_HOME/voice/voice_calls.sqlite3, else "
                   "~/.local/share/voice/voice_calls.sqlite3, in a folder created 0700), or "
                   "postgresql://USER[:PASSWORD]@HOST/DB shared by several servers behind a load "
                   "balancer")  # fmt: skip
    opt("--record-dir", metavar="DIR",
        help="keep each call's caller audio as it arrived (8 kHz, its own codec) in DIR, one "
        "owner-only WAV per call, deleted with the call by --retention-days. Off by default: "
        "callers must be told they are recorded (README: Call recording)")  # fmt: skip
    opt("--rubric", metavar="FILE",
        help="the audit review's scoring form (YAML: README, Quality audit); default: "
        "voice/quality/data/rubric.yaml")  # fmt: skip
    opt("--retention-days", type=int, metavar="N",
        help="delete calls (and their events) that started more than N days ago, at start and "
        "every --retention-interval (default %(default)s; 0: keep forever)")  # fmt: skip
    opt("--retention-interval", type=float, metavar="SECONDS",
        help="how often expired calls are deleted (default %(default)g)")  # fmt: skip
    p.add_argument("--kb", help="knowledge base (CSV/XLSX) for suggested replies")
    p.add_argument("--crm", metavar="DB",
                   help="SQLite CRM (schema: voice/answer/crm.py): a start message's customer_id "
                   "is looked up to address the caller and fill their orders")  # fmt: skip
    p.add_argument("--integrations", metavar="FILE",
                   help="YAML file of webhooks, Zendesk sync and referral rules (README: "
                   "Integrations); checked at start, errors name the key")  # fmt: skip
    opt("--kb-watch", type=float, metavar="SECONDS",
        help="reload the KB this often when its file changes; a broken edit is logged and the old "
        "KB kept (default %(default)g; 0: never)")  # fmt: skip
    opt("--context-hours", type=float, metavar="HOURS",
        help="a customer's language, unresolved turns, order and last topics carry over to "
        "their next call or message on any channel within this window (default %(default)g; "
        "0: off)")  # fmt: skip
    opt("--conversation-idle", type=float, metavar="SECONDS",
        help="a text conversation (POST /v1/messages, WhatsApp) ends after this long without a "
        "message (default %(default)g)")  # fmt: skip
    opt("--max-calls", type=int, help="concurrent calls (default %(default)s)")
    opt("--start-timeout", type=float, metavar="SECONDS",
        help="close a stream that sends no start message in this time "
        "(default %(default)g)")  # fmt: skip
    opt("--idle-timeout", type=float, metavar="SECONDS",
        help="end a call that sends no audio for this long: WebSocket close 4408, AudioSocket "
        "hang-up (default %(default)g)")  # fmt: skip
    opt("--max-call-seconds", type=float, metavar="SECONDS",
        help="end a call this long after its start: WebSocket close 4413, AudioSocket hang-up "
        f"(default %(default)g = {defaults.max_call_seconds / 3600:g} h)")  # fmt: skip
    opt("--max-upload-seconds", type=float, metavar="SECONDS",
        help="POST /v1/transcribe refuses (413) audio longer than this, read from the file's "
        f"header (default %(default)g = {defaults.max_upload_seconds / 3600:g} h)")  # fmt: skip
    opt("--max-uploads", type=int, metavar="N",
        help="uploads transcribed at once; more are answered 503 with Retry-After (default "
        "%(default)s)")  # fmt: skip
    opt("--upload-timeout", type=float, metavar="SECONDS",
        help="POST /v1/transcribe answers 408 when the request body has not fully arrived this "
        "long after the request (default %(default)g)")  # fmt: skip
    opt("--batch-max", type=int, help="segments per ASR batch (default %(default)s)")
    opt("--partial-ms", type=int, metavar="MS",
        help="`partial` transcripts of an utterance in progress this often, when the ASR worker "
        "is idle; 0: none (default %(default)s)")  # fmt: skip
    opt("--max-queue-seconds", type=float,
        help="ASR backlog bound before segments are shed (default %(default)g)")  # fmt: skip
    opt("--subscriber-queue", type=int,
        help="events buffered per subscriber before it is dropped "
        "(default %(default)s)")  # fmt: skip
    add_asr_args(p)
    p.set_defaults(func=run_serve)
    register_report(sub, defaults.db_path)


def register_report(sub: argparse._SubParsersAction, default_db: str) -> None:
    report = sub.add_parser("report", help="reports from the call store (weekly KB-owner report)")
    kinds = report.add_subparsers(dest="report", metavar="REPORT", required=True)
    weekly = kinds.add_parser(
        "weekly",
        help="what the AI failed on in one week, and the KPIs against the week before",
        description="Write DIR/report.html (heatmap of unresolved utterances by category and day, "
        "KPIs against the previous week, unresolved questions grouped by similarity with counts "
        "and example calls) and DIR/unresolved.csv (those groups as knowledge-base rows waiting "
        "for their answers). Both quote callers: they are written owner-only.",
    )
    weekly.add_argument("--db", default=default_db, help="the call store (default %(default)s)")
    weekly.add_argument(
        "--week", required=True, help="ISO week, e.g. 2026-W48 (Monday-Sunday, HKT)"
    )
    weekly.add_argument("--out", required=True, type=Path, help="folder for the two files")
    weekly.set_defaults(func=run_weekly)


def run_weekly(args: argparse.Namespace) -> int:
    from voice.server import weekly
    from voice.server.store import open_existing

    weekly.week_period(args.week)  # a bad --week is refused before the store is opened
    store = open_existing(args.db)
    try:
        report = weekly.build(store.db, args.week)
    finally:
        store.close()
    page, table = weekly.write(report, args.out)
    k = report.kpis
    print(f"{report.week}: {k['calls']} calls, {k['utterances']} utterances, "
          f"{sum(map(sum, report.heatmap['unresolved']))} unresolved in "
          f"{len(report.groups)} question groups")  # fmt: skip
    print(f"wrote {page} and {table}")
    return 0


def config_from_args(args: argparse.Namespace):
    """A validated ServerConfig from the command line (reads the auth file)."""
    from voice.server.auth import load_tokens
    from voice.server.config import ServerConfig

    tokens = load_tokens(args.auth) if args.auth else {}
    if args.auth and args.insecure_no_auth:
        raise ConfigError("--auth and --insecure-no-auth exclude each other")
    values = {field: getattr(args, dest) for dest, field in CONFIG_FLAGS.items()}
    if args.db:  # else ServerConfig's own default, read from $XDG_DATA_HOME now
        values["db_path"] = args.db
    return ServerConfig(tokens=tokens, **values).validate()


def run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from voice.commands import asr_from_args
    from voice.server import logs
    from voice.server.app import create_app

    config = config_from_args(args)  # refuse bad settings before loading the model
    if config.rubric:
        from voice.quality.reviews import RubricError, load_rubric

        try:
            load_rubric(config.rubric)
        except RubricError as exc:
            raise ConfigError(f"--rubric {config.rubric}: {exc}") from None
    if args.crm and not args.kb:
        raise ConfigError("--crm needs --kb: the CRM serves the answer engine")
    integrations = None
    if args.integrations:
        from voice.integrations.config import load

        integrations = load(args.integrations)
    secrets = [*config.tokens, *(integrations.secrets() if integrations else ())]
    logs.configure(logging.DEBUG if args.verbose else logging.INFO, secrets=secrets)
    transcriber, vad = asr_from_args(args)
    engine = None
    if args.kb:
        from voice.answer import AnswerEngine
        from voice.answer.crm import SqliteCustomerProvider
        from voice.prosody import preload

        crm = SqliteCustomerProvider(args.crm) if args.crm else None
        engine = AnswerEngine.from_file(args.kb, crm=crm)
        preload()  # librosa's ~3 s first import now, not inside the first caller's utterance
        engine.answer("喂，你好")  # and the sentence encoder's first run
    transcriber.warm_up()
    app = create_app(config, transcriber, vad, engine, integrations)
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
