"""The emulator's page in a real headless Chromium: a person plays an agent (reply, resolve,
merge, delete), and a page on another origin cannot drive it.

Uses Debian's ``chromium`` like ``tests/form/test_browser.py``; skipped when none is installed.
"""

from __future__ import annotations

import base64
import os
import shutil
from typing import Any

import pytest
from aiohttp import web
from pytest_aiohttp import AiohttpServer

from livebridge.daemon import EMULATOR_CREDENTIALS

pytestmark = pytest.mark.browser

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None


async def test_an_agent_acts_on_the_page(make_bridge: Any, echo: Any, echo_post: Any,
                                         aiohttp_server: AiohttpServer) -> None:
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")
    expect = async_api.expect

    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    state = bridge.emulator.state
    await bridge.client.post("/echo", json=echo_post(1, user="ann", email="ann@example.com"))
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [(ann, cid)] = [(c["account_info"]["contact_id"], c["id"])
                    for c in state.conversations.values()]
    key, secret, inbox = EMULATOR_CREDENTIALS
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    async with bridge.daemon.http.post(  # an agent's own contact for Ann, to merge into
            f"{bridge.daemon.livedesk_url}/api/v2/accounts/contacts",
            json={"inbox_id": inbox, "name": "Ann Lee", "phone_number": "+15550001"},
            headers={"Authorization": f"Basic {token}"}) as resp:
        base = (await resp.json())["payload"]["contact"]["id"]

    # a page elsewhere whose form posts to the admin endpoint as soon as it loads
    target = bridge.url(f"/emulator/_emulator/conversations/{cid}/reply")
    async def lure(request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=(
            f'<form method="post" action="{target}" enctype="text/plain">'
            '<input name=\'{"content": "Log in at https://evil.example", "x": "\' value=\'"}\'>'
            "</form><script>document.forms[0].submit()</script>"))

    evil = web.Application()
    evil.router.add_get("/", lure)
    elsewhere = await aiohttp_server(evil)

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page()
            page.on("dialog", lambda dialog: dialog.accept())  # "Delete ...?" confirmations
            async with page.expect_response(target) as refused:
                await page.goto(str(elsewhere.make_url("/")))
            assert (await refused.value).status == 403
            assert len(state.messages) == 1

            await page.goto(bridge.url("/emulator/"))
            status = page.get_by_role("status")
            section = page.get_by_role("region", name=f"Conversation {cid} (open)")
            await section.get_by_label("Reply as agent").fill("Hello from the page")
            await section.get_by_role("button", name="Send reply").click()
            await expect(status).to_have_text(f"Reply to conversation {cid}: done.")
            await expect(section).to_contain_text("Hello from the page")
            assert state.messages_in(cid)[-1]["message_type"] == 1

            await section.get_by_role("button", name="Resolve").click()
            await expect(status).to_have_text(f"Resolve conversation {cid}: done.")
            assert state.conversations[cid]["status"] == "resolved"
            section = page.get_by_role("region", name=f"Conversation {cid} (resolved)")
            await expect(section.get_by_role("button", name="Reopen")).to_be_visible()

            row = page.locator(f"#contact-{ann}")
            await row.get_by_label("Merge into contact").fill("99999")
            await row.get_by_role("button", name="Merge").click()
            await expect(status).to_have_text(
                f"Merge contact {ann}: failed (404): Resource could not be found")
            await row.get_by_label("Merge into contact").fill(str(base))
            await row.get_by_role("button", name="Merge").click()
            await expect(status).to_have_text(f"Merge contact {ann}: done.")
            assert list(state.contacts) == [base]
            await expect(section).to_contain_text(f"Contact {base}: Ann Lee <ann@example.com>")
            await page.screenshot(path="/tmp/emulator-page.png", full_page=True)

            await section.get_by_role("button", name="Delete conversation").click()
            await expect(status).to_have_text(f"Delete conversation {cid}: done.")
            await expect(section).to_have_count(0)
            assert state.conversations == {} and state.messages == {}
            await page.locator(f"#contact-{base}").get_by_role(
                "button", name="Delete contact").click()
            await expect(status).to_have_text(f"Delete contact {base}: done.")
            assert state.contacts == {}
            await page.screenshot(path="/tmp/emulator-page-empty.png", full_page=True)
        finally:
            await browser.close()
