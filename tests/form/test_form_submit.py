"""Posting the web form: each encoding, identity (one contact per customer), answers
(JSON or a 303), the honeypot, idempotency, field mapping and conversation modes."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

from livebridge import InboundMessage, hookimpl

JSON = {"Accept": "application/json"}
ANN = {"name": "Ann Lee", "email": "Ann@Example.com", "message": "Where is my order?"}


def contents(bridge: Any) -> list[str]:
    return [m["content"] for m in bridge.emulator.state.messages.values()]


async def test_urlencoded_post_becomes_contact_conversation_and_message(start_form: Any) -> None:
    bridge = await start_form()
    resp = await bridge.client.post("/form", data=ANN, headers={
        **JSON, "Referer": bridge.url("/form?token=secret")})
    assert resp.status == 200
    assert await resp.json() == {"ok": True, "status": "accepted"}
    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [contact] = state.contacts.values()
    assert (contact["name"], contact["email"]) == ("Ann Lee", "Ann@Example.com")
    assert contact["identifier"] == "form:ann@example.com"
    [conversation] = state.conversations.values()
    assert conversation["custom_attributes"] == {
        "form": "form", "page": bridge.url("/form"), "livebridge_thread": "form|ann@example.com"}
    [message] = state.messages.values()
    assert (message["content"], message["message_type"]) == ("Where is my order?", 0)


async def test_multipart_post_with_a_file(start_form: Any) -> None:
    delivered: list[InboundMessage] = []

    class Watch:
        @hookimpl
        def livebridge_message_delivered(self, message: InboundMessage) -> None:
            delivered.append(message)

    bridge = await start_form(plugins=(Watch(),))
    form = aiohttp.FormData()
    form.add_field("email", "bo@example.com")
    form.add_field("message", "See the attached notes.")
    form.add_field("file", b"hello", filename="notes.txt", content_type="text/plain")
    form.add_field("empty", b"", filename="", content_type="application/octet-stream")
    resp = await bridge.client.post("/form", data=form, headers=JSON)
    assert await resp.json() == {"ok": True, "status": "accepted"}
    await bridge.wait_for(lambda: len(delivered) == 1)
    [attachment] = delivered[0].attachments
    assert (attachment.name, attachment.content_type, attachment.data) == (
        "notes.txt", "text/plain", b"hello")
    [message] = bridge.emulator.state.messages.values()  # the bytes are uploaded
    assert message["content"] == "See the attached notes."
    [uploaded] = message["attachments"]
    assert (uploaded["name"], uploaded["content_type"], uploaded["file_size"]) == (
        "notes.txt", "text/plain", 5)
    assert bridge.emulator.state.attachments == [b"hello"]


async def test_json_post(start_form: Any) -> None:
    bridge = await start_form()
    resp = await bridge.client.post("/form", json={**ANN, "phone": "+44 20 7946 0000"})
    assert await resp.json() == {"ok": True, "status": "accepted"}
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    [contact] = bridge.emulator.state.contacts.values()
    assert contact["phone_number"] == "+442079460000"


async def test_same_customer_keeps_one_contact_and_one_conversation(start_form: Any) -> None:
    bridge = await start_form()
    state = bridge.emulator.state
    await bridge.client.post("/form", data=ANN, headers=JSON)
    await bridge.wait_for(lambda: len(state.messages) == 1)
    resp = await bridge.client.post("/form", headers=JSON, data={
        "email": "ann@example.COM", "message": "Any news?"})
    assert await resp.json() == {"ok": True, "status": "accepted"}
    await bridge.wait_for(lambda: len(state.messages) == 2)
    assert len(state.contacts) == 1 and len(state.conversations) == 1
    assert contents(bridge) == ["Where is my order?", "Any news?"]


async def test_phone_only_customer_is_keyed_on_the_normalized_number(start_form: Any) -> None:
    bridge = await start_form()
    state = bridge.emulator.state
    for phone in ("+44 20 7946 0000", "0044 (20) 7946-0000"):
        resp = await bridge.client.post("/form", headers=JSON,
                                        data={"phone": phone, "message": "call me"})
        assert resp.status == 200
    await bridge.wait_for(lambda: len(state.messages) == 2)
    [contact] = state.contacts.values()
    assert (contact["identifier"], contact["phone_number"]) == ("form:+442079460000",
                                                                "+442079460000")
    assert len(state.conversations) == 1


async def test_browser_post_is_redirected_to_the_thank_you_page(start_form: Any) -> None:
    bridge = await start_form()
    resp = await bridge.client.post("/form", allow_redirects=False,
                                    data={**ANN, "_next": "https://evil.example/"})
    assert resp.status == 303
    assert resp.headers["Location"] == "/form/thanks"  # `_next` is never a redirect target
    thanks = await bridge.client.get(resp.headers["Location"])
    assert thanks.status == 200 and "Thank you" in await thanks.text()
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    assert contents(bridge) == ["Where is my order?"]  # control fields are not content


async def test_thank_you_url_on_an_allowed_origin(start_form: Any) -> None:
    bridge = await start_form(allowed_origins=["https://www.example.com"],
                              thank_you_url="https://www.example.com/thanks.html")
    resp = await bridge.client.post("/form", data=ANN, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "https://www.example.com/thanks.html")
    page = await bridge.client.get("/form")
    assert "form-action 'self' https://www.example.com;" in page.headers[
        "Content-Security-Policy"]


async def test_honeypot_answers_success_and_stores_nothing(start_form: Any,
                                                           nothing_stored: Any) -> None:
    bridge = await start_form()
    bot = {**ANN, "_gotcha": "http://spam.example"}
    resp = await bridge.client.post("/form", data=bot, headers=JSON)
    assert await resp.json() == {"ok": True, "status": "accepted"}
    resp = await bridge.client.post("/form", data=bot, allow_redirects=False)
    assert (resp.status, resp.headers["Location"]) == (303, "/form/thanks")
    await nothing_stored(bridge)
    dropped = bridge.daemon.metrics.registry.get_sample_value(
        "livebridge_messages_dropped_total", {"source": "form", "reason": "honeypot"})
    assert dropped == 2


async def test_idempotency_key_stores_a_double_submit_once(start_form: Any) -> None:
    bridge = await start_form()
    key = {**JSON, "Idempotency-Key": "4f1c0a"}
    first = await bridge.client.post("/form", data=ANN, headers=key)
    again = await bridge.client.post("/form", data=ANN, headers=key)
    assert await first.json() == {"ok": True, "status": "accepted"}
    assert await again.json() == {"ok": True, "status": "duplicate"}
    # The same key from another customer, or with another message, is another submission.
    other = await bridge.client.post("/form", headers=key,
                                     data={**ANN, "email": "bo@example.com"})
    edited = await bridge.client.post("/form", headers=key, data={**ANN, "message": "Edited"})
    assert [(await r.json())["status"] for r in (other, edited)] == ["accepted", "accepted"]
    await bridge.wait_idle()
    assert sorted(contents(bridge)) == ["Edited", "Where is my order?", "Where is my order?"]
    bad = await bridge.client.post("/form", data=ANN, headers={**JSON,
                                                               "Idempotency-Key": "k" * 300})
    assert bad.status == 400


async def test_the_pages_hidden_key_makes_a_double_click_count_once(start_form: Any) -> None:
    bridge = await start_form()
    page = await (await bridge.client.get("/form")).text()
    match = re.search(r'name="_idempotency_key" value="([0-9a-f]+)"', page)
    assert match
    form = {**ANN, "_idempotency_key": match.group(1)}
    for _ in range(2):
        resp = await bridge.client.post("/form", data=form, allow_redirects=False)
        assert resp.status == 303
    await bridge.wait_idle()
    assert contents(bridge) == ["Where is my order?"]


async def test_field_mapping_and_extra_fields(start_form: Any) -> None:
    bridge = await start_form(fields={"name": "your-name", "email": "your-email",
                                      "message": "your-message"})
    page = await (await bridge.client.get("/form")).text()
    assert 'name="your-email" type="email"' in page
    resp = await bridge.client.post("/form", headers=JSON, data={
        "your-name": "Cy", "your-email": "cy@example.com", "your-message": "Hello",
        "company": "Acme", "topic": "billing"})
    assert resp.status == 200
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    assert contents(bridge) == ["Hello\n\ncompany: Acme\ntopic: billing"]
    [contact] = bridge.emulator.state.contacts.values()
    assert contact["name"] == "Cy"
    bad = await bridge.client.post("/form", headers=JSON, data={"your-email": "nope",
                                                               "your-message": "x"})
    assert (await bad.json())["fields"] == {"your-email": "not a valid email address"}


async def test_per_submission_opens_a_conversation_per_post(start_form: Any) -> None:
    bridge = await start_form(conversation="per_submission")
    state = bridge.emulator.state
    for text in ("first", "second"):
        await bridge.client.post("/form", headers=JSON, data={**ANN, "message": text})
    await bridge.wait_for(lambda: len(state.messages) == 2)
    assert len(state.contacts) == 1 and len(state.conversations) == 2


async def test_store_trouble_answers_503_with_retry_after(start_form: Any, store_down: object,
                                                          nothing_stored: Any) -> None:
    bridge = await start_form(plugins=(store_down,))
    resp = await bridge.client.post("/form", data=ANN, headers=JSON)
    assert (resp.status, resp.headers["Retry-After"]) == (503, "10")
    await nothing_stored(bridge)


async def test_a_hook_drop_looks_like_success(start_form: Any, nothing_stored: Any) -> None:
    class Spam:
        @hookimpl
        def livebridge_inbound_message(self, message: InboundMessage) -> bool:
            return False

    bridge = await start_form(plugins=(Spam(),))
    resp = await bridge.client.post("/form", data=ANN, headers=JSON)
    assert await resp.json() == {"ok": True, "status": "accepted"}
    await nothing_stored(bridge)
