"""Demo mode (the built-in emulator): its data persists with the store, mail is caught when no
SMTP is configured, and the emulator's page shows caught mail and each reply's state.

The restart test with real processes is in ``tests/test_daemon_process.py``."""

from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import structlog

from livebridge import Retryable, Source, hookimpl
from livebridge._livedesk.emulator import Emulator, EmulatorState
from livebridge.mailer import Mailer
from livebridge.testing import BridgeHarness

JSON = {"Accept": "application/json"}
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def test_a_snapshot_restores_the_data_and_ids_continue() -> None:
    state = EmulatorState()
    ann = state.add_contact({"name": "Ann", "email": "ann@example.com"}, 0)
    conversation = {"id": state.next_conversation_id(), "inbox_id": 1,
                    "account_info": {"contact_id": ann["id"]}}
    state.add_conversation(conversation, ann, "src-ann")
    state.add_message({"id": state.next_message_id(), "conversation_id": conversation["id"],
                       "content": "hi"}, 0)
    state.add_attachment(b"\x00file", "application/octet-stream")

    restored = EmulatorState()
    restored.restore(json.loads(json.dumps(state.snapshot())))
    assert restored.contacts_list() == state.contacts_list()
    assert restored.search_contacts("ann@") == [ann]
    assert restored.duplicate_of({"email": "ANN@example.com"}) == "email"
    assert restored.contact_for_source("src-ann") == ann
    assert restored.conversation_source(conversation["id"]) == "src-ann"
    assert [m["content"] for m in restored.messages_in(conversation["id"])] == ["hi"]
    assert restored.attachments == [b"\x00file"]
    bob = restored.add_contact({"name": "Bob"}, 0)
    assert bob["id"] == ann["id"] + 1  # never an id the store may still map to Ann
    assert restored.next_conversation_id() == conversation["id"] + 1
    assert restored.next_message_id() == 2


def stuck_plugin(echo: Any) -> object:
    """A ``stuck`` source (the echo source at ``/stuck``) whose replies always fail for now."""
    [echo_source] = echo.livebridge_source_types()

    class StuckSource(echo_source):  # type: ignore[misc,valid-type]
        type_name = "stuck"

        async def send_reply(self, reply: Any) -> None:
            raise Retryable("the customer's API is down")

    class StuckPlugin:
        @hookimpl
        def livebridge_source_types(self) -> list[type[Source]]:
            return [StuckSource]

    return StuckPlugin()


async def demo_with_three_customers(make_bridge: Any, echo: Any, echo_post: Any
                                    ) -> tuple[BridgeHarness, dict[str, int]]:
    """A demo daemon (form, echo and stuck sources, no SMTP) with a message from a form
    customer, from an echo thread that is gone, and from a stuck customer; returns it and
    the conversation of each source."""
    bridge = await make_bridge({"sources": [{"type": "form"}, {"type": "echo"},
                                            {"type": "stuck", "path": "/stuck"}]},
                               plugins=[echo, stuck_plugin(echo)])
    state = bridge.emulator.state
    resp = await bridge.client.post("/form", headers=JSON, data={
        "name": "Ann Lee", "email": "ann@example.com", "message": "Where is my order?"})
    assert resp.status == 200
    await bridge.client.post("/echo", json=echo_post(1, user="gus", thread="gone"))
    await bridge.client.post("/stuck", json=echo_post(2, user="sam", thread="s1"))
    await bridge.wait_for(lambda: len(state.messages) == 3)
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")  # as `livebridge run` sets
    return bridge, {"form": await bridge.conversation_of("form", "ann@example.com"),
                    "echo": await bridge.conversation_of("echo", "gone"),
                    "stuck": await bridge.conversation_of("stuck", "s1")}


#: The agent's replies (the form's with a file), and the state the page shows for each.
REPLIES = {"form": "It ships today", "echo": "Hello Gus", "stuck": "Hello Sam"}
SHOWN = {"It ships today": "sent",
         "Hello Gus": "dead-lettered: the customer's channel is gone",
         "Hello Sam": "retrying: the customer's API is down"}


async def replies_settled(bridge: BridgeHarness) -> None:
    """Wait until each reply was tried and the one that failed for good is stored."""
    demo = bridge.daemon.demo
    assert demo is not None

    async def settled() -> bool:
        return len(demo.states) == 3 and (
            (await bridge.daemon.store.stats()).dead_letters == 1)

    await bridge.wait_for(settled)


async def test_the_demo_catches_mail_and_shows_each_replys_state(
        make_bridge: Any, echo: Any, echo_post: Any) -> None:
    bridge, conversations = await demo_with_three_customers(make_bridge, echo, echo_post)
    file = {"name": "invoice.txt", "content_type": "text/plain",
            "data": base64.b64encode(b"total: 12 EUR").decode()}
    for source, text in REPLIES.items():
        resp = await bridge.client.post(  # as the page posts it
            f"/emulator/_emulator/conversations/{conversations[source]}/reply",
            json={"content": text, "attachments": [file] if source == "form" else []})
        assert resp.status == 200
    demo = bridge.daemon.demo
    assert demo is not None and bridge.daemon.mailer is demo.catcher is not None
    await replies_settled(bridge)
    async with bridge.client.get("/emulator/") as resp:
        page = await resp.text()
    states = {text: html.unescape(state) for state, text in re.findall(
        r'<span class="state [^"]+">([^<]*)</span>.*?<span class="content">([^<]*)</span>',
        page)}
    assert states == SHOWN
    [href] = re.findall(r'<a class="file" href="([^"]+)">invoice.txt</a>', page)
    async with bridge.client.get(f"/emulator/{href}") as resp:  # relative, so kept by restarts
        assert await resp.read() == b"total: 12 EUR"
    mail = html.unescape(re.sub(r"<[^>]+>", "", page.split('id="caught-mail"', 1)[1]))
    assert "To Ann Lee <ann@example.com>: Re: your message to" in mail
    assert "It ships today" in mail and "Attachments: invoice.txt" in mail


@pytest.mark.browser
async def test_an_agent_sees_caught_mail_and_reply_states_in_a_browser(
        make_bridge: Any, echo: Any, echo_post: Any, tmp_path: Path) -> None:
    executable = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.access(executable, os.X_OK):
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")
    expect = async_api.expect
    bridge, conversations = await demo_with_three_customers(make_bridge, echo, echo_post)
    invoice = tmp_path / "invoice.txt"
    invoice.write_text("total: 12 EUR")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(bridge.url("/emulator/"))
            for source, text in REPLIES.items():
                cid = conversations[source]
                section = page.get_by_role("region", name=f"Conversation {cid} (open)")
                await section.get_by_label("Reply as agent").fill(text)
                if source == "form":
                    await section.get_by_label("Attach files").set_input_files(invoice)
                await section.get_by_role("button", name="Send reply").click()
                await expect(page.get_by_role("status")).to_have_text(
                    f"Reply to conversation {cid}: done.")
            await replies_settled(bridge)
            await page.reload()
            for text, state in SHOWN.items():
                reply = page.locator("li.outgoing", has_text=text)
                await expect(reply.locator(".state")).to_have_text(state)
            mail = page.get_by_role("region", name="Caught mail")
            await expect(mail.locator(".to")).to_have_text("Ann Lee <ann@example.com>")
            await expect(mail).to_contain_text("It ships today")
            await expect(mail).to_contain_text("Attachments: invoice.txt")
            await page.screenshot(path="/tmp/demo-emulator-page.png", full_page=True)
        finally:
            await browser.close()


async def test_with_smtp_the_demo_sends_mail_and_warns_of_nothing(make_bridge: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        bridge = await make_bridge({"sources": [{"type": "form"}], "smtp": {
            "host": "127.0.0.1", "port": 2525, "sender": "support@example.com"}})
    assert type(bridge.daemon.mailer) is Mailer
    assert not [e for e in logs if "no smtp" in e["event"]]


async def test_without_smtp_outside_the_demo_start_up_warns(make_bridge: Any,
                                                            aiohttp_server: Any) -> None:
    emulator = Emulator(api_key="k", api_secret="s", inbox_id=5)
    server = await aiohttp_server(emulator.app())
    with structlog.testing.capture_logs() as logs:
        bridge = await make_bridge({"sources": [{"type": "form"}], "livedesk": {
            "base_url": str(server.make_url("")).rstrip("/"), "api_key": "k",
            "api_secret": "s", "inbox_id": 5, "webhook_secret": "w" * 32}}, emulator=emulator)
    assert bridge.daemon.mailer is None
    [warning] = [e for e in logs if "no smtp" in e["event"]]
    assert warning["log_level"] == "warning"
    assert "replies to email and web-form customers cannot be sent" in warning["event"]
