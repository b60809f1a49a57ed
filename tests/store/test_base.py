"""The pieces the stores share (livebridge/_store/base.py)."""

from __future__ import annotations

import asyncio

import pytest

from livebridge._store.base import OutboxItem, Store, _LocalLocks
from livebridge._store.redis import RedisStore
from livebridge._store.sqlite import SQLiteStore


def test_outbox_item_without_a_claim() -> None:
    item = OutboxItem("1", "inbound", "src", "t", "p", 0.0)
    assert (item.attempts, item.last_error, item.claim) == (0, None, None)


def test_stores_share_wait_for_work() -> None:
    assert SQLiteStore.wait_for_work is Store.wait_for_work
    assert RedisStore.wait_for_work is Store.wait_for_work


async def test_local_locks_exclude_and_are_forgotten() -> None:
    locks = _LocalLocks()
    inside = most = 0

    async def worker() -> None:
        nonlocal inside, most
        for _ in range(3):
            async with locks.hold("x"):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.001)
                inside -= 1

    await asyncio.gather(*(worker() for _ in range(5)))
    assert most == 1
    assert len(locks) == 0


async def test_local_lock_timeout_and_cancel_leave_nothing_behind() -> None:
    locks = _LocalLocks()
    async with locks.hold("x"):
        with pytest.raises(TimeoutError, match="'x' not acquired"):
            async with locks.hold("x", timeout=0.05):
                pass
        waiter = asyncio.create_task(_enter(locks, "x"))
        await asyncio.sleep(0.01)
        waiter.cancel()
        await asyncio.gather(waiter, return_exceptions=True)
        assert len(locks) == 1
        async with locks.hold("y", timeout=1):  # other names do not wait
            assert len(locks) == 2
    assert len(locks) == 0
    await asyncio.wait_for(_enter(locks, "x"), 1)


async def _enter(locks: _LocalLocks, name: str) -> None:
    async with locks.hold(name):
        pass
