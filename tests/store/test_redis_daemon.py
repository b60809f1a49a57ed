"""A daemon on a Redis store under load, over real sockets: its connection pool waits when
busy instead of failing."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import aiohttp
import pytest
import redis.asyncio as aioredis

from livebridge.testing import BridgeHarness

from .conftest import Backend

pytestmark = pytest.mark.redis

MakeBridge = Callable[..., Awaitable[BridgeHarness]]


async def test_a_burst_of_form_posts_is_taken_whole(
    make_bridge: MakeBridge, redis_backend: Backend,
) -> None:
    """500 concurrent posts need more connections than the pool has: they wait for one,
    and every post is answered 2xx and stored (delivered); the daemon opens no more
    connections than ``store.max_connections``."""
    posts, name = 500, redis_backend.prefix.replace(":", "-")
    bridge = await make_bridge({
        "store": {"url": f"{redis_backend.url}&client_name={name}"},
        "sources": [{"type": "form", "rate_limit": 10_000}],
        "server": {"max_connections_per_client": 0},  # 500 at once, all from 127.0.0.1
    })
    pool = bridge.daemon.config.store.max_connections
    assert pool < posts

    async def post(session: aiohttp.ClientSession, i: int) -> int:
        async with session.post(bridge.url("/form"), headers={"Accept": "application/json"},
                                json={"email": f"c{i}@example.com", "message": f"m{i}"}) as resp:
            return resp.status

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        statuses = await asyncio.gather(*(post(session, i) for i in range(posts)))
    assert sorted(set(statuses)) == [200], {s: statuses.count(s) for s in set(statuses)}
    assert redis_backend.redis_url is not None
    admin = aioredis.Redis.from_url(redis_backend.redis_url, decode_responses=True)
    try:
        opened = [c for c in await admin.client_list() if c["name"] == name]
    finally:
        await admin.aclose()
    assert 1 < len(opened) <= pool  # idle ones stay open in the pool
    messages = bridge.emulator.state.messages
    await bridge.wait_for(lambda: len(messages) == posts, timeout=120)
    assert sorted(m["content"] for m in messages.values()) == sorted(
        f"m{i}" for i in range(posts))
