"""Test helpers for livebridge and for plugin authors (a pytest plugin, loaded automatically).

``make_bridge`` starts the real daemon application on a real socket, with a temporary SQLite
store and the Livedesk emulator behind it, so a test can post to a source over HTTP and look
at what reached Livedesk::

    async def test_my_source(make_bridge):
        bridge = await make_bridge({"sources": [{"type": "mine"}]}, plugins=[MyPlugin()])
        resp = await bridge.client.post("/mine", json={...})
        assert resp.status == 200
        await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from livebridge.app import DAEMON, Daemon, collect_source_types, create_app
from livebridge.config import Config, parse_config
from livebridge.livedesk.emulator import Emulator
from livebridge.plugins import get_plugin_manager

__all__ = ["BridgeHarness", "build_config", "make_bridge"]

Predicate = Callable[[], bool | Awaitable[bool]]


def build_config(raw: Mapping[str, Any], tmp_path: Path, plugins: Iterable[object] = (),
                 env: Mapping[str, str] | None = None) -> Config:
    """A validated config from ``raw``, with test defaults: a temporary SQLite store,
    the emulator, fast retries, and ``Retry-After`` capped at 1 s."""
    data: dict[str, Any] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in raw.items()}
    data.setdefault("store", {}).setdefault("url", f"sqlite:///{tmp_path / 'bridge.db'}")
    data.setdefault("logging", {}).setdefault("format", "console")
    delivery = data.setdefault("delivery", {})
    delivery.setdefault("initial_backoff", 0.01)
    delivery.setdefault("max_backoff", 0.2)
    delivery.setdefault("retry_after_cap", 1.0)
    delivery.setdefault("rate_limit", 0)
    pm = get_plugin_manager(plugins)
    return parse_config(data, collect_source_types(pm), env=env or {}, where="<test config>")


class BridgeHarness:
    """A running daemon on a real socket, with its emulator and a client."""

    def __init__(self, client: TestClient[Any, Any], emulator: Emulator) -> None:
        self.client = client
        self.emulator = emulator

    @property
    def daemon(self) -> Daemon:
        """The running daemon (store, sink, dispatcher, sources)."""
        app = self.client.app
        assert app is not None
        return app[DAEMON]

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the daemon."""
        return str(self.client.make_url(path))

    async def wait_for(self, predicate: Predicate, timeout: float = 10.0) -> None:
        """Wait until ``predicate()`` holds, re-checking whenever the outbox moves."""
        dispatcher = self.daemon.dispatcher
        assert dispatcher is not None
        async with dispatcher.changed:
            await _wait(dispatcher.changed, predicate, timeout)

    async def wait_idle(self, timeout: float = 10.0) -> None:
        """Wait until the outbox is empty and nothing is in flight."""

        async def idle() -> bool:
            stats = await self.daemon.store.stats()
            return stats.depth == 0 and self.daemon.dispatcher is not None and (
                self.daemon.dispatcher.in_flight == 0)

        await self.wait_for(idle, timeout)


async def _wait(condition: Any, predicate: Predicate, timeout: float) -> None:
    import asyncio

    async def check() -> bool:
        result = predicate()
        return bool(await result) if inspect.isawaitable(result) else bool(result)

    async def loop() -> None:
        while not await check():
            await condition.wait()

    try:
        await asyncio.wait_for(loop(), timeout)
    except TimeoutError:
        raise AssertionError(f"condition not met within {timeout} s") from None


@pytest.fixture
async def make_bridge(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[BridgeHarness]]]:
    """A factory: ``await make_bridge(config_dict, plugins=[...], env={...})``."""
    clients: list[TestClient[Any, Any]] = []

    async def factory(raw: Mapping[str, Any] | None = None, *, plugins: Iterable[object] = (),
                      env: Mapping[str, str] | None = None,
                      emulator: Emulator | None = None) -> BridgeHarness:
        """Start a daemon; pass ``emulator`` when ``livedesk.base_url`` points at one."""
        plugins = list(plugins)
        config = build_config(raw or {}, tmp_path / f"bridge{len(clients)}", plugins, env)
        app = create_app(config, get_plugin_manager(plugins))
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        emulator = emulator or app[DAEMON].emulator
        assert emulator is not None, "pass the Emulator that livedesk.base_url points at"
        return BridgeHarness(client, emulator)

    yield factory
    for client in reversed(clients):
        await client.close()
