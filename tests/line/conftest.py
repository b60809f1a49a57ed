"""LINE test fixtures: the local fake LINE API over HTTP, and a bridge with a line source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from line_helpers import SECRET, TOKEN
from livebridge_line.fake import FakeLine

from livebridge.testing import BridgeHarness

AiohttpServer = Callable[[Application], Awaitable[TestServer]]
StartBridge = Callable[..., Awaitable[BridgeHarness]]


@pytest.fixture
def line() -> FakeLine:
    return FakeLine(token=TOKEN)


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, line: FakeLine) -> TestServer:
    return await aiohttp_server(line.app())


@pytest.fixture
def start(server: TestServer, make_bridge: Any) -> StartBridge:
    """``await start(**source_settings, plugins=(...))``: a daemon with one line source talking
    to the fake LINE API (set up after it, so stopped before it); agent replies come back to
    it."""

    async def factory(*, plugins: tuple[object, ...] = (), **settings: Any) -> BridgeHarness:
        url = str(server.make_url("/"))
        source = {"type": "line", "channel_secret": SECRET, "channel_access_token": TOKEN,
                  "api_url": url, "data_api_url": url, **settings}
        bridge: BridgeHarness = await make_bridge({"sources": [source]}, plugins=plugins)
        bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
        return bridge

    return factory
