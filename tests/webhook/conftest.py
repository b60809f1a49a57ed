"""Webhook-source fixtures: the README's Chatterbox configuration on a running daemon, with
its replies going to a local fake Chatterbox API."""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from chatterbox import ENV, FakeChatterbox, readme_config

from livebridge.testing import BridgeHarness

AiohttpServer = Callable[[Application], Awaitable[TestServer]]
StartBridge = Callable[..., Awaitable[BridgeHarness]]


@pytest.fixture
def chatterbox() -> FakeChatterbox:
    return FakeChatterbox()


@pytest.fixture
async def chatterbox_server(aiohttp_server: AiohttpServer,
                            chatterbox: FakeChatterbox) -> TestServer:
    return await aiohttp_server(chatterbox.app())


@pytest.fixture
def start(chatterbox_server: TestServer, make_bridge: Any) -> StartBridge:
    """``await start(**overrides)``: a daemon with the README's Chatterbox source, its reply
    URL pointed at the fake Chatterbox API; ``overrides`` replace top-level source keys."""

    async def factory(**overrides: Any) -> BridgeHarness:
        [source] = copy.deepcopy(readme_config()["sources"])
        source["reply"]["url"] = source["reply"]["url"].replace(
            "https://api.chatterbox.example", str(chatterbox_server.make_url("")).rstrip("/"))
        source.update(overrides)
        bridge: BridgeHarness = await make_bridge({"sources": [source]}, env=ENV)
        return bridge

    return factory
