"""The delivery worker: sends the outbox's due deliveries, retries with backoff, dead-letters.

At-least-once: a delivery is marked delivered only after its target answered 2xx, so one in
flight when the server stops is sent again after the start (receivers deduplicate by
`webhook-id`). Failures wait `backoff_seconds * 2**(attempt-1)` (capped, with jitter), or the
`Retry-After` of a 429/503; a 410 disables the target; after `max_attempts` the delivery is
dead. Reads use the store's read connection; writes go through `write` (the store thread).
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from voice.errors import ConfigError
from voice.integrations import formats
from voice.integrations.config import Endpoint, IntegrationsConfig, resolve_public
from voice.integrations.outbox import DEAD, DELIVERED, PENDING, Delivery, Outbox

log = logging.getLogger(__name__)

POLL_S = 5.0  # the longest sleep between looks at the outbox (new events also wake the worker)
PARALLEL = 8  # requests in flight at once


@dataclass
class Result:
    """One attempt's outcome, as a sender reports it."""

    ok: bool
    code: int | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the target asked us to wait (429/503)
    gone: bool = False  # 410: the target is disabled
    permanent: bool = False  # retrying cannot help: dead now
    after: Callable[[Any], None] | None = field(default=None, repr=False)  # run in the same
    # transaction that marks it delivered (Zendesk records the ticket it created)


class Sender(Protocol):
    async def send(self, delivery: Delivery, client: httpx.AsyncClient) -> Result: ...


class WebhookSender:
    """Delivers to one webhook endpoint in its format."""

    def __init__(self, endpoint: Endpoint, allow_private: bool, clock=time.time):
        self.endpoint = endpoint
        self.allow_private = allow_private
        self.clock = clock

    async def send(self, delivery: Delivery, client: httpx.AsyncClient) -> Result:
        request = formats.build(self.endpoint, delivery, self.clock())
        refused = await check_host(request.url, self.allow_private)
        if refused:
            return refused
        response = await client.post(request.url, content=request.content,
                                     headers=request.headers)  # fmt: skip
        result = result_of(response)
        if result.ok and self.endpoint.format == "dingtalk":
            result = dingtalk_result(response)
        return result


async def check_host(url: str, allow_private: bool) -> Result | None:
    """A permanent failure if the URL's name now resolves to a private address (the file's
    check saw only the name); None if it may be called."""
    if allow_private:
        return None
    parts = urlsplit(url)
    try:
        await asyncio.to_thread(resolve_public, parts.hostname or "", parts.port or 443)
    except ConfigError as exc:
        return Result(False, error=f"refused: {exc}", permanent=True)
    except ConnectionError as exc:
        return Result(False, error=str(exc))
    return None


def result_of(response: httpx.Response) -> Result:
    """2xx: delivered; 410: gone; 429/503 with Retry-After; anything else: retry later."""
    code = response.status_code
    if 200 <= code < 300:
        return Result(True, code)
    retry_after = retry_after_s(response.headers.get("retry-after")) if code in (429, 503) else None
    return Result(False, code, f"HTTP {code}", retry_after=retry_after, gone=code == 410)


def dingtalk_result(response: httpx.Response) -> Result:
    """DingTalk answers 200 with `errcode` 0 on success, a non-zero code otherwise."""
    try:
        errcode = response.json().get("errcode", 0)
    except (ValueError, AttributeError):
        return Result(False, response.status_code, "DingTalk answered without JSON")
    if errcode:
        return Result(False, response.status_code, f"DingTalk errcode {errcode}")
    return Result(True, response.status_code)


def retry_after_s(value: str | None) -> float | None:
    """Retry-After in seconds, from a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class DeliveryWorker:
    """Runs in the server's event loop: looks at the outbox when woken or every POLL_S."""

    def __init__(
        self,
        store,
        config: IntegrationsConfig,
        write: Callable[..., Awaitable[Any]],
        metrics=None,
        senders: dict[str, Sender] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ):
        self.store = store
        self.config = config
        self.write = write  # write(fn, *args) -> awaitable: fn(*args) on the store thread
        self.metrics = metrics
        self.senders: dict[str, Sender] = {
            e.name: WebhookSender(e, config.allow_private_networks, clock) for e in config.webhooks
        }
        self.senders.update(senders or {})
        self.clock = clock
        self.rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._in_flight: set[int] = set()
        self._tasks: set[asyncio.Task] = set()
        self._limit = asyncio.Semaphore(PARALLEL)

    def wake(self) -> None:
        """New deliveries may be due: look now."""
        self._wake.set()

    async def run(self) -> None:
        policy = self.config.delivery
        async with httpx.AsyncClient(timeout=policy.timeout_seconds, follow_redirects=False,
                                     trust_env=False) as client:  # fmt: skip
            try:
                while True:
                    self._wake.clear()
                    try:
                        self._start_due(client)
                        next_at = Outbox.next_due(self.store.db)
                    except Exception:  # a locked database now: look again soon
                        log.exception("reading the outbox failed")
                        next_at = None
                    wait = POLL_S if next_at is None else min(POLL_S, next_at - self.clock())
                    if wait > 0:
                        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                        # cancellation that arrives as the wake-up does, and stop() would hang
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout(wait):
                                await self._wake.wait()
                    else:
                        await asyncio.sleep(0.05)  # due but blocked (in flight, disabled)
            finally:
                for task in self._tasks:
                    task.cancel()
                await asyncio.gather(*self._tasks, return_exceptions=True)

    def _start_due(self, client: httpx.AsyncClient) -> None:
        free = PARALLEL - len(self._in_flight)
        if free <= 0 or not self.store.leads("outbox"):  # one server delivers a shared store's
            return
        disabled = set(Outbox.disabled(self.store.db))
        for delivery in Outbox.due(self.store.db, self.clock(), disabled, free, self._in_flight):
            self._in_flight.add(delivery.id)
            task = asyncio.get_running_loop().create_task(self._attempt(delivery, client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attempt(self, delivery: Delivery, client: httpx.AsyncClient) -> None:
        started = time.perf_counter()
        try:
            sender = self.senders.get(delivery.target)
            if sender is None:
                result = Result(False, error=f"{delivery.target} is not in the integrations file",
                                permanent=True)  # fmt: skip
            else:
                async with self._limit:
                    try:
                        result = await sender.send(delivery, client)
                    except httpx.HTTPError as exc:
                        result = Result(False, error=f"{type(exc).__name__}: {exc}"[:300])
            await self._settle(delivery, result, time.perf_counter() - started)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("delivery %s to %s failed unexpectedly", delivery.id, delivery.target)
        finally:
            self._in_flight.discard(delivery.id)
            self._wake.set()  # the next delivery of that call may now be due

    async def _settle(self, delivery: Delivery, result: Result, seconds: float) -> None:
        policy = self.config.delivery
        attempts = delivery.attempts + 1
        now = self.clock()
        if result.ok:
            status, next_at, outcome = DELIVERED, now, "delivered"
        elif result.gone:
            status, next_at, outcome = DEAD, now, "gone"
        elif result.permanent or attempts >= policy.max_attempts:
            status, next_at, outcome = DEAD, now, "dead"
        else:
            status, outcome = PENDING, "retry"
            next_at = now + self.backoff(attempts, result.retry_after)

        def settle(db) -> None:
            Outbox.settle(db, delivery.id, status, attempts, next_at, result.code, result.error,
                          round(seconds * 1000, 1))  # fmt: skip
            if result.gone:
                Outbox.disable(db, delivery.target, f"HTTP 410 on delivery {delivery.id}")
            if result.ok and result.after is not None:
                result.after(db)

        await self.write(self.store.transact, settle)
        if self.metrics is not None:
            self.metrics.deliveries.inc(target=delivery.target, outcome=outcome)
            self.metrics.delivery_seconds.observe(seconds)
        if outcome != "delivered":
            log.warning("delivery %s (%s to %s) %s: %s", delivery.id, delivery.event_type,
                        delivery.target, outcome, result.error)  # fmt: skip

    def backoff(self, attempts: int, retry_after: float | None) -> float:
        """Seconds before attempt `attempts + 1`: exponential with jitter (half fixed, half
        random), or what the target asked for; never over max_backoff_seconds."""
        policy = self.config.delivery
        if retry_after is not None:
            return min(retry_after, policy.max_backoff_seconds)
        delay = min(policy.backoff_seconds * 2 ** (attempts - 1), policy.max_backoff_seconds)
        return delay / 2 + self.rng.uniform(0, delay / 2)


__all__ = ["DeliveryWorker", "Result", "Sender", "WebhookSender", "result_of", "retry_after_s"]
