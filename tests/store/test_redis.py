"""What only the Redis store promises: several daemons (store instances) on one server,
takeover of a dead daemon's work, and outages."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from livebridge._store.redis import RedisStore, split_url
from livebridge.exceptions import StoreUnavailable

from .conftest import Backend
from .redis_server import RedisServer, free_port
from .test_contract import FAR, claim_one, eventually, hammer, put, subscribed

pytestmark = pytest.mark.redis


def test_url_prefix() -> None:
    assert split_url("redis://h:1/2") == ("redis://h:1/2", "livebridge:")
    assert split_url("redis://h:1/2?prefix=x:&socket_timeout=3") == (
        "redis://h:1/2?socket_timeout=3", "x:")


async def test_prefixes_keep_deployments_apart(redis_backend: Backend) -> None:
    mine = await redis_backend.open()
    other = RedisStore(f"{redis_backend.redis_url}?prefix={redis_backend.prefix}other:")
    await other.open()
    try:
        await put(mine, "a")
        await mine.kv_set("ns", "k", "v")
        assert await other.depth() == 0
        assert await other.claim(10, FAR) == []
        assert await other.kv_get("ns", "k") is None
        assert await put(other, "a")  # its own dedupe records too
    finally:
        await other.close()


async def test_lock_excludes_across_instances(redis_backend: Backend) -> None:
    stores = [await redis_backend.open(), await redis_backend.open()]
    assert await hammer(stores, "contact:1|form|a", tasks=6) == 1


async def test_lock_times_out_while_held_elsewhere(redis_backend: Backend) -> None:
    a, b = await redis_backend.open(), await redis_backend.open()
    async with a.lock("x"):
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            async with b.lock("x", timeout=0.3):
                pass
        assert 0.25 < time.monotonic() - started < 3
    async with b.lock("x", timeout=1):
        pass


async def test_held_lock_is_renewed(redis_backend: Backend) -> None:
    a, b = await redis_backend.open(), await redis_backend.open()
    assert isinstance(a, RedisStore)
    a.lock_ttl = 0.3
    async with a.lock("x"):
        with pytest.raises(TimeoutError):  # three times the lock's ttl: still held
            async with b.lock("x", timeout=1.0):
                pass


async def test_lock_of_a_dead_daemon_runs_out(redis_backend: Backend) -> None:
    store = await redis_backend.open()
    assert redis_backend.redis_url is not None
    raw = aioredis.Redis.from_url(redis_backend.redis_url)
    try:  # a holder that died without releasing, as a SIGKILLed daemon leaves it
        await raw.set(f"{redis_backend.prefix}lock:x", "dead-token", px=300)
    finally:
        await raw.aclose()
    started = time.monotonic()
    async with store.lock("x", timeout=5):
        assert time.monotonic() - started >= 0.2


async def test_work_of_a_dead_daemon_is_taken_over(redis_backend: Backend) -> None:
    dead, alive = await redis_backend.open(), await redis_backend.open()
    for key in "ab":
        await put(alive, key)
    lost = await claim_one(dead, lease=0.3)
    await redis_backend.close(dead)  # dies without completing
    assert await alive.claim(10, FAR) == []
    taken = await eventually(lambda: alive.claim(10, FAR), bool)
    assert [i.id for i in taken] == [lost.id]
    await alive.complete(taken[0])
    assert (await claim_one(alive)).payload == "b"


async def test_late_retry_after_takeover_is_ignored(redis_backend: Backend) -> None:
    slow, other = await redis_backend.open(), await redis_backend.open()
    await put(slow, "a")
    await put(slow, "b")
    first = await claim_one(slow, lease=0.2)
    [taken] = await eventually(lambda: other.claim(10, FAR), bool)
    await slow.retry(first, FAR, "timed out")  # must not push back the new holder's work
    await other.complete(taken)
    nxt = await claim_one(other)
    assert nxt.payload == "b"
    assert (await other.stats()).in_flight == 1


async def test_enqueue_wakes_other_daemons(redis_backend: Backend) -> None:
    waiting, writer = await redis_backend.open(), await redis_backend.open()
    assert redis_backend.redis_url is not None
    await subscribed(redis_backend.redis_url, redis_backend.prefix, 2)
    await waiting.wait_for_work(0.05)  # take the "subscribed" signal
    woke = asyncio.create_task(waiting.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not woke.done()
    await put(writer, "a")
    await asyncio.wait_for(woke, 5)


async def test_unreachable_redis_is_store_unavailable() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    await store.open()  # does not raise: the daemon starts and reports not ready
    try:
        for call in (store.ping(), store.depth(), put(store, "a"), store.claim(1, 1),
                     store.kv_get("n", "k"), store.seen("s", "k"), store.stats(),
                     store.dead_letters()):
            with pytest.raises(StoreUnavailable):
                await call
        with pytest.raises(StoreUnavailable):
            async with store.lock("x", timeout=1):
                pass
        await store.wait_for_work(0.1)
    finally:
        await store.close()
    assert time.monotonic() - started < 10


async def test_outage_and_recovery(tmp_path: Path) -> None:
    """Redis stops and comes back (with an append-only file): calls fail meanwhile with
    StoreUnavailable, then everything accepted before is still there."""
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    store = RedisStore(server.url)
    other = RedisStore(server.url)
    try:
        await store.open()
        await other.open()
        await put(store, "a")
        await store.kv_set("contact", "k", "1")
        server.stop()
        with pytest.raises(StoreUnavailable):
            await put(store, "b")
        with pytest.raises(StoreUnavailable):
            await store.ping()
        server.start()
        await eventually(store.depth, lambda n: n == 1)
        assert await store.kv_get("contact", "k") == "1"
        assert (await claim_one(store)).payload == "a"
        await subscribed(server.url, "livebridge:", 2)  # both resubscribed after the outage
        await other.wait_for_work(0.05)
        woke = asyncio.create_task(other.wait_for_work(30))
        await asyncio.sleep(0.1)
        assert not woke.done()
        await put(store, "b", thread="t2")
        await asyncio.wait_for(woke, 5)
    finally:
        await store.close()
        await other.close()
        server.stop()
