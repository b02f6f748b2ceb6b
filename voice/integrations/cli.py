"""`voice integrations list|deliveries|retry|enable|test`: inspect and replay the outbox."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from voice.errors import ConfigError

TEST_EVENT = "integration.test"


def register(sub: argparse._SubParsersAction) -> None:
    from voice.server.config import default_db_path

    p = sub.add_parser(
        "integrations",
        help="webhook and Zendesk deliveries: list, inspect, retry, test",
        description="Inspect the integrations outbox of a call store and replay deliveries. "
        "Works beside a running `voice serve` (its worker picks up a retried delivery within "
        "seconds).",
    )
    kinds = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    def db_arg(q: argparse.ArgumentParser) -> None:
        q.add_argument("--db", default=default_db_path(),
                       help="the server's call store (default %(default)s)")  # fmt: skip

    q = kinds.add_parser("list", help="endpoints from the file with their state and counts")
    q.add_argument("--integrations", metavar="FILE", required=True, help="the integrations file")
    db_arg(q)
    q.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    q.set_defaults(func=run_list)

    q = kinds.add_parser("deliveries", help="recent deliveries, newest first")
    db_arg(q)
    q.add_argument("--status", choices=("pending", "delivered", "dead"), help="only this state")
    q.add_argument("--target", help="only this endpoint (or zendesk)")
    q.add_argument("--limit", type=int, default=50, help="how many (default %(default)s)")
    q.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    q.set_defaults(func=run_deliveries)

    q = kinds.add_parser("retry", help="queue a delivery again now (and enable its endpoint)")
    q.add_argument("id", type=int, help="the delivery's id (see `deliveries`)")
    db_arg(q)
    q.set_defaults(func=run_retry)

    q = kinds.add_parser("enable", help="enable an endpoint disabled by a 410 answer")
    q.add_argument("endpoint", help="the endpoint's name")
    db_arg(q)
    q.set_defaults(func=run_enable)

    q = kinds.add_parser(
        "test", help="send a signed test event to one endpoint now and print its answer",
        description=f"Sends a `{TEST_EVENT}` event in the endpoint's format (signed as it would "
        "be) and prints the HTTP status and time. Nothing is stored. Exit 0 on 2xx, 1 otherwise.",
    )  # fmt: skip
    q.add_argument("endpoint", help="the endpoint's name in the file")
    q.add_argument("--integrations", metavar="FILE", required=True, help="the integrations file")
    q.set_defaults(func=run_test)


def _store(path: str):
    from voice.server.db import is_url
    from voice.server.store import Store

    if not is_url(path) and not Path(path).exists():
        raise ConfigError(f"{path}: no call store there (pass --db, the file `voice serve` uses)")
    return Store(path)


def run_list(args: argparse.Namespace) -> int:
    from voice.integrations.config import ZENDESK, load
    from voice.integrations.outbox import Outbox
    from voice.server.db import is_url

    config = load(args.integrations)
    counts, disabled = {}, {}
    if Path(args.db).exists() or is_url(args.db):
        store = _store(args.db)
        counts, disabled = Outbox.counts(store.db), Outbox.disabled(store.db)
        store.close()
    rows = [{"name": e.name, "format": e.format, "url": safe_url(e.url), "events": list(e.events)}
            for e in config.webhooks]  # fmt: skip
    if config.zendesk:
        rows.append({"name": ZENDESK, "format": "zendesk", "url": safe_url(config.zendesk.url),
                     "events": ["tickets"]})  # fmt: skip
    for row in rows:
        row["state"] = f"disabled ({disabled[row['name']]})" if row["name"] in disabled else "on"
        row["deliveries"] = counts.get(row["name"], {})
    if args.json:
        print(json.dumps({"endpoints": rows, "routing": [r.__dict__ for r in config.routing]},
                         ensure_ascii=False))  # fmt: skip
        return 0
    if not rows:
        print("no webhooks or zendesk in the file")
    for row in rows:
        done = row["deliveries"]
        print(f"{row['name']:<20} {row['format']:<9} {row['state']:<10} pending "
              f"{done.get('pending', 0)}, delivered {done.get('delivered', 0)}, dead "
              f"{done.get('dead', 0)}  {row['url']}  [{', '.join(row['events'])}]")  # fmt: skip
    for rule in config.routing:
        print(f"routing: {rule.category} {rule.outcome} -> {rule.department} "
              f"(SLA {rule.sla_minutes:g} min)")  # fmt: skip
    return 0


def run_deliveries(args: argparse.Namespace) -> int:
    from voice.integrations.outbox import Outbox

    store = _store(args.db)
    try:
        rows = Outbox.deliveries(store.db, args.status, args.target, args.limit)
    finally:
        store.close()
    for row in rows:
        if args.json:
            print(json.dumps(row, ensure_ascii=False))
            continue
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["updated_at"]))
        due = ""
        if row["status"] == "pending":
            due = f" next in {max(0.0, row['next_at'] - time.time()):.0f} s"
        print(f"{row['id']:>6} {row['status']:<9} {row['target']:<16} {row['type']:<22} "
              f"call {row['call_id'] or '-'} attempts {row['attempts']}{due} {when} "
              f"{row['last_error'] or ''}")  # fmt: skip
    if not rows and not args.json:
        print("no deliveries")
    return 0


def run_retry(args: argparse.Namespace) -> int:
    from voice.integrations.outbox import Outbox
    from voice.server.db import masked

    target = _transact(args.db, Outbox.retry, args.id)
    if target is None:
        raise ConfigError(f"no delivery {args.id} in {masked(args.db)} (see `voice integrations "
                          "deliveries`)")  # fmt: skip
    print(f"delivery {args.id} to {target} queued again")
    return 0


def run_enable(args: argparse.Namespace) -> int:
    from voice.integrations.outbox import Outbox

    changed = _transact(args.db, Outbox.enable, args.endpoint)
    print(f"{args.endpoint} enabled" if changed else f"{args.endpoint} was not disabled")
    return 0


def _transact(db: str, work, *args):
    """Run one outbox write in the store at `db` (beside a running server: SQLite serialises)."""
    store = _store(db)
    try:
        return store.transact(work, *args)
    finally:
        store.close()


def run_test(args: argparse.Namespace) -> int:
    import httpx

    from voice.integrations.config import load
    from voice.integrations.delivery import WebhookSender
    from voice.integrations.outbox import Delivery

    config = load(args.integrations)
    endpoint = config.endpoint(args.endpoint)
    if endpoint is None:
        names = ", ".join(e.name for e in config.webhooks) or "none"
        raise ConfigError(f"no webhook named {args.endpoint} in {args.integrations} "
                          f"(webhooks: {names})")  # fmt: skip
    delivery = Delivery(0, "msg_test_" + str(int(time.time())), TEST_EVENT, endpoint.name, None,
                        0, time.time(), {"message": "test from voice integrations test"}, None)  # fmt: skip
    sender = WebhookSender(endpoint, config.allow_private_networks)

    async def send():
        async with httpx.AsyncClient(timeout=config.delivery.timeout_seconds,
                                     trust_env=False) as client:  # fmt: skip
            return await sender.send(delivery, client)

    started = time.perf_counter()
    try:
        result = asyncio.run(send())
    except httpx.HTTPError as exc:
        print(f"{endpoint.name}: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    ms = (time.perf_counter() - started) * 1000
    if result.ok:
        print(f"{endpoint.name}: delivered (HTTP {result.code}) in {ms:.0f} ms")
        return 0
    print(f"{endpoint.name}: not delivered: {result.error} ({ms:.0f} ms)", file=sys.stderr)
    return 1


def safe_url(url: str) -> str:
    """A URL without what may be a credential (query: DingTalk's access_token; Slack's path)."""
    parts = urlsplit(url)
    path = parts.path if len(parts.path) <= 24 else parts.path[:12] + "…"
    return f"{parts.scheme}://{parts.netloc}{path}" + ("?…" if parts.query else "")


__all__ = ["register", "safe_url"]
