"""Slack test fixtures: the local fake Slack over HTTP, and a bridge with a slack source."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from aiohttp.web import Application
from livebridge_slack.fake import FakeSlack
from slack_helpers import SECRET

from livebridge.testing import BridgeHarness

AiohttpServer = Callable[[Application], Awaitable[TestServer]]
StartBridge = Callable[..., Awaitable[BridgeHarness]]


@pytest.fixture
def slack() -> FakeSlack:
    return FakeSlack()


@pytest.fixture
async def server(aiohttp_server: AiohttpServer, slack: FakeSlack) -> TestServer:
    return await aiohttp_server(slack.app())


@pytest.fixture
def start(server: TestServer, make_bridge: Any) -> StartBridge:
    """``await start(**source_settings, delivery={...}, plugins=(...))``: a daemon with one
    slack source talking to the fake Slack (set up after it, so stopped before it)."""

    async def factory(delivery: dict[str, Any] | None = None, *,
                      plugins: tuple[object, ...] = (), **settings: Any) -> BridgeHarness:
        source = {"type": "slack", "signing_secret": SECRET, "bot_token": "xoxb-test",
                  "api_url": str(server.make_url("/api/")), **settings}
        return await make_bridge({"sources": [source], "delivery": delivery or {}},  # type: ignore[no-any-return]
                                 plugins=plugins)

    return factory
