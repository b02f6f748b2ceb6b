"""One server's integrations: the outbox with its extensions, the delivery worker, the SLA watch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from voice.integrations.config import ZENDESK, IntegrationsConfig
from voice.integrations.delivery import DeliveryWorker
from voice.integrations.outbox import Outbox
from voice.integrations.routing import Referrals
from voice.integrations.zendesk import ZendeskSync

log = logging.getLogger(__name__)

# Call event types that can queue deliveries: only these wake the worker.
WAKING = frozenset({"alert", "handoff", "end", "referral", "referral_breached", "ticket_comment"})


class Integrations:
    """Built from the integrations file before the store opens (the store needs `outbox`);
    `start` runs the worker and the referral deadline watch in the server's event loop."""

    def __init__(self, config: IntegrationsConfig):
        self.config = config
        self.zendesk = ZendeskSync(config) if config.zendesk else None
        self.referrals = Referrals(config)
        self.outbox = Outbox(config, [x for x in (self.zendesk, self.referrals) if x])
        self.worker: DeliveryWorker | None = None
        self._tasks: list[asyncio.Task] = []

    def start(self, hub, store, metrics) -> None:
        senders = {ZENDESK: self.zendesk.sender()} if self.zendesk else {}
        self.worker = DeliveryWorker(store, self.config, hub.run_write, metrics, senders)
        hub.on_stored = lambda kind: self.worker.wake() if kind in WAKING else None
        metrics.outbox_pending.read = lambda: store.db.execute(
            "SELECT count(*) FROM outbox_deliveries WHERE status='pending'"
        ).fetchone()[0]
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self.worker.run())]
        if self.config.routing:
            self._tasks.append(loop.create_task(self.referrals.watch(hub)))
        log.info("integrations: %d webhooks%s, %d routing rules", len(self.config.webhooks),
                 ", zendesk" if self.zendesk else "", len(self.config.routing))  # fmt: skip

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["WAKING", "Integrations"]
