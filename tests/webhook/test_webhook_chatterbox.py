"""The README's Chatterbox configuration end to end: signed webhooks over HTTP to the running
daemon, what lands in the Livedesk emulator, and agent replies reaching a fake Chatterbox."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bridge_helpers import dead_letter, delivered, nothing_stored
from chatterbox import API_TOKEN, PATH, SECRET, FakeChatterbox, body_of, event, sign

from livebridge.testing import BridgeHarness

Start = Any


async def post(bridge: BridgeHarness, payload: Any, **sign_args: Any
               ) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` signed as Chatterbox signs; the status and the JSON answer."""
    body = body_of(payload)
    resp = await bridge.client.post(PATH, data=body, headers=sign(body, **sign_args))
    return resp.status, await resp.json()


async def test_a_message_reaches_its_conversation_with_its_sender(start: Start) -> None:
    bridge = await start()
    files = [{"url": "https://files.chatterbox.example/f/abc/receipt.pdf",
              "filename": "receipt.pdf"}]
    assert await post(bridge, event("evt_1", files=files)) == (
        200, {"ok": True, "accepted": 1, "duplicate": 0, "dropped": 0})
    assert (await post(bridge, event("evt_2", text="Any news?")))[0] == 200
    other_author = event("evt_3", text="Hello from Kai", conversation="conv_other",
                         author="usr_2")
    other_author["data"]["author"].update(email="kai@example.com", phone=None)
    assert (await post(bridge, other_author))[0] == 200
    by_text = {m["content"].splitlines()[0]: m for m in await delivered(bridge, 3)}
    first = by_text["Hi! My order #4411 has not arrived."]
    second, other = by_text["Any news?"], by_text["Hello from Kai"]
    state = bridge.emulator.state
    assert "Hi! My order #4411 has not arrived." in first["content"]
    assert "https://files.chatterbox.example/f/abc/receipt.pdf" in first["content"]
    assert second["content"] == "Any news?"
    assert first["conversation_id"] == second["conversation_id"] != other["conversation_id"]
    conversation = state.conversations[first["conversation_id"]]
    assert conversation["custom_attributes"]["livebridge_thread"] == "chatterbox|conv_7f3a"
    contact = state.contacts[conversation["account_info"]["contact_id"]]
    assert (contact["name"], contact["email"], contact["phone_number"], contact["identifier"]) == (
        "Mia Chen", "mia@example.com", "+81312345678", "chatterbox:usr_9b1")
    assert state.conversations[other["conversation_id"]]["account_info"]["contact_id"] != (
        contact["id"])


@pytest.mark.parametrize(("secret", "age", "reason"), [
    ("not-the-secret", 0, "bad signature"),
    (SECRET, 301, "stale timestamp"),
    (SECRET, -301, "stale timestamp"),
])
async def test_forged_and_stale_requests_store_nothing(start: Start, secret: str, age: float,
                                                       reason: str) -> None:
    bridge = await start()
    answer = await post(bridge, event("evt_1"), secret=secret, timestamp=time.time() - age)
    assert answer == (401, {"error": reason})
    await nothing_stored(bridge)
    # the refused event id was not recorded: the genuine event is taken
    assert (await post(bridge, event("evt_1")))[1]["accepted"] == 1


@pytest.mark.parametrize("headers", [
    {},
    {"X-Chatterbox-Signature": "v1=00"},
    {"X-Chatterbox-Timestamp": "1795960800"},
])
async def test_unsigned_requests_get_401(start: Start, headers: dict[str, str]) -> None:
    bridge = await start()
    resp = await bridge.client.post(PATH, data=body_of(event()), headers=headers)
    assert (resp.status, await resp.json()) == (401, {"error": "unsigned"})
    await nothing_stored(bridge)


async def test_a_signature_over_another_body_is_refused(start: Start) -> None:
    bridge = await start()
    headers = sign(body_of(event("evt_1")))
    resp = await bridge.client.post(PATH, data=body_of(event("evt_1", text="changed")),
                                    headers=headers)
    assert resp.status == 401
    await nothing_stored(bridge)


async def test_a_replayed_event_stores_nothing_new(start: Start) -> None:
    bridge = await start()
    assert (await post(bridge, event("evt_1")))[1]["accepted"] == 1
    await delivered(bridge, 1)
    assert await post(bridge, event("evt_1")) == (
        200, {"ok": True, "accepted": 0, "duplicate": 1, "dropped": 0})
    await delivered(bridge, 1)


async def test_other_events_and_the_bridges_own_posts_are_ignored(start: Start) -> None:
    bridge = await start()
    for payload in (event("evt_1", type_="conversation.closed"), event("evt_2", kind="app")):
        assert await post(bridge, payload) == (
            200, {"ok": True, "accepted": 0, "duplicate": 0, "dropped": 0})
    await nothing_stored(bridge)


@pytest.mark.parametrize(("change", "expression", "problem"), [
    (lambda p: p["data"].pop("conversation"), "mapping.thread", "came up empty"),
    (lambda p: p.update(id=""), "mapping.event_id", "came up empty"),
    (lambda p: p["data"]["author"].update(id=None), "mapping.sender.id", "came up empty"),
    (lambda p: p["data"]["author"].update(email={"x": 1}), "mapping.sender.email",
     "expected text or a number, found an object"),
    (lambda p: p["data"]["message"].update(attachments="x.pdf"), "mapping.attachments.each",
     "expected an array, found a value"),
    (lambda p: p["data"]["message"].update(attachments=[{"url": "javascript:alert(1)"}]),
     "mapping.attachments.url", "expected an http(s) URL"),
])
async def test_a_payload_the_mapping_cannot_read_gets_422(start: Start, change: Any,
                                                          expression: str, problem: str) -> None:
    bridge = await start()
    payload = event("evt_1")
    change(payload)
    assert await post(bridge, payload) == (
        422, {"error": "unmapped payload", "expression": expression, "problem": problem})
    await nothing_stored(bridge)


async def test_numbers_are_taken_as_text(start: Start) -> None:
    bridge = await start()
    payload = event("evt_1")
    payload["id"] = 1001
    payload["data"]["conversation"]["id"] = 7
    assert (await post(bridge, payload))[1]["accepted"] == 1
    [message] = await delivered(bridge, 1)
    conversation = bridge.emulator.state.conversations[message["conversation_id"]]
    assert conversation["custom_attributes"]["livebridge_thread"] == "chatterbox|7"


@pytest.mark.parametrize("body", [b"{not json", b"", b"[" * 100_000])
async def test_malformed_json_gets_400(start: Start, body: bytes) -> None:
    bridge = await start()
    resp = await bridge.client.post(PATH, data=body, headers=sign(body))
    assert (resp.status, await resp.json()) == (400, {"error": "malformed JSON"})
    await nothing_stored(bridge)


async def test_an_oversized_body_gets_413(start: Start) -> None:
    bridge = await start(max_body_bytes=1000)
    body = body_of(event("evt_1", text="x" * 2000))
    resp = await bridge.client.post(PATH, data=body, headers=sign(body))
    assert resp.status == 413
    await nothing_stored(bridge)


async def agent_replies(bridge: BridgeHarness, text: str) -> dict[str, Any]:
    assert (await post(bridge, event("evt_1")))[1]["accepted"] == 1
    [message] = await delivered(bridge, 1)
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    reply: dict[str, Any] = await bridge.emulator.agent_reply(message["conversation_id"], text)
    return reply


async def test_an_agent_reply_reaches_chatterbox_with_the_templated_body(
        start: Start, chatterbox: FakeChatterbox) -> None:
    bridge = await start()
    await agent_replies(bridge, 'It ships today, "promise" {really}.')
    await bridge.wait_for(lambda: len(chatterbox.calls) == 1)
    [call] = chatterbox.calls
    assert call["path"] == "/v1/conversations/conv_7f3a/messages"
    assert call["headers"]["Authorization"] == f"Bearer {API_TOKEN}"
    assert call["json"] == {
        "workspace_id": "ws_42", "text": 'It ships today, "promise" {really}.',
        "author": {"kind": "app", "name": call["json"]["author"]["name"]},
        "mentions": ["usr_9b1"],
    }
    assert call["json"]["author"]["name"]  # the agent's name, from the Livedesk webhook


async def test_a_throttled_reply_is_retried(start: Start, chatterbox: FakeChatterbox) -> None:
    chatterbox.answers = [(429, {"Retry-After": "0"}), (503, {})]
    bridge = await start()
    await agent_replies(bridge, "Hello")
    await bridge.wait_for(lambda: len(chatterbox.calls) == 3)
    await bridge.wait_idle()
    assert [c["json"]["text"] for c in chatterbox.calls] == ["Hello"] * 3
    assert (await bridge.daemon.store.stats()).dead_letters == 0


async def test_a_refused_reply_is_dead_lettered(start: Start, chatterbox: FakeChatterbox) -> None:
    chatterbox.answers = [(403, {})]
    bridge = await start()
    await agent_replies(bridge, "Hello")
    letter = await dead_letter(bridge)
    assert letter.kind == "reply" and "HTTP 403" in letter.reason
    assert len(chatterbox.calls) == 1
    assert API_TOKEN not in letter.reason


async def test_without_reply_settings_replies_are_dead_lettered(start: Start) -> None:
    bridge = await start(reply=None)
    await agent_replies(bridge, "Hello")
    letter = await dead_letter(bridge)
    assert letter.kind == "reply"


@pytest.mark.parametrize(("email", "phone", "stored_as"), [
    ("mia@example.com", "+81 3-1234-5678", ("mia@example.com", "+81312345678")),
    ("mia at example", "03-1234-5678", (None, None)),
])
async def test_contact_fields_livedesk_would_refuse_are_left_out(
        start: Start, email: str, phone: str, stored_as: tuple[str | None, str | None]) -> None:
    bridge = await start()
    payload = event("evt_1")
    payload["data"]["author"].update(email=email, phone=phone)
    assert (await post(bridge, payload))[1]["accepted"] == 1
    [message] = await delivered(bridge, 1)
    conversation = bridge.emulator.state.conversations[message["conversation_id"]]
    contact = bridge.emulator.state.contacts[conversation["account_info"]["contact_id"]]
    assert (contact["email"], contact["phone_number"]) == stored_as
    assert (await bridge.daemon.store.stats()).dead_letters == 0
