"""The outbox's delivery engine: routes, each with its own breaker, rate and concurrency.

The outbox feeds several *routes* (the inbound route to Livedesk, a reply route per source).
Each route claims only its own items and is its own failure domain, so trouble on one never
holds another:

- **Throttles** (``Throttled``, a 429) pause the route for ``Retry-After`` (capped) once per
  burst, not once per concurrent answer, and lower its adaptive rate (``RateLimiter``); the
  item goes back without counting an attempt.
- **Outages** (``Unavailable``: transport errors, timeouts, 5xx) count toward the route's
  ``Breaker``: after ``breaker_threshold`` in a row it opens and lets one probe through every
  few seconds; the first success closes it, and the items that waited go out at once.
- **Per-item errors** (any other ``Retryable``) back off per item with full jitter (after
  Vector and Redpanda Connect); ``Permanent`` errors, and items older than ``max_age``, go
  to the dead letters with the reason and the last response; the route's
  ``on_dead_letter`` then hears of it (the reply routes tell the agent).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import structlog

from livebridge._config import DeliveryConfig
from livebridge._store import OutboxItem, Store
from livebridge.exceptions import (
    Permanent,
    ReplyNotSupported,
    Retryable,
    StoreUnavailable,
    Throttled,
    Unavailable,
)
from livebridge.metrics import Metrics

__all__ = ["Breaker", "Dispatcher", "Flow", "RateLimiter", "RetryPolicy", "Route", "classify"]

log = structlog.get_logger("livebridge._outbox")

Clock = Callable[[], float]
BreakerState = Literal["closed", "open", "half-open"]

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
    if isinstance(exc, aiohttp.ClientError | TimeoutError | OSError):
        return Unavailable(f"{type(exc).__name__}: {exc}")
    return Permanent(f"internal error: {type(exc).__name__}: {exc}")


class Breaker:
    """Closed, open, half-open (after resilience4j's CircuitBreaker).

    ``threshold`` failures in a row open it. While open, ``allow()`` lets one probe through
    every ``probe_interval`` seconds (doubling after each failed probe, up to ``probe_cap``);
    the first success closes it.
    """

    def __init__(self, threshold: int, probe_interval: float, probe_cap: float,
                 clock: Clock = time.monotonic) -> None:
        self.threshold = threshold
        self.probe_interval = probe_interval
        self.probe_cap = max(probe_cap, probe_interval)
        self._clock = clock
        self.failures = 0
        self._failed_probes = 0
        self._opened = False
        self._probing = False
        self._next_probe = 0.0

    @property
    def state(self) -> BreakerState:
        """``closed`` (full pace), ``open`` (waiting to probe) or ``half-open`` (probing)."""
        if not self._opened:
            return "closed"
        return "half-open" if self._probing else "open"

    @property
    def wait(self) -> float:
        """Seconds until the next probe may start (0 when closed or due)."""
        if not self._opened or self._probing:
            return 0.0
        return max(0.0, self._next_probe - self._clock())

    def allow(self) -> int:
        """How many attempts may start now: unlimited (-1) when closed; 1 when a probe is
        due (the caller's next attempt is the probe), else 0."""
        if not self._opened:
            return -1
        if self._probing or self._clock() < self._next_probe:
            return 0
        self._probing = True
        return 1

    def unclaimed(self) -> None:
        """The probe that ``allow()`` granted found nothing to send: grant it again later."""
        self._probing = False

    def success(self) -> None:
        """The receiver answered: close."""
        if self._opened:
            log.info("breaker closed: the receiver answers again")
        self.failures = self._failed_probes = 0
        self._opened = self._probing = False

    def failure(self) -> None:
        """The receiver failed (down, unreachable): count it; open past the threshold."""
        self.failures += 1
        if self._probing:
            self._failed_probes += 1
        elif self._opened or self.failures < self.threshold:
            return
        self._opened, self._probing = True, False
        interval = self.probe_interval * 2 ** min(self._failed_probes, 16)
        self._next_probe = self._clock() + min(self.probe_cap, interval)


class RateLimiter:
    """A client-side rate limit that adapts to throttling: the CUBIC-based limiter of the AWS
    SDKs' adaptive retry mode.

    Unlimited (up to ``ceiling``, 0 = none) until the first throttle. A throttle sets the
    rate to ``beta`` times the rate measured over the last second; from there it climbs back
    along a cubic curve that flattens out at the rate that was throttled, and only then
    probes beyond it. At most ``burst`` calls (and one second's worth) go at once; once
    throttled, calls are paced more evenly (see ``_capacity``).
    """

    beta = 0.7
    scale = 0.4
    min_rate = 0.5

    def __init__(self, ceiling: float = 0.0, burst: int = 100,
                 clock: Clock = time.monotonic) -> None:
        self.ceiling = ceiling if ceiling > 0 else math.inf
        self.burst = burst
        self._clock = clock
        self._throttled = False
        self._last_max = math.inf
        self._throttled_at = 0.0
        self._window = 0.0  # K: how long the cubic curve takes back up to _last_max
        self._sent: deque[float] = deque()
        self._hold_until = 0.0
        self._tokens = float(self._capacity(self.ceiling))
        self._stamp = clock()
        self._lock = asyncio.Lock()

    @property
    def rate(self) -> float:
        """Calls a second allowed now (``inf``: no limit)."""
        if not self._throttled:
            return self.ceiling
        t = self._clock() - self._throttled_at - self._window
        return min(self.ceiling, max(self.min_rate, self.scale * t ** 3 + self._last_max))

    @property
    def measured(self) -> float:
        """Calls sent in the last second."""
        self._forget_old()
        return float(len(self._sent))

    def _forget_old(self) -> None:
        horizon = self._clock() - 1.0
        while self._sent and self._sent[0] <= horizon:
            self._sent.popleft()

    def throttled(self, hold: float = 0.0) -> None:
        """The receiver throttled a call: send nothing for ``hold`` seconds (its
        ``Retry-After``), then at ``beta`` times the pace measured."""
        sent = max(self.measured, self.min_rate)
        base = min(sent, self.rate)
        self._last_max = base
        self._window = (base * (1 - self.beta) / self.scale) ** (1 / 3)
        self._throttled_at = self._stamp = self._clock()
        self._hold_until = self._throttled_at + hold
        self._throttled = True
        self._tokens = min(self._tokens, float(self._capacity(self.rate)))

    async def acquire(self) -> None:
        """Wait until a call may be sent."""
        async with self._lock:
            while (rate := self.rate) != math.inf:
                now = self._clock()
                if now < self._hold_until:
                    await asyncio.sleep(self._hold_until - now)
                    continue
                self._tokens = min(float(self._capacity(rate)),
                                   self._tokens + (now - self._stamp) * rate)
                self._stamp = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    break
                await asyncio.sleep((1 - self._tokens) / rate)
            self._sent.append(self._clock())
            self._forget_old()

    def _capacity(self, rate: float) -> int:
        """Tokens the bucket holds at most: ``burst`` (a second's worth at most); once
        throttled, a tenth of a second's worth, since the receiver's own burst is unknown."""
        if rate == math.inf:
            return self.burst
        return max(1, min(self.burst, math.ceil(rate / 10 if self._throttled else rate)))


@dataclass
class Flow:
    """A route's flow control: how many items at once, its breaker, its rate, and the
    longest pause a throttle (``Retry-After``) may impose."""

    concurrency: int
    breaker: Breaker
    limiter: RateLimiter
    pause_cap: float


class Route(ABC):
    """One direction of delivery (``livedesk``, ``reply:<source>``): what delivers its items,
    with its own ``Flow`` (concurrency, breaker, adaptive rate, throttle pause)."""

    def __init__(self, name: str, flow: Flow, clock: Clock = time.monotonic) -> None:
        self.name = name
        self.concurrency = flow.concurrency
        self.breaker = flow.breaker
        self.limiter = flow.limiter
        self.pause_cap = flow.pause_cap
        self.throttles = 0
        self.clock = clock
        self._paused_until = 0.0
        self._paused_at = -math.inf
        self.tasks: set[asyncio.Task[None]] = set()

    @abstractmethod
    async def deliver(self, item: OutboxItem) -> None:
        """Deliver one item; raise ``Retryable`` (``Throttled``, ``Unavailable``) or
        ``Permanent`` when it did not go."""

    async def on_dead_letter(self, item: OutboxItem, reason: str) -> None:  # noqa: B027
        """``item`` was dead-lettered for ``reason`` (it is stored as such already); does
        nothing unless a route overrides it. Its errors are logged, never undo it."""

    @property
    def paused_for(self) -> float:
        """Seconds the route still waits: a throttle's pause, or until the breaker's probe."""
        return max(0.0, self._paused_until - self.clock(), self.breaker.wait)

    def pause(self, started: float, retry_after: float | None) -> bool:
        """An attempt started at ``started`` was told to wait ``retry_after`` s: pause the
        route (capped), unless the current pause was set after that attempt began (the
        concurrent answers of one burst pause it once). Returns whether it paused."""
        if started < self._paused_at:
            return False
        now = self.clock()
        self._paused_at = now
        self._paused_until = now + min(retry_after or 0.0, self.pause_cap)
        return True

    def capacity(self) -> int:
        """How many more items the route may start now."""
        free = self.concurrency - len(self.tasks)
        if free <= 0 or self._paused_until > self.clock():
            return 0  # (before allow(): a probe it grants must be sent)
        allowed = self.breaker.allow()
        return free if allowed < 0 else min(free, allowed)

    def describe(self) -> dict[str, Any]:
        """The route's state, for ``/readyz``."""
        rate = self.limiter.rate
        return {"breaker": self.breaker.state, "paused_for": round(self.paused_for, 1),
                "rate": None if rate == math.inf else round(rate, 1),
                "in_flight": len(self.tasks), "throttles": self.throttles}


class Dispatcher:
    """Runs each route's delivery workers over a ``Store``'s outbox."""

    def __init__(self, store: Store, routes: Sequence[Route], config: DeliveryConfig,
                 metrics: Metrics) -> None:
        self.store = store
        self.routes = {route.name: route for route in routes}
        self.config = config
        self.metrics = metrics
        self.policy = RetryPolicy(config.initial_backoff, config.max_backoff,
                                  config.retry_after_cap, config.max_age)
        self.last_error: str | None = None
        self._stopping = asyncio.Event()
        self._runners: list[asyncio.Task[None]] = []
        self._heartbeat_task: asyncio.Task[None] | None = None
        #: The items being delivered now, whose leases the heartbeat renews.
        self._leased: dict[str, OutboxItem] = {}
        #: Notified whenever an item is delivered, retried or dead-lettered.
        self.changed = asyncio.Condition()

    @property
    def attempt_timeout(self) -> float:
        """The longest one delivery attempt may take (its lease is renewed meanwhile)."""
        return self.config.attempt_timeout

    @property
    def in_flight(self) -> int:
        """Items being delivered by this process now."""
        return sum(len(route.tasks) for route in self.routes.values())

    def start(self) -> None:
        """Start claiming and delivering in the background, one runner per route."""
        self._runners = [asyncio.create_task(self._run(route), name=f"livebridge-{name}")
                         for name, route in self.routes.items()]
        self._heartbeat_task = asyncio.create_task(self._heartbeat(), name="livebridge-leases")

    async def stop(self, timeout: float) -> None:
        """Stop claiming; let in-flight deliveries finish within ``timeout``, cancel the rest.

        A cancelled item keeps its place in the outbox and is delivered after the restart.
        """
        self._stopping.set()
        await asyncio.gather(*self._runners, return_exceptions=True)
        tasks = [task for route in self.routes.values() for task in route.tasks]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            if pending:
                log.warning("shutdown: deliveries cut short, they stay queued", count=len(pending))
        if self._heartbeat_task is not None:  # last: the leases of what still ran stay renewed
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)

    async def _run(self, route: Route) -> None:
        while not self._stopping.is_set():
            try:
                await self._step(route)
            except Exception as exc:  # the store is unreachable: keep trying, do not crash
                self.last_error = f"store: {exc}"
                log.error("delivery paused: store error", route=route.name, error=str(exc))
                await self._wait(1.0)

    async def _step(self, route: Route) -> None:
        free = route.capacity()
        if free <= 0:
            waiting: list[Awaitable[Any]] = [asyncio.sleep(route.paused_for or _POLL)]
            if route.tasks:
                waiting.append(asyncio.wait(route.tasks, return_when=asyncio.FIRST_COMPLETED))
            await self._until_stopping(*waiting)
            return
        items: list[OutboxItem] = []
        try:
            items = await self.store.claim(free, self.config.lease, route=route.name)
        finally:
            if not items and route.breaker.state == "half-open":
                route.breaker.unclaimed()  # the probe granted by capacity() found nothing
        if not items:
            await self._until_stopping(self.store.wait_for_work(_POLL))
            return
        for item in items:
            self._leased[item.id] = item
            task = asyncio.create_task(self._deliver(route, item))
            route.tasks.add(task)
            task.add_done_callback(route.tasks.discard)

    async def _until_stopping(self, *waiting: Awaitable[Any]) -> None:
        """Wait for the first of ``waiting`` or for ``stop()``."""
        waiters = [asyncio.ensure_future(w) for w in (*waiting, self._stopping.wait())]
        _, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        for waiter in pending:
            waiter.cancel()

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _heartbeat(self) -> None:
        """Renew the leases of the items being delivered, three times a lease: a daemon that
        dies holds its items for at most one (short) lease, a live one keeps them however long
        an attempt takes (up to ``attempt_timeout``)."""
        lease = self.config.lease
        while True:  # until stop() cancels it, after the last attempt ended
            await asyncio.sleep(lease / 3)
            if self._leased:
                try:
                    await self.store.renew(list(self._leased.values()), lease)
                except Exception as exc:  # the store blipped: the next beat tries again
                    log.warning("could not renew delivery leases", error=str(exc))

    async def _deliver(self, route: Route, item: OutboxItem) -> None:
        try:
            await self._attempt(route, item)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store failed while recording the outcome
            self.last_error = f"store: {exc}"
            log.error("could not record a delivery outcome; the item is retried when its lease "
                      "expires", item=item.id, source=item.source, error=str(exc))
        finally:
            self._leased.pop(item.id, None)
            if route.breaker.state == "half-open":  # the probe ended without telling the
                route.breaker.unclaimed()  # breaker (a 429, a per-item error): probe again
        async with self.changed:
            self.changed.notify_all()

    async def _attempt(self, route: Route, item: OutboxItem) -> None:
        labels = (item.source, item.kind)
        started = route.clock()
        try:
            # The heartbeat renews the item's lease while this runs; the timeout bounds what a
            # hung receiver can hold.
            async with asyncio.timeout(self.attempt_timeout):
                await route.deliver(item)
        except asyncio.CancelledError:
            raise
        except TimeoutError:
            await self._failed(route, item, Unavailable(
                f"attempt timed out after {self.attempt_timeout:.1f} s"), started, labels)
            return
        except Exception as exc:
            await self._failed(route, item, classify(exc), started, labels)
            return
        route.breaker.success()
        await self.store.complete(item)
        m = self.metrics
        m.labels(m.delivered, *labels).inc()
        m.labels(m.latency, item.source).observe(time.time() - item.created_at)

    async def _failed(self, route: Route, item: OutboxItem, outcome: Retryable | Permanent,
                      started: float, labels: tuple[str, str]) -> None:
        self.last_error = str(outcome)
        age = time.time() - item.created_at
        if isinstance(outcome, Retryable) and age < self.policy.max_age:
            await self._retry(route, item, outcome, started)
            self.metrics.labels(self.metrics.retried, *labels).inc()
            return
        reason = str(outcome)
        if isinstance(outcome, Retryable):
            reason = f"gave up after {item.attempts + 1} attempts over {age:.0f} s: {reason}"
        else:
            route.breaker.success()  # the receiver answered (it refused this item)
        log.error("delivery failed, dead-lettered", item=item.id, source=item.source,
                  reason=reason)
        await self.store.dead_letter(item, reason, outcome.response)
        self.metrics.labels(self.metrics.dead_lettered, *labels).inc()
        try:  # bounded like an attempt: a throttled or slow receiver must not hold the slot
            async with asyncio.timeout(self.attempt_timeout):
                await route.on_dead_letter(item, reason)
        except Exception as exc:
            log.error("dead-letter hook failed; the dead letter is kept", route=route.name,
                      item=item.id, error=f"{type(exc).__name__}: {exc}")

    async def _retry(self, route: Route, item: OutboxItem, outcome: Retryable,
                     started: float) -> None:
        count = True
        if isinstance(outcome, Throttled):
            if route.pause(started, outcome.retry_after or self.policy.initial):
                route.limiter.throttled(hold=route.paused_for)
                route.throttles += 1
                self.metrics.labels(self.metrics.throttles, route.name).inc()
                log.warning("throttled: pausing the route", route=route.name,
                            seconds=round(route.paused_for, 2), rate=route.describe()["rate"])
            delay, count = route.paused_for, False
        elif isinstance(outcome, Unavailable):
            # The receiver's trouble, not the item's: the breaker decides when it goes again
            # (a 503's Retry-After is not honoured: the probes find the way back sooner).
            was = route.breaker.state
            route.breaker.failure()
            if route.breaker.state == "closed":  # below the threshold: the item's backoff, so
                delay = self.policy.delay(item.attempts)  # a poison item backs off alone
            else:  # behind the open breaker: due with the next probe
                delay = route.paused_for
                if was == "closed":
                    log.warning("breaker open: the receiver is failing", route=route.name,
                                consecutive_failures=route.breaker.failures)
        else:
            delay = self.policy.delay(item.attempts, outcome.retry_after)
        log.warning("delivery failed, will retry", item=item.id, source=item.source,
                    route=route.name, attempt=item.attempts + count, retry_in=round(delay, 2),
                    error=str(outcome))
        await self.store.retry(item, delay, str(outcome), count=count)
