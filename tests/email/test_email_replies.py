"""The reply half: email in → agent reply in the emulator → mail out over SMTP (a real local
server) with threading headers → the customer's answer lands in the same conversation."""

from __future__ import annotations

import pytest
from email_helpers import (
    PROVIDERS,
    SUPPORT,
    Inbox,
    SMTPServer,
    SNSKeys,
    StartBridge,
    content_of,
    mail,
    smtp_server,  # noqa: F401 - fixture
    sns_keys,  # noqa: F401 - fixture
    start_inbox,
)

FIRST_ID = "<CAJ8kVx1qW3n5uXk0w3Zr9F2pYb7hTg5sLm1oQ4dE6fA2cB7N_g@mail.gmail.com>"


async def _agent_replies(inbox: Inbox, conversation: int, text: str) -> None:
    inbox.bridge.emulator.webhook_url = inbox.bridge.url("/livedesk/webhook")
    await inbox.bridge.emulator.agent_reply(conversation, text)


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_email_round_trip(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                smtp_server: SMTPServer, provider: str) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, provider, smtp_port=smtp_server.port)
    state = inbox.bridge.emulator.state
    first = mail(sender="Maria Schneider <Maria.Schneider@example.com>",
                 subject="Can't export reports", text="The CSV export spins forever.",
                 message_id=FIRST_ID)
    assert (await inbox.post(first)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [(conversation, _)] = content_of(inbox)

    await _agent_replies(inbox, conversation, "Please clear your browser cache and retry.")
    sent = await smtp_server.next()
    out = sent.message
    assert sent.rcpt_tos == ["maria.schneider@example.com"]
    assert out["To"] == "Maria Schneider <maria.schneider@example.com>"
    assert out["Subject"] == "Re: Can't export reports"
    assert out["In-Reply-To"].strip() == FIRST_ID
    assert out["References"].split() == [FIRST_ID]
    token_address = str(out["Reply-To"])
    local, _, domain = token_address.partition("@")
    assert local.startswith("support+") and domain == "help.example.com"
    plain = out.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().strip() == "Please clear your browser cache and retry."
    ours = str(out["Message-ID"])
    assert ours.endswith("@help.example.com>")

    # 1. An answer to our mail, threaded by In-Reply-To, with quoted history.
    answer = mail(sender="Maria Schneider <maria.schneider@example.com>",
                  subject=f"Re: {out['Subject']}", to=token_address,
                  text="Cache cleared, still spinning.\n\nOn Thu, Livedesk Support "
                       f"<{SUPPORT}> wrote:\n> Please clear your browser cache and retry.",
                  in_reply_to=ours, references=[FIRST_ID, ours])
    assert (await inbox.post(answer, stripped="Cache cleared, still spinning.")).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 3)  # ours (outgoing) counts
    incoming = [(c, t) for c, t in content_of(inbox)
                if t != "Please clear your browser cache and retry."]
    assert incoming[-1] == (conversation, "Cache cleared, still spinning.")

    # 2. The second reply carries the whole thread in References.
    await _agent_replies(inbox, conversation, "Thanks, we are looking into it.")
    second = (await smtp_server.next()).message
    assert second["In-Reply-To"].strip() == str(answer["Message-ID"])
    assert second["References"].split() == [FIRST_ID, ours, str(answer["Message-ID"])]
    assert second["Reply-To"] == token_address and second["Subject"] == out["Subject"]

    # 3. A mail with no threading headers at all, sent to the Reply-To address.
    bare = mail(sender="maria.schneider@example.com", subject="one more thing",
                text="Also the PDF export.", to=token_address)
    assert (await inbox.post(bare)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 5)
    assert content_of(inbox)[-1] == (conversation,
                                     "Subject: one more thing\n\nAlso the PDF export.")
    assert len(state.conversations) == 1


async def test_answer_to_our_message_id_alone_finds_the_thread(
        make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
        smtp_server: SMTPServer) -> None:  # noqa: F811
    """Sent to the plain support address (token lost), threaded only by our Message-ID."""
    inbox = await start_inbox(make_bridge, sns_keys, "mime", smtp_port=smtp_server.port)
    state = inbox.bridge.emulator.state
    await inbox.post(mail(subject="Invoice", text="Wrong VAT number."))
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [(conversation, _)] = content_of(inbox)
    await _agent_replies(inbox, conversation, "Fixed, see the new invoice.")
    ours = str((await smtp_server.next()).message["Message-ID"])
    await inbox.post(mail(subject="Re: Invoice", text="Thanks!", in_reply_to=ours, to=SUPPORT))
    await inbox.bridge.wait_for(lambda: len(state.messages) == 3)
    assert content_of(inbox)[-1] == (conversation, "Thanks!")


async def test_a_markdown_reply_is_multipart_alternative(
        make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
        smtp_server: SMTPServer) -> None:  # noqa: F811
    """The agent's Markdown: text/plain readable, text/html rendered (raw HTML escaped)."""
    inbox = await start_inbox(make_bridge, sns_keys, "mime", smtp_port=smtp_server.port)
    await inbox.post(mail(subject="Export", text="The export fails."))
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    [(conversation, _)] = content_of(inbox)
    await _agent_replies(inbox, conversation, "**Next step:** see [the guide]"
                         "(https://example.com/guide).\n\n1. Open *Settings*\n2. Press <b>")
    out = (await smtp_server.next()).message
    assert out.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in out.iter_parts()] == ["text/plain", "text/html"]
    plain, html = out.get_body(("plain",)), out.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().splitlines() == [
        "Next step: see the guide (https://example.com/guide).", "", "1. Open Settings",
        "2. Press <b>"]
    page = html.get_content()
    assert "<html><head>" in page and page.rstrip().endswith("</body></html>")
    assert '<p><strong>Next step:</strong> see <a href="https://example.com/guide">the ' \
           "guide</a>.</p>" in page
    assert "<li>Open <em>Settings</em></li>" in page and "<li>Press &lt;b&gt;</li>" in page


async def test_reply_without_smtp_is_caught_in_the_demo(make_bridge: StartBridge,
                                                        sns_keys: SNSKeys) -> None:  # noqa: F811
    """With the built-in emulator and no SMTP, the demo's mail catcher takes the reply (a
    real Livedesk without SMTP dead-letters it: tests/form/test_form_replies.py)."""
    inbox = await start_inbox(make_bridge, sns_keys, "mime")
    state = inbox.bridge.emulator.state
    await inbox.post(mail(subject="Hi", text="Hello"))
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [(conversation, _)] = content_of(inbox)
    await _agent_replies(inbox, conversation, "Hello back")
    demo = inbox.bridge.daemon.demo
    assert demo is not None and demo.catcher is not None
    await inbox.bridge.wait_for(lambda: demo.caught_mail() != [])
    [caught] = demo.caught_mail()
    assert (caught.subject, caught.text.strip()) == ("Re: Hi", "Hello back")
