"""The AcmeChat source end to end, over real sockets: signed posts in, agents' replies out.

Marked ``asyncio`` so the tests run in pytest-asyncio's strict mode as well as auto mode.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from livebridge import hmac_sha256_hex
from livebridge.testing import BridgeHarness

import livebridge_acmechat

pytestmark = pytest.mark.asyncio
MakeBridge = Callable[..., Awaitable[BridgeHarness]]


@pytest_asyncio.fixture
async def acme_api() -> AsyncIterator[tuple[TestServer, list[dict[str, Any]]]]:
    """A stand-in for AcmeChat's API: records the replies posted to it."""
    posted: list[dict[str, Any]] = []

    async def post(request: web.Request) -> web.Response:
        posted.append({"thread": request.match_info["thread"], **await request.json()})
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/threads/{thread}/messages", post)
    server = TestServer(app)
    await server.start_server()
    yield server, posted
    await server.close()


def signed(event: dict[str, Any], secret: str = "s3cret") -> dict[str, Any]:
    body = json.dumps(event).encode()
    return {"data": body, "headers": {"X-Acme-Signature": hmac_sha256_hex(secret, body),
                                      "Content-Type": "application/json"}}


EVENT = {"id": "e1", "thread": "t1", "user": "u1", "name": "Ann", "text": "Hello?"}


async def test_a_chat_reaches_livedesk_and_the_agent_reply_comes_back(
        make_bridge: MakeBridge, acme_api: tuple[TestServer, list[dict[str, Any]]]) -> None:
    server, posted = acme_api
    config = {"sources": [{"type": "acmechat", "secret": "s3cret",
                           "api_url": str(server.make_url(""))}]}
    # Passing the module is fine even though its entry point registered it already.
    bridge = await make_bridge(config, plugins=[livebridge_acmechat])
    resp = await bridge.client.post("/acmechat", **signed(EVENT))
    assert (await resp.json()) == {"result": "accepted"}
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    [message] = bridge.emulator.state.messages.values()
    assert message["content"] == "Hello?"
    conversation = await bridge.conversation_of("acmechat", "t1")
    assert conversation == message["conversation_id"]
    await bridge.agent_reply(conversation, "Hi Ann, how can I help?")
    await bridge.wait_for(lambda: len(posted) == 1)
    assert posted == [{"thread": "t1", "text": "Hi Ann, how can I help?"}]


async def test_a_forged_or_malformed_post_is_refused_and_stores_nothing(
        make_bridge: MakeBridge) -> None:
    bridge = await make_bridge({"sources": [{"type": "acmechat", "secret": "s3cret"}]})
    forged = await bridge.client.post("/acmechat", **signed(EVENT, secret="guess"))
    assert forged.status == 401 and (await forged.json()) == {"error": "bad signature"}
    malformed = await bridge.client.post("/acmechat", **signed({"id": "e2"}))
    assert malformed.status == 400
    assert await bridge.daemon.store.depth() == 0
