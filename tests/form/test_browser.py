"""The form in a real headless Chromium: fill it in, submit, land on the thank-you page, and
find the message in the Livedesk emulator.

Uses Debian's ``chromium`` (browsers cannot be downloaded here); ``.ci/run`` installs it, so
CI always runs this test. Elsewhere it is skipped when no Chromium is installed.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

pytestmark = pytest.mark.browser

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium() -> str | None:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    return path if os.access(path, os.X_OK) else None


async def test_a_customer_fills_in_and_submits_the_form(start_form: Any) -> None:
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")

    bridge = await start_form(title="Acme support")  # same-origin posts need no config
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            page = await browser.new_page()
            await page.goto(bridge.url("/form"))
            await page.get_by_label("Name").fill("Ann Lee")
            await page.get_by_label("Email").fill("ann@example.com")
            await page.get_by_label("Message").fill("Hello from a real browser.")
            await page.screenshot(path="/tmp/form.png", full_page=True)
            await page.get_by_role("button", name="Send message").click()
            await page.get_by_role("heading", name="Thank you").wait_for()
            assert page.url == bridge.url("/form/thanks")
            await page.screenshot(path="/tmp/form-thanks.png", full_page=True)
        finally:
            await browser.close()

    state = bridge.emulator.state
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [message] = state.messages.values()
    assert message["content"] == "Hello from a real browser."
    [contact] = state.contacts.values()
    assert (contact["name"], contact["email"]) == ("Ann Lee", "ann@example.com")
    [conversation] = state.conversations.values()
    assert conversation["custom_attributes"] == {
        "form": "form", "page": bridge.url("/form"), "livebridge_thread": "form|ann@example.com"}
