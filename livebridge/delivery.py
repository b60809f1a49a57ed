"""Delivery workers: claim thread heads from the outbox, deliver, retry, dead-letter.

Retry policy (after Vector and Redpanda Connect): transport errors, timeouts, 408, 429 and
5xx are retried with full-jitter exponential backoff; ``Retry-After`` is honoured up to a cap;
anything else, and anything older than ``max_age``, goes to the dead letters with the reason
and the last response. When Livedesk keeps failing, a breaker pauses all claiming instead of
letting every worker hammer it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp
import structlog

from livebridge.config import DeliveryConfig
from livebridge.exceptions import Permanent, ReplyNotSupported, Retryable, StoreUnavailable
from livebridge.livedesk.client import LivedeskError
from livebridge.metrics import Metrics
from livebridge.store import OutboxItem, Store

__all__ = ["Dispatcher", "Handler", "RetryPolicy", "classify"]

log = structlog.get_logger("livebridge.delivery")

#: Delivers one outbox item; raises ``Retryable``, ``Permanent`` or ``LivedeskError``.
Handler = Callable[[OutboxItem], Awaitable[None]]

_POLL = 0.25


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff as data: full jitter between 0 and ``initial * 2**attempt``, capped."""

    initial: float = 1.0
    cap: float = 300.0
    retry_after_cap: float = 300.0
    max_age: float = 3 * 86400

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        delay = random.uniform(0, min(self.cap, self.initial * 2 ** min(attempt, 32)))
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap))
        return delay


def classify(exc: BaseException) -> Retryable | Permanent:
    """Map a delivery failure to what the dispatcher does with it."""
    if isinstance(exc, Retryable | Permanent):
        return exc
    if isinstance(exc, StoreUnavailable):  # the store blipped mid-delivery: not the item's fault
        return Retryable(f"store: {exc}")
    if isinstance(exc, ReplyNotSupported):
        return Permanent(f"not deliverable: {exc}")
    if isinstance(exc, LivedeskError):
        if exc.retryable:
            return Retryable(str(exc), retry_after=exc.retry_after, response=exc.body)
        return Permanent(str(exc), response=exc.body)
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return Retryable(f"{type(exc).__name__}: {exc}")
    return Permanent(f"internal error: {type(exc).__name__}: {exc}")


class Dispatcher:
    """Runs the delivery workers over a ``Store``'s outbox."""

    def __init__(self, store: Store, handlers: Mapping[str, Handler], config: DeliveryConfig,
                 metrics: Metrics) -> None:
        self.store = store
        self.handlers = handlers
        self.config = config
        self.metrics = metrics
        self.policy = RetryPolicy(config.initial_backoff, config.max_backoff,
                                  config.retry_after_cap, config.max_age)
        self.last_error: str | None = None
        self._failures = 0
        self._paused_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = asyncio.Event()
        self._runner: asyncio.Task[None] | None = None
        #: Notified whenever an item is delivered, retried or dead-lettered.
        self.changed = asyncio.Condition()

    @property
    def attempt_timeout(self) -> float:
        """The longest one delivery attempt may take: the lease less a safety margin."""
        lease = self.config.lease
        return lease - min(5.0, lease / 10)

    @property
    def in_flight(self) -> int:
        """Items being delivered by this process now."""
        return len(self._tasks)

    @property
    def paused_for(self) -> float:
        """Seconds the breaker still holds claiming back (0 when delivering normally)."""
        return max(0.0, self._paused_until - time.monotonic())

    def start(self) -> None:
        """Start claiming and delivering in the background."""
        self._runner = asyncio.create_task(self._run(), name="livebridge-dispatcher")

    async def stop(self, timeout: float) -> None:
        """Stop claiming; let in-flight deliveries finish within ``timeout``, cancel the rest.

        A cancelled item keeps its place in the outbox and is delivered after the restart.
        """
        self._stopping.set()
        if self._runner is not None:
            await asyncio.gather(self._runner, return_exceptions=True)
        if self._tasks:
            _, pending = await asyncio.wait(self._tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                log.warning("shutdown: deliveries cut short, they stay queued", count=len(pending))

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                await self._step()
            except Exception as exc:  # the store is unreachable: keep trying, do not crash
                self.last_error = f"store: {exc}"
                log.error("delivery paused: store error", error=str(exc))
                await self._wait(1.0)

    async def _step(self) -> None:
        if self.paused_for:
            await self._wait(self.paused_for)
            return
        free = self.config.concurrency - len(self._tasks)
        if free <= 0:
            await self._until_stopping(asyncio.wait(self._tasks,
                                                    return_when=asyncio.FIRST_COMPLETED))
            return
        items = await self.store.claim(free, self.config.lease)
        if not items:
            await self._until_stopping(self.store.wait_for_work(_POLL))
            return
        for item in items:
            task = asyncio.create_task(self._deliver(item))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _until_stopping(self, waiting: Awaitable[object]) -> None:
        """Wait for ``waiting`` or for ``stop()``, whichever comes first."""
        waiters = [asyncio.ensure_future(waiting), asyncio.ensure_future(self._stopping.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _deliver(self, item: OutboxItem) -> None:
        try:
            await self._attempt(item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed while recording the outcome
            self.last_error = f"store: {exc}"
            log.error("could not record a delivery outcome; the item is retried when its lease "
                      "expires", item=item.id, source=item.source, error=str(exc))
        async with self.changed:
            self.changed.notify_all()

    async def _attempt(self, item: OutboxItem) -> None:
        labels = (item.source, item.kind)
        try:
            # An attempt must end before its lease does, or the item would be claimed again
            # while this attempt still runs (a duplicate, out of order).
            async with asyncio.timeout(self.attempt_timeout):
                await self.handlers[item.kind](item)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._failed(item, Retryable(
                f"attempt timed out after {self.attempt_timeout:.1f} s"), labels)
            return
        except Exception as exc:
            await self._failed(item, exc, labels)
            return
        self._failures = 0
        await self.store.complete(item)
        m = self.metrics
        m.labels(m.delivered, *labels).inc()
        m.labels(m.latency, item.source).observe(time.time() - item.created_at)

    async def _failed(self, item: OutboxItem, exc: Exception, labels: tuple[str, str]) -> None:
        outcome = classify(exc)
        self.last_error = str(outcome)
        age = time.time() - item.created_at
        if isinstance(outcome, Retryable) and age < self.policy.max_age:
            if isinstance(exc, LivedeskError):
                self._trip(outcome.retry_after)
            delay = self.policy.delay(item.attempts, outcome.retry_after)
            log.warning("delivery failed, will retry", item=item.id, source=item.source,
                        attempt=item.attempts + 1, retry_in=round(delay, 2), error=str(outcome))
            await self.store.retry(item, delay, str(outcome))
            self.metrics.labels(self.metrics.retried, *labels).inc()
            return
        reason = str(outcome)
        if isinstance(outcome, Retryable):
            reason = f"gave up after {item.attempts + 1} attempts over {age:.0f} s: {reason}"
        log.error("delivery failed, dead-lettered", item=item.id, source=item.source,
                  reason=reason)
        await self.store.dead_letter(item, reason, outcome.response)
        self.metrics.labels(self.metrics.dead_lettered, *labels).inc()

    def _trip(self, retry_after: float | None) -> None:
        """Count a Livedesk failure; past the threshold, pause all claiming for a while."""
        self._failures += 1
        pause = 0.0
        if retry_after is not None:
            pause = min(retry_after, self.policy.retry_after_cap)
        if self._failures >= self.config.breaker_threshold:
            over = self._failures - self.config.breaker_threshold
            pause = max(pause, self.policy.initial, self.policy.delay(over))
        if pause:
            until = time.monotonic() + pause
            if until > self._paused_until:
                self._paused_until = until
                log.warning("Livedesk is failing: pausing delivery", seconds=round(pause, 2),
                            consecutive_failures=self._failures)
