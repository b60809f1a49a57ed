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


@pytest.mark.parametrize(("locale", "labels", "errors", "values"), [
    ("en-GB", ("Name", "Email", "Phone", "Message", "Send message"),
     ("There is a problem", "Enter an email address in the correct format",
      "Enter a phone number in international format",
      "Enter at least one of these: Email, Phone", "Enter your message"),
     ("Ann <Lee>", "ann@example", "12", "Hello & <b>goodbye</b>")),
    ("ja-JP", ("お名前", "メールアドレス", "電話番号", "お問い合わせ内容", "送信する"),
     ("入力内容に誤りがあります", "メールアドレスを正しい形式でご入力ください",
      "電話番号を国際電話番号の形式でご入力ください",
      "メールアドレス、電話番号のいずれかをご入力ください",
      "お問い合わせ内容をご入力ください"),
     ("山田 <花子>", "hanako@example", "12", "こんにちは & <b>さようなら</b>")),
])
async def test_a_customer_sees_the_errors_next_to_the_fields(
        start_form: Any, locale: str, labels: tuple[str, ...], errors: tuple[str, ...],
        values: tuple[str, ...]) -> None:
    """A post the server refuses comes back as the form, in the browser's language, with an
    error summary linking to each field, the errors inline and what was typed kept."""
    executable = chromium()
    if executable is None:
        pytest.skip("no Chromium: install Debian's chromium (see .ci/run)")
    async_api = pytest.importorskip("playwright.async_api")
    name, email, phone, message, submit = labels
    summary, email_error, phone_error, either_error, message_error = errors

    bridge = await start_form(title="Acme support")
    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=ARGS)
        try:
            context = await browser.new_context(locale=locale)
            page = await context.new_page()
            await page.goto(bridge.url("/form"))
            for label, value in zip((name, email, phone, message), values, strict=True):
                await page.get_by_label(label).fill(value)
            await page.get_by_role("button", name=submit).click()
            alert = page.get_by_role("alert")
            await alert.wait_for()
            shot = f"/tmp/form-errors-{locale}.png"
            await page.screenshot(path=shot, full_page=True)

            assert await page.evaluate("document.documentElement.lang") == locale[:2]
            assert await alert.get_by_role("heading").inner_text() == summary
            links = alert.get_by_role("link")
            first, second = await links.all_inner_texts()
            assert first.startswith(email_error) and second.startswith(phone_error)
            for label, error in ((email, email_error), (phone, phone_error)):
                field = page.get_by_label(label)
                assert await field.get_attribute("aria-invalid") == "true"
                assert error in (await field.evaluate(
                    "e => e.ariaDescribedByElements.map(d => d.textContent).join(' ')"))
            for label, value in zip((name, email, phone, message), values, strict=True):
                assert await page.get_by_label(label).input_value() == value
            await links.first.click()  # the summary leads to the field
            assert await page.evaluate("document.activeElement.id") == "f-email"

            # Neither email nor phone: one error for both, at their group.
            for label in (email, phone, message):
                await page.get_by_label(label).fill("")
            await page.get_by_role("button", name=submit).click()
            await page.get_by_role("link", name=either_error).wait_for()
            await page.screenshot(path=f"/tmp/form-errors-{locale}-2.png", full_page=True)
            assert await page.get_by_role("alert").get_by_role("link").all_inner_texts() == [
                either_error, message_error]
            assert either_error in await page.locator(".group .error").inner_text()
            for label in (email, phone, message):
                assert await page.get_by_label(label).get_attribute("aria-invalid") == "true"
            assert await page.get_by_label(name).input_value() == values[0]
        finally:
            await browser.close()
    state = bridge.emulator.state
    assert not state.messages and not state.contacts
