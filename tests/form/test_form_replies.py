"""Agent replies to web-form customers go out by email (with ``smtp:``), else are
dead-lettered as not deliverable (caught by the demo's mail catcher in emulated mode)."""

from __future__ import annotations

from typing import Any

from bridge_helpers import dead_letter
from smtp_helpers import SMTPServer, smtp_section, smtp_server  # noqa: F401 - fixture

from livebridge._livedesk.emulator import Emulator

JSON = {"Accept": "application/json"}


async def reply_to_first_post(bridge: Any, data: dict[str, str], text: str) -> None:
    resp = await bridge.client.post("/form", data=data, headers=JSON)
    assert resp.status == 200
    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [message] = state.messages.values()
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await bridge.emulator.agent_reply(message["conversation_id"], text)


async def test_an_agent_reply_is_emailed_to_the_customer(
        start_form: Any, smtp_server: SMTPServer) -> None:  # noqa: F811
    bridge = await start_form({"smtp": smtp_section(smtp_server.port)}, title="Acme support")
    await reply_to_first_post(bridge, {"name": "Ann Lee", "email": "ann@example.com",
                                       "message": "Where is my order?"}, "It ships today.")
    mail = (await smtp_server.next()).message
    assert mail["To"] == "Ann Lee <ann@example.com>"
    assert mail["Subject"] == "Re: your message to Acme support"
    assert "support@example.com" in mail["From"]
    plain = mail.get_body(("plain",))
    assert plain is not None and plain.get_content().strip() == "It ships today."


async def test_without_smtp_a_reply_is_dead_lettered_as_not_deliverable(
        start_form: Any, aiohttp_server: Any) -> None:
    emulator = Emulator(api_key="k", api_secret="s", inbox_id=5, webhook_secret="w" * 32)
    server = await aiohttp_server(emulator.app())  # real Livedesk: demo mode would catch mail
    bridge = await start_form({"livedesk": {
        "base_url": str(server.make_url("")).rstrip("/"), "api_key": "k", "api_secret": "s",
        "inbox_id": 5, "webhook_secret": "w" * 32}}, emulator=emulator)
    await reply_to_first_post(bridge, {"email": "ann@example.com", "message": "hi"}, "Hello!")
    letter = await dead_letter(bridge)
    assert letter.kind == "reply" and "not deliverable" in letter.reason
    assert "smtp" in letter.reason


async def test_a_phone_only_customer_cannot_be_emailed(
        start_form: Any, smtp_server: SMTPServer) -> None:  # noqa: F811
    bridge = await start_form({"smtp": smtp_section(smtp_server.port)})
    await reply_to_first_post(bridge, {"phone": "+442079460000", "message": "hi"}, "Hello!")
    letter = await dead_letter(bridge)
    assert "no email address" in letter.reason
    assert smtp_server.inbox.empty()
