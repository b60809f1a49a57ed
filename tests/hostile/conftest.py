"""Shared helpers of the hostile-input suite: a linear-cost checker, a watcher of the health
endpoints, and a raw socket that sends slowly.

Every test here talks to a real daemon over a real socket (``make_bridge``), asserts the
answer code, that ``/healthz``, ``/readyz`` and ``/metrics`` kept answering while the hostile
request ran, and (where the cost depends on the input size) that the cost grows linearly.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
import pytest

from livebridge.testing import BridgeHarness

#: The watcher's own client address: a separate client for the per-address connection cap.
WATCHER_ADDRESS = "127.0.0.2"
HEALTH_PATHS = ("/healthz", "/readyz", "/metrics")


async def best_time(action: Callable[[], Awaitable[object]], runs: int) -> float:
    """The shortest of ``runs`` timings of ``action()`` (the least disturbed by noise)."""
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        await action()
        times.append(time.perf_counter() - start)
    return min(times)


async def assert_linear_cost(cost: Callable[[int], Awaitable[object]], size: int,
                             runs: int = 3, attempts: int = 3) -> None:
    """``cost(2 * size)`` takes at most 3x ``cost(size)`` (best of ``runs`` each): linear
    work passes with room for noise, quadratic work (4x) fails. A noisy machine gets up to
    ``attempts`` comparisons; quadratic work fails every one."""
    await cost(size)  # warm-up: imports, first connection
    ratios = []
    for _ in range(attempts):
        small = await best_time(lambda: cost(size), runs)
        large = await best_time(lambda: cost(2 * size), runs)
        if large <= 3 * small:
            return
        ratios.append(f"{small:.4f} s -> {large:.4f} s ({large / small:.1f}x)")
    raise AssertionError(f"not linear: {size} units, then {2 * size}: {'; '.join(ratios)}")


@dataclass
class _Polls:
    idle: list[float] = field(default_factory=list)
    during: list[float] = field(default_factory=list)
    elapsed: float = 0.0

    def stall(self) -> str | None:
        """Why the polls show the event loop waited for the request, or None: a poll took
        more than half the time the request ran (a request that blocks the loop stalls a poll
        for all of it) and more than 100x the idle median (short requests are noise)."""
        worst, idle = max(self.during), statistics.median(self.idle)
        if worst <= max(100 * idle, self.elapsed / 2):
            return None
        return (f"a poll took {worst:.3f} s of the request's {self.elapsed:.3f} s "
                f"(idle {idle:.4f} s)")


T = TypeVar("T")


@dataclass
class HealthWatcher:
    """Polls ``/healthz``, ``/readyz`` and ``/metrics`` in turn, from its own client address,
    while a hostile request runs."""

    bridge: BridgeHarness
    statuses: dict[str, set[int]] = field(default_factory=dict)

    async def during(self, action: Callable[[], Awaitable[T]], attempts: int = 3) -> T:
        """``await action()`` while polling; assert each endpoint answered 200 every time and
        the polls did not wait for the request. A stall from elsewhere on a shared machine
        (another process, a garbage collection) gets up to ``attempts`` runs; a request that
        blocks the event loop stalls every one. The result of the passing run."""
        stalls = []
        for _ in range(attempts):
            gc.collect()  # not during the request
            polls = _Polls()
            result = await self._watch(action, polls)
            assert self.statuses == {path: {200} for path in HEALTH_PATHS}, self.statuses
            stall = polls.stall()
            if stall is None:
                return result
            stalls.append(stall)
        raise AssertionError(f"health endpoints stalled while the request ran: {stalls}")

    async def _poll(self, session: aiohttp.ClientSession, into: list[float],
                    until: asyncio.Event, count: int | None = None) -> None:
        polled = 0
        while not until.is_set() and polled != count:
            path = HEALTH_PATHS[polled % len(HEALTH_PATHS)]
            start = time.perf_counter()
            async with session.get(self.bridge.url(path)) as resp:
                await resp.read()
                self.statuses.setdefault(path, set()).add(resp.status)
            into.append(time.perf_counter() - start)
            polled += 1

    async def _watch(self, action: Callable[[], Awaitable[T]], polls: _Polls) -> T:
        """Poll while ``action`` runs; the poll under way when it ends is awaited, so at
        least one overlaps it. A few polls before measure the idle latency."""
        connector = aiohttp.TCPConnector(local_addr=(WATCHER_ADDRESS, 0), force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            done = asyncio.Event()
            await self._poll(session, polls.idle, done, 3 * len(HEALTH_PATHS))
            task = asyncio.create_task(self._poll(session, polls.during, done))
            await asyncio.sleep(0)  # the first poll is sent before the hostile request
            started = time.perf_counter()
            try:
                return await action()
            finally:
                polls.elapsed = time.perf_counter() - started
                done.set()
                await task


@pytest.fixture
def health() -> Callable[[BridgeHarness], HealthWatcher]:
    """``health(bridge)``: a ``HealthWatcher`` of that daemon."""
    return HealthWatcher


@dataclass
class RawConnection:
    """A plain TCP connection to the daemon, for requests no HTTP client would send."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, bridge: BridgeHarness) -> RawConnection:
        """Connect to the daemon."""
        url = bridge.client.make_url("/")
        reader, writer = await asyncio.open_connection(url.host, url.port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        """Write ``data`` now."""
        self.writer.write(data)
        await self.writer.drain()

    async def send_slowly(self, data: bytes, interval: float, chunk: int = 1) -> bool:
        """Write ``data`` ``chunk`` bytes every ``interval`` seconds (a slow client's pace);
        True if the daemon answered or closed the connection before all of it was sent."""
        closed = asyncio.create_task(self.reader.read(1))
        for start in range(0, len(data), chunk):
            if closed.done():
                return True
            try:
                await self.send(data[start:start + chunk])
            except ConnectionError:
                return True
            await asyncio.sleep(interval)  # the slow sender's pace, not a synchronisation
        closed.cancel()
        return False

    async def status(self) -> int:
        """The status code of the next answer, read whole (status line, headers, body)."""
        line = await self.reader.readline()
        assert line.startswith(b"HTTP/1."), line
        length = 0
        while (header := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = header.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return int(line.split()[1])

    def close(self) -> None:
        """Close the connection (abruptly, as a client going away)."""
        self.writer.transport.abort()


@pytest.fixture
async def raw(make_bridge: Any) -> AsyncIterator[Callable[[BridgeHarness], Awaitable[Any]]]:
    """``await raw(bridge)``: a ``RawConnection``, closed after the test."""
    opened: list[RawConnection] = []

    async def connect(bridge: BridgeHarness) -> RawConnection:
        conn = await RawConnection.open(bridge)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


async def nothing_stored(bridge: BridgeHarness) -> None:
    """Nothing reached the outbox or Livedesk."""
    await bridge.wait_idle()
    stats = await bridge.daemon.store.stats()
    assert (stats.depth, stats.dead_letters) == (0, 0)
    assert not bridge.emulator.state.messages and not bridge.emulator.state.contacts
