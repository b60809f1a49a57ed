"""A daemon on a Redis store while Redis goes away and comes back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from livebridge.exceptions import Retryable, StoreUnavailable
from livebridge.outbox import classify
from livebridge.testing import BridgeHarness

from .redis_server import RedisServer
from .test_contract import eventually

pytestmark = pytest.mark.redis


def test_store_trouble_during_delivery_is_retried() -> None:
    assert isinstance(classify(StoreUnavailable("Redis is unreachable")), Retryable)


async def test_daemon_rides_out_a_redis_outage(
    tmp_path: Path, make_bridge: Callable[..., Awaitable[BridgeHarness]], echo: Any,
    echo_post: Callable[..., dict[str, Any]],
) -> None:
    """Sources answer 503 and /readyz says not ready while Redis is down; the daemon keeps
    running, and delivery resumes with what was accepted before."""
    server = RedisServer(tmp_path, appendonly=True)
    server.start()
    try:
        bridge = await make_bridge({"sources": [{"type": "echo"}],
                                    "store": {"url": server.url}}, plugins=[echo])
        client, messages = bridge.client, bridge.emulator.state.messages
        assert (await client.post("/echo", json=echo_post(1, text="one"))).status == 200
        await bridge.wait_for(lambda: len(messages) == 1)
        assert (await client.get("/readyz")).status == 200

        server.stop()
        resp = await client.post("/echo", json=echo_post(2, text="two"))
        assert resp.status == 503
        assert resp.headers["Retry-After"] == str(StoreUnavailable.retry_after)
        ready = await client.get("/readyz")
        assert ready.status == 503
        assert (await ready.json())["store_ok"] is False
        assert (await client.get("/healthz")).status == 200
        dispatcher = bridge.daemon.dispatcher
        assert dispatcher is not None
        await eventually(lambda: _async(dispatcher.last_error or ""),
                         lambda error: error.startswith("store:"))

        server.start()
        await eventually(lambda: client.get("/readyz"), lambda r: r.status == 200)
        assert (await client.post("/echo", json=echo_post(2, text="two"))).status == 200
        await bridge.wait_for(lambda: len(messages) == 2)
        assert [m["content"] for m in messages.values()] == ["hi: one", "hi: two"]
    finally:
        server.stop()


async def _async(value: str) -> str:
    return value
