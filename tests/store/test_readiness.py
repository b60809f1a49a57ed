"""``/readyz`` over HTTP: not ready while the store answers but cannot take a write, with the
reason, and ready again once it can."""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from livebridge._store import sqlite as sqlite_store
from livebridge.exceptions import StoreUnavailable
from livebridge.testing import BridgeHarness

from .redis_server import RedisServer, free_port

MakeBridge = Callable[..., Awaitable[BridgeHarness]]


async def not_ready_because(bridge: BridgeHarness) -> str:
    """``/readyz``'s reason for 503 (fails if it says ready)."""
    resp = await bridge.client.get("/readyz")
    info = await resp.json()
    assert (resp.status, info["ready"], info["store_ok"]) == (503, False, False), info
    return str(info["store_error"])


async def ready(bridge: BridgeHarness) -> bool:
    return (await bridge.client.get("/readyz")).status == 200


async def test_sqlite_store_locked_by_another_writer_is_not_ready(
    make_bridge: MakeBridge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sqlite_store, "_BUSY_TIMEOUT", 0.2)  # how long a write waits for it
    db = tmp_path / "ready.db"
    bridge = await make_bridge({"store": {"url": f"sqlite:///{db}"}})
    assert await ready(bridge)
    other = sqlite3.connect(db, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock: reads still work
        assert "database is locked" in await not_ready_because(bridge)
        other.execute("COMMIT")
    finally:
        other.close()
    assert await ready(bridge)


@pytest.mark.redis
@pytest.mark.parametrize(("refuse", "restore", "reason"), [
    ([("CONFIG", "SET", "min-replicas-to-write", "1")],
     [("CONFIG", "SET", "min-replicas-to-write", "0")], "NOREPLICAS"),
    ([("REPLICAOF", "127.0.0.1", str(free_port()))], [("REPLICAOF", "NO", "ONE")],
     "read only replica"),
], ids=["too-few-replicas", "read-only-replica"])
async def test_redis_that_refuses_writes_is_not_ready(
    make_bridge: MakeBridge, tmp_path: Path, echo: Any,
    echo_post: Callable[..., dict[str, Any]], refuse: list[tuple[str, ...]],
    restore: list[tuple[str, ...]], reason: str,
) -> None:
    """Not ready, and posts answered 503 + Retry-After (not 500), until Redis takes writes."""
    server = RedisServer(tmp_path)  # a private server: its configuration is changed
    server.start()
    admin = aioredis.Redis.from_url(server.url)
    try:
        bridge = await make_bridge({"sources": [{"type": "echo"}],
                                    "store": {"url": server.url}}, plugins=[echo])
        assert await ready(bridge)
        for command in refuse:
            await admin.execute_command(*command)
        assert await admin.ping()  # it still answers
        assert reason in await not_ready_because(bridge)
        refused = await bridge.client.post("/echo", json=echo_post(1))
        assert (refused.status, refused.headers["Retry-After"]) == (
            503, str(StoreUnavailable.retry_after))
        for command in restore:
            await admin.execute_command(*command)
        assert await ready(bridge)
        assert (await bridge.client.post("/echo", json=echo_post(1))).status == 200
        await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    finally:
        await admin.aclose()
        server.stop()
