"""Other webhook-source shapes over HTTP: a shared token header, a base64 HMAC of the body
alone, batched payloads (``items``) and an explicitly unsigned source."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest

from livebridge.testing import BridgeHarness

#: A service that batches messages: {"messages": [{"id", "room", "from": {...}, "body"}]}.
MAPPING = {"event_id": "id", "thread": "room", "text": "body",
           "sender": {"id": "from.id", "name": "from.name"}}
BATCH = {"type": "webhook", "path": "/hooks/batch", "items": "messages",
         "events": "kind == 'text'", "max_items": 3, "mapping": MAPPING}


def message(i: int, kind: str = "text", **extra: Any) -> dict[str, Any]:
    return {"id": f"m{i}", "kind": kind, "room": "r1", "from": {"id": "u1", "name": "Ann"},
            "body": f"message {i}", **extra}


async def stored(bridge: BridgeHarness) -> int:
    await bridge.wait_idle()
    return len(bridge.emulator.state.messages)


@pytest.fixture
async def token_bridge(make_bridge: Any) -> BridgeHarness:
    verify = {"header": "X-Hook-Token", "token": "${HOOK_TOKEN}"}
    bridge: BridgeHarness = await make_bridge(
        {"sources": [{**BATCH, "verify": verify}]}, env={"HOOK_TOKEN": "s3cret-token"})
    return bridge


@pytest.mark.parametrize(("headers", "status", "reason"), [
    ({"X-Hook-Token": "s3cret-token"}, 200, None),
    ({"X-Hook-Token": "s3cret-tokeN"}, 401, "bad token"),
    ({"X-Hook-Token": "s3cret-token-and-more"}, 401, "bad token"),
    ({"X-Hook-Token": "\u017f3cret-token"}, 401, "bad token"),
    ({"X-Other": "s3cret-token"}, 401, "unsigned"),
])
async def test_a_token_header(token_bridge: BridgeHarness, headers: dict[str, str], status: int,
                              reason: str | None) -> None:
    resp = await token_bridge.client.post("/hooks/batch", json={"messages": [message(1)]},
                                          headers=headers)
    assert resp.status == status
    answer = await resp.json()
    if reason is None:
        assert answer["accepted"] == 1
        await token_bridge.wait_for(lambda: len(token_bridge.emulator.state.messages) == 1)
    else:
        assert answer == {"error": reason}
        assert await stored(token_bridge) == 0


async def test_a_batch_stores_each_message_the_events_filter_keeps(
        token_bridge: BridgeHarness) -> None:
    payload = {"messages": [message(1), message(2, kind="typing"), message(3)]}
    resp = await token_bridge.client.post("/hooks/batch", json=payload,
                                          headers={"X-Hook-Token": "s3cret-token"})
    assert await resp.json() == {"ok": True, "accepted": 2, "duplicate": 0, "dropped": 0}
    await token_bridge.wait_for(lambda: len(token_bridge.emulator.state.messages) == 2)
    contents = sorted(m["content"] for m in token_bridge.emulator.state.messages.values())
    assert contents == ["message 1", "message 3"]
    assert len(token_bridge.emulator.state.conversations) == 1


@pytest.mark.parametrize(("payload", "detail"), [
    ({"messages": [message(1), message(2, room=None)]},
     {"expression": "mapping.thread", "problem": "came up empty", "item": 1}),
    ({"messages": {"id": "m1"}},
     {"expression": "items", "problem": "expected an array, found an object"}),
    ({"messages": [message(i) for i in range(4)]},
     {"expression": "items", "problem": "more than max_items (3)"}),
])
async def test_a_batch_is_taken_whole_or_not_at_all(token_bridge: BridgeHarness,
                                                    payload: dict[str, Any],
                                                    detail: dict[str, Any]) -> None:
    resp = await token_bridge.client.post("/hooks/batch", json=payload,
                                          headers={"X-Hook-Token": "s3cret-token"})
    assert (resp.status, await resp.json()) == (422, {"error": "unmapped payload", **detail})
    assert await stored(token_bridge) == 0


async def test_a_base64_hmac_of_the_body(make_bridge: Any) -> None:
    verify = {"header": "X-Signature", "secret": "k3y", "algorithm": "sha512",
              "encoding": "base64", "prefix": "sha512="}
    bridge = await make_bridge({"sources": [{**BATCH, "verify": verify}]})
    body = json.dumps({"messages": [message(1)]}).encode()
    good = base64.b64encode(hmac.new(b"k3y", body, hashlib.sha512).digest()).decode()
    for signature, status in ((good, 401), ("sha512=" + good.lower(), 401),
                              ("sha512=" + good, 200)):
        resp = await bridge.client.post("/hooks/batch", data=body,
                                        headers={"X-Signature": signature})
        assert resp.status == status, signature
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)


async def test_an_upper_case_hex_signature_is_the_same_signature(make_bridge: Any) -> None:
    verify = {"header": "X-Hub-Signature", "secret": "k3y", "algorithm": "sha1",
              "prefix": "sha1="}
    bridge = await make_bridge({"sources": [{**BATCH, "verify": verify}]})
    body = json.dumps({"messages": [message(1)]}).encode()
    digest = hmac.new(b"k3y", body, hashlib.sha1).hexdigest().upper()
    resp = await bridge.client.post("/hooks/batch", data=body,
                                    headers={"X-Hub-Signature": f"sha1={digest}"})
    assert resp.status == 200


async def test_verify_none_takes_unsigned_posts(make_bridge: Any) -> None:
    bridge = await make_bridge({"sources": [{**BATCH, "verify": "none"}]})
    resp = await bridge.client.post("/hooks/batch", json={"messages": [message(1)]})
    assert resp.status == 200
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)


async def test_an_expression_failing_on_a_payload_gets_422(make_bridge: Any) -> None:
    mapping = {**MAPPING, "text": "join(' ', lines)"}
    bridge = await make_bridge({"sources": [{**BATCH, "verify": "none", "mapping": mapping}]})
    resp = await bridge.client.post("/hooks/batch", json={"messages": [
        message(1, lines=["a", "b"]), message(2, lines="secret words")]})
    assert (resp.status, await resp.json()) == (422, {
        "error": "unmapped payload", "expression": "mapping.text", "item": 1,
        "problem": "expression failed: join() was given string"})
    assert await stored(bridge) == 0
