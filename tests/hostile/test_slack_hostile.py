"""The Slack Events API endpoint under hostile input (issue 13): what the headers alone show
to be forged is refused before the body is read (verify before you pay)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from livebridge_slack.fake import FakeSlack

from livebridge.testing import BridgeHarness

from .conftest import HealthWatcher, RawConnection, nothing_stored

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


@pytest.fixture
async def slack_bridge(aiohttp_server: Callable[[web.Application], Awaitable[TestServer]],
                       make_bridge: Any) -> BridgeHarness:
    """A daemon with one events-mode slack source, talking to the fake Slack."""
    server = await aiohttp_server(FakeSlack().app())
    source = {"type": "slack", "signing_secret": SECRET, "bot_token": "xoxb-test",
              "api_url": str(server.make_url("/api/"))}
    bridge: BridgeHarness = await make_bridge({"sources": [source]})
    return bridge


@pytest.mark.parametrize(("headers", "reason"), [
    ("", "unsigned"),
    ("X-Slack-Request-Timestamp: 1\r\nX-Slack-Signature: v0=00\r\n", "stale timestamp"),
    ("X-Slack-Request-Timestamp: 1e9\r\nX-Slack-Signature: v0=00\r\n", "bad timestamp"),
])
async def test_a_request_forged_in_its_headers_is_refused_before_its_body(
        slack_bridge: BridgeHarness, raw: Callable[[BridgeHarness], Awaitable[RawConnection]],
        health: Callable[[BridgeHarness], HealthWatcher], headers: str, reason: str) -> None:
    """The body (announced, 1 MiB) is never sent: the answer cannot wait for it."""

    async def forged() -> int:
        conn = await raw(slack_bridge)
        await conn.send(f"POST /slack/events HTTP/1.1\r\nHost: x\r\n{headers}"
                        "Content-Type: application/json\r\nContent-Length: 1048576\r\n\r\n{"
                        .encode())
        return await asyncio.wait_for(conn.status(), 10)

    assert await health(slack_bridge).during(forged) == 401
    rejected = slack_bridge.daemon.metrics.registry.get_sample_value(
        "livebridge_requests_rejected_total", {"source": "slack", "reason": reason})
    assert rejected and rejected >= 1  # once per run of forged()
    await nothing_stored(slack_bridge)
