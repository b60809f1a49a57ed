"""Agent replies to web-form customers go out by email (with ``smtp:``), else are
dead-lettered as not deliverable (caught by the demo's mail catcher in emulated mode)."""

from __future__ import annotations

import asyncio
import email
import email.policy
from collections.abc import AsyncIterator
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from livebridge.livedesk.emulator import Emulator

JSON = {"Accept": "application/json"}


class Inbox:
    """An aiosmtpd handler keeping every mail it is given."""

    def __init__(self) -> None:
        self.mails: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        self.mails.append(email.message_from_bytes(raw, policy=email.policy.default))
        return "250 OK"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[Inbox, int]]:
    """A real SMTP server on a random local port, in the test's event loop."""
    inbox = Inbox()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(inbox, hostname="localhost"), "127.0.0.1", 0)
    yield inbox, server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()


async def reply_to_first_post(bridge: Any, data: dict[str, str], text: str) -> None:
    resp = await bridge.client.post("/form", data=data, headers=JSON)
    assert resp.status == 200
    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [message] = state.messages.values()
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await bridge.emulator.agent_reply(message["conversation_id"], text)


async def test_an_agent_reply_is_emailed_to_the_customer(start_form: Any,
                                                         smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    bridge = await start_form({"smtp": {"host": "127.0.0.1", "port": port, "tls": "none",
                                        "sender": "support@example.com"}}, title="Acme support")
    await reply_to_first_post(bridge, {"name": "Ann Lee", "email": "ann@example.com",
                                       "message": "Where is my order?"}, "It ships today.")
    await bridge.wait_for(lambda: len(inbox.mails) == 1)
    [mail] = inbox.mails
    assert mail["To"] == "Ann Lee <ann@example.com>"
    assert mail["Subject"] == "Re: your message to Acme support"
    assert "support@example.com" in mail["From"]
    assert mail.get_content().strip() == "It ships today."


async def test_without_smtp_a_reply_is_dead_lettered_as_not_deliverable(
        start_form: Any, aiohttp_server: Any) -> None:
    emulator = Emulator(api_key="k", api_secret="s", inbox_id=5, webhook_secret="w" * 32)
    server = await aiohttp_server(emulator.app())  # real Livedesk: demo mode would catch mail
    bridge = await start_form({"livedesk": {
        "base_url": str(server.make_url("")).rstrip("/"), "api_key": "k", "api_secret": "s",
        "inbox_id": 5, "webhook_secret": "w" * 32}}, emulator=emulator)
    await reply_to_first_post(bridge, {"email": "ann@example.com", "message": "hi"}, "Hello!")

    async def dead() -> bool:
        return bool((await bridge.daemon.store.stats()).dead_letters == 1)

    await bridge.wait_for(dead)
    [letter] = await bridge.daemon.store.dead_letters()
    assert letter.kind == "reply" and "not deliverable" in letter.reason
    assert "smtp" in letter.reason


async def test_a_phone_only_customer_cannot_be_emailed(start_form: Any,
                                                       smtp: tuple[Inbox, int]) -> None:
    inbox, port = smtp
    bridge = await start_form({"smtp": {"host": "127.0.0.1", "port": port, "tls": "none",
                                        "sender": "support@example.com"}})
    await reply_to_first_post(bridge, {"phone": "+442079460000", "message": "hi"}, "Hello!")

    async def dead() -> bool:
        return bool((await bridge.daemon.store.stats()).dead_letters == 1)

    await bridge.wait_for(dead)
    [letter] = await bridge.daemon.store.dead_letters()
    assert "no email address" in letter.reason
    assert inbox.mails == []
