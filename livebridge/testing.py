"""Test helpers for livebridge and for plugin authors (a pytest plugin, loaded automatically).

``make_bridge`` starts the real daemon application on a real socket, with a temporary SQLite
store and the Livedesk emulator behind it, so a test can post to a source over HTTP and look
at what reached Livedesk::

    @pytest.mark.asyncio  # or pytest-asyncio's auto mode
    async def test_my_source(make_bridge):
        bridge = await make_bridge({"sources": [{"type": "mine"}]}, plugins=[my_plugin])
        resp = await bridge.client.post("/mine", json={...})
        assert resp.status == 200
        await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
        conversation = await bridge.conversation_of("mine", "thread-1")
        await bridge.agent_reply(conversation, "Hello from an agent")

It works in pytest-asyncio's strict and auto modes, and with the plugin also installed by
its entry point (it is registered once).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest_asyncio
import yaml
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer

from livebridge.app import DAEMON, create_app
from livebridge.config import Config, ServerConfig, parse_config
from livebridge.daemon import Daemon
from livebridge.livedesk.emulator import Emulator
from livebridge.plugins import collect_source_types, get_plugin_manager
from livebridge.replies import sign_webhook
from livebridge.server import BridgeRunner
from livebridge.source import Source

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
        daemon: Daemon = app[DAEMON]
        return daemon

    async def post_webhook(self, event: Any, path: str = "/livedesk/webhook") -> ClientResponse:
        """Post a Livedesk webhook ``event`` (JSON-encoded unless bytes), signed as Livedesk
        signs it with the daemon's webhook secret (in emulated mode, the one made at start)."""
        raw = event if isinstance(event, bytes) else json.dumps(event).encode()
        headers = {"Content-Type": "application/json"}
        secret = self.daemon.replies.secret
        if secret is not None:
            stamp = str(int(time.time()))
            headers |= {"X-Chatwoot-Timestamp": stamp,
                        "X-Chatwoot-Signature": sign_webhook(secret, stamp, raw)}
        return await self.client.post(path, data=raw, headers=headers)

    def url(self, path: str) -> str:
        """The absolute URL of ``path`` on the daemon."""
        return str(self.client.make_url(path))

    async def conversation_of(self, source: str | Source, thread_key: str) -> int:
        """The Livedesk conversation of a thread of ``source`` (or its name); fails the test
        if no message of the thread was delivered yet."""
        found = self.daemon.sources[source] if isinstance(source, str) else source
        conversation = await self.daemon.conversation_of(found, thread_key)
        if conversation is None:
            raise AssertionError(f"thread {thread_key!r} of {found.name!r} has no conversation "
                                 "yet: wait_for its first message to be delivered")
        return conversation

    async def agent_reply(self, conversation_id: int, text: str) -> dict[str, Any]:
        """Play an agent answering in Livedesk: the emulator posts the message and sends its
        webhook, signed with the daemon's webhook secret, to this daemon. Returns the
        emulator's message; wait for its effect (e.g. the source's reply) with ``wait_for``."""
        self.emulator.webhook_url = self.url(self.daemon.config.livedesk.webhook_path)
        self.emulator.webhook_secret = self.daemon.replies.secret
        message: dict[str, Any] = await self.emulator.agent_reply(conversation_id, text)
        return message

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


class _BridgeTestServer(TestServer):
    """aiohttp's ``TestServer`` serving through ``BridgeRunner``, as ``livebridge run`` does
    (header timeout, per-client connection cap, quiet disconnects)."""

    def __init__(self, app: web.Application, server: ServerConfig) -> None:
        super().__init__(app)
        self._settings = server

    async def _make_runner(self, **kwargs: Any) -> BridgeRunner:
        return BridgeRunner(self.app, self._settings, **kwargs)


@pytest_asyncio.fixture
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
        client = TestClient(_BridgeTestServer(app, config.server))
        await client.start_server()
        clients.append(client)
        emulator = emulator or app[DAEMON].emulator
        assert emulator is not None, "pass the Emulator that livedesk.base_url points at"
        return BridgeHarness(client, emulator)

    yield factory
    for client in reversed(clients):
        await client.close()


# --- real processes (crash, multi-daemon and benchmark runs) ---------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Process:
    """A ``livebridge`` subprocess (``run`` or ``emulator``) on its own port."""

    def __init__(self, args: list[str], port: int, log_path: Path, ready_path: str) -> None:
        self.args = args
        self.port = port
        self.log_path = log_path
        self.ready_path = ready_path
        self.popen: Any = None

    @property
    def url(self) -> str:
        """The process's base URL."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Process:
        """Start it and wait until ``ready_path`` answers 200."""
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(  # noqa: S603
            [sys.executable, "-m", "livebridge", *self.args], stdout=log,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"{self.args[0]} exited: see {self.log_path}")
            try:
                with urllib.request.urlopen(self.url + self.ready_path, timeout=1) as resp:  # noqa: S310
                    if resp.status == 200:
                        return self
            except (urllib.error.URLError, OSError):
                time.sleep(0.05)  # polling another process's readiness
        raise TimeoutError(f"{self.args[0]} not ready in {timeout} s: see {self.log_path}")

    def kill(self) -> None:
        """SIGKILL: no cleanup, like a crash or the OOM killer."""
        self.popen.kill()
        self.popen.wait()

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM and wait: the clean shutdown path."""
        if self.popen is None or self.popen.poll() is not None:
            return 0 if self.popen is None else int(self.popen.returncode)
        self.popen.terminate()
        return int(self.popen.wait(timeout))


def daemon_process(config: Mapping[str, Any], workdir: Path, name: str = "daemon") -> Process:
    """A ``livebridge run`` process for ``config`` (a dict written to ``workdir``)."""
    port = int(config.get("server", {}).get("port") or free_port())
    data = {**config, "server": {**config.get("server", {}), "host": "127.0.0.1", "port": port}}
    data.setdefault("logging", {"format": "json", "level": "warning"})
    path = workdir / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return Process(["run", "--config", str(path)], port, workdir / f"{name}.log", "/readyz")


def emulator_process(workdir: Path, *, latency: float = 0.0, api_key: str = "emulator",
                     api_secret: str = "emulator", inbox_id: int = 1,  # noqa: S107
                     ) -> Process:
    """A standalone ``livebridge emulator`` process."""
    port = free_port()
    args = ["emulator", "--port", str(port), "--latency", str(latency), "--api-key", api_key,
            "--api-secret", api_secret, "--inbox-id", str(inbox_id)]
    return Process(args, port, workdir / f"emulator-{port}.log", "/_emulator/state")
