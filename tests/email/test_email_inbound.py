"""Each provider end to end, over HTTP to the running daemon, with real-shaped payloads signed
or authenticated as that provider does: threading, reply stripping, charsets, HTML-only mail,
attachments, auto-replies, dedupe and forged requests."""

from __future__ import annotations

import pytest
from email_helpers import (
    FORGED_STATUS,
    PROVIDERS,
    SUPPORT,
    Inbox,
    SNSKeys,
    StartBridge,
    content_of,
    mail,
    sns_keys,  # noqa: F401 - fixture
    start_inbox,
)

FIRST_ID = "<CAJ8kVx1qW3n5uXk0w3Zr9F2pYb7hTg5sLm1oQ4dE6fA2cB7N_g@mail.gmail.com>"
FIRST = ("Hi there,\n\nSince this morning the \"Export to CSV\" button in Reports just spins.\n"
         "Our workspace ID is 55821.")
NEW_TEXT = "Clearing the cache didn't help, but \"Last 30 days\" works."
REPLY = (f"{NEW_TEXT}\n\nMaria\n\nOn Mon, Mar 9, 2026 at 5:12 PM Maria Schneider "
         "<maria@example.com>\nwrote:\n\n> " + FIRST.replace("\n", "\n> ") + "\n")


@pytest.fixture(params=PROVIDERS)
def provider(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def inbox(provider: str, make_bridge: StartBridge,
                sns_keys: SNSKeys) -> Inbox:  # noqa: F811 - the fixture above
    return await start_inbox(make_bridge, sns_keys, provider)


async def test_first_reply_and_forward(inbox: Inbox) -> None:
    state = inbox.bridge.emulator.state
    first = mail(subject="Can't export reports to CSV", text=FIRST, message_id=FIRST_ID)
    resp = await inbox.post(first)
    assert resp.status == 200, await resp.text()
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [(conversation, content)] = content_of(inbox)
    assert content == f"Subject: Can't export reports to CSV\n\n{FIRST}"
    [contact] = state.contacts.values()
    assert contact["name"] == "Maria Schneider" and contact["email"] == "maria@example.com"

    reply = mail(subject="Re: Can't export reports to CSV", text=REPLY,
                 in_reply_to=FIRST_ID, references=[FIRST_ID],
                 sender="Maria Schneider <Maria@Example.com>")
    resp = await inbox.post(reply, stripped=f"{NEW_TEXT}\n\nMaria")
    assert resp.status == 200, await resp.text()
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    assert content_of(inbox)[1] == (conversation, f"{NEW_TEXT}\n\nMaria")
    assert len(state.contacts) == 1  # the From address, lowercased, is the same sender

    forward = mail(subject="Fwd: Your receipt #2291-4471",
                   text="I was charged twice, see below.\n\n---------- Forwarded message "
                        "---------\nFrom: Example Store <receipts@store.example.org>\n"
                        "Subject: Your receipt #2291-4471\n\nTotal charged: $58.00")
    resp = await inbox.post(forward)
    assert resp.status == 200, await resp.text()
    await inbox.bridge.wait_for(lambda: len(state.messages) == 3)
    new_conversation, content = content_of(inbox)[2]
    assert new_conversation != conversation and len(state.conversations) == 2
    assert content.startswith("Subject: Fwd: Your receipt #2291-4471\n\nI was charged twice")
    assert "Total charged: $58.00" in content  # a forward keeps what it forwards


async def test_non_utf8_mail_reads_correctly(inbox: Inbox) -> None:
    text = "Die Gutschrift über 49,90 € ist eingegangen. Grüße aus der Straße des 17. Juni"
    latin = mail(sender="Jürgen Weißmüller <j.weissmueller@example.com>",
                 subject="Rückerstattung für doppelte Abbuchung", text=text.replace("€", "EUR"),
                 charset="iso-8859-1", cte="quoted-printable")
    assert (await inbox.post(latin)).status == 200
    ru_text = "Синхронизация останавливается"
    russian = mail(sender="Анна Соколова <a.sokolova@example.org>", subject="Ошибка синхронизации",
                   text=ru_text, charset="koi8-r", cte="8bit")
    assert (await inbox.post(russian)).status == 200
    state = inbox.bridge.emulator.state
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    contents = [c for _, c in content_of(inbox)]
    assert contents[0] == ("Subject: Rückerstattung für doppelte Abbuchung\n\n"
                           + text.replace("€", "EUR"))
    assert contents[1] == f"Subject: {russian['Subject']}\n\n{ru_text}"
    names = sorted(c["name"] for c in state.contacts.values())
    assert names == ["Jürgen Weißmüller", "Анна Соколова"]


async def test_html_only_mail_reads_as_text(inbox: Inbox) -> None:
    html = ("<html><head><style>p{color:red}</style></head><body><div>Hello team,</div>"
            "<p>The quote lists <b>120</b> seats &mdash; we have 95.</p><table>"
            "<tr><th>Item</th><th>Seats</th></tr><tr><td>Pro</td><td>120</td></tr></table>"
            "<ul><li>one</li><li>two</li></ul><p>Report: <a href=\"https://help.example.com/"
            "seats\">seats</a></p></body></html>")
    assert (await inbox.post(mail(subject="Seats", text=None, html=html))).status == 200
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    [(_, content)] = content_of(inbox)
    assert content == ("Subject: Seats\n\nHello team,\n\nThe quote lists 120 seats — we have "
                       "95.\n\nItem | Seats\nPro | 120\n\n- one\n- two\n\n"
                       "Report: seats (https://help.example.com/seats)")


async def test_attachments_are_uploaded_or_listed(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                                 provider: str) -> None:
    """Files up to ``attachment_max_bytes`` reach Livedesk; larger ones are listed."""
    inbox = await start_inbox(make_bridge, sns_keys, provider, attachment_max_bytes=1000)
    pdf, big = b"%PDF-1.4 test document", b"x" * 1001
    msg = mail(subject="Invoice", text="The invoice is attached.",
               attachments=[("invoice.pdf", "application/pdf", pdf),
                            ("Protokoll März.bin", "application/octet-stream", big)])
    assert (await inbox.post(msg)).status == 200
    state = inbox.bridge.emulator.state
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [message] = state.messages.values()
    assert [(a["name"], a["content_type"], a["file_size"]) for a in message["attachments"]] \
        == [("invoice.pdf", "application/pdf", len(pdf))]
    assert state.attachments == [pdf]
    assert message["content"].endswith(
        "[attachment] Protokoll März.bin (application/octet-stream, 1001 bytes): "
        "(file not forwarded)")


@pytest.mark.parametrize(("headers", "reason"), [
    ({"Auto-Submitted": "auto-replied", "X-Autoreply": "yes"}, "auto-reply"),
    ({"Precedence": "bulk"}, "bulk"),
])
async def test_automatic_mail_is_dropped_and_counted(inbox: Inbox, headers: dict[str, str],
                                                     reason: str) -> None:
    msg = mail(subject="Out of office: Re: Hello", text="I am out of office until Monday.",
               headers=headers)
    resp = await inbox.post(msg)
    assert resp.status == 200 and (await resp.json())["dropped"] == reason
    bounce = mail(sender="MAILER-DAEMON@mx.example.com (Mail Delivery System)",
                  subject="Undelivered Mail Returned to Sender", text="could not be delivered")
    resp = await inbox.post(bounce)
    assert resp.status == 200 and (await resp.json())["dropped"] == "bounce"
    dropped = inbox.bridge.daemon.metrics.dropped
    assert dropped.labels(source="email", reason=reason)._value.get() == 1
    assert dropped.labels(source="email", reason="bounce")._value.get() == 1
    await inbox.bridge.wait_idle()
    assert not inbox.bridge.emulator.state.messages
    assert (await inbox.bridge.daemon.store.stats()).depth == 0


async def test_forged_request_is_refused_and_stores_nothing(inbox: Inbox) -> None:
    msg = mail(subject="Hello", text="Please reset my password")
    resp = await inbox.post(msg, forged=True)
    assert resp.status == FORGED_STATUS[inbox.provider]
    rejected = inbox.bridge.daemon.metrics.rejected
    assert sum(s.value for m in rejected.collect() for s in m.samples
               if s.name.endswith("_total")) == 1
    assert not await inbox.bridge.daemon.store.seen("email", str(msg["Message-ID"]))
    assert (await inbox.bridge.daemon.store.stats()).depth == 0
    assert (await inbox.post(msg)).status == 200  # the genuine one still gets in


async def test_same_message_id_is_stored_once(inbox: Inbox) -> None:
    msg = mail(subject="Hello", text="Twice delivered")
    first, second = await inbox.post(msg), await inbox.post(msg)
    assert (await first.json())["result"] == "accepted"
    assert (await second.json())["result"] == "duplicate"
    await inbox.bridge.wait_idle()
    assert len(inbox.bridge.emulator.state.messages) == 1


async def test_reply_from_a_client_that_rewrote_ids_finds_its_thread(inbox: Inbox) -> None:
    """Outlook: In-Reply-To names an id the bridge never saw; References still has ours."""
    first = mail(subject="Calendar sync fails", text="Shared mailboxes do not sync.")
    await inbox.post(first)
    state = inbox.bridge.emulator.state
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    outlook_ids = [f"<DM6PR11MB4657{i:020X}@DM6PR11MB4657.namprd11.prod.outlook.com>"
                   for i in range(8)]
    reply = mail(subject="RE: Calendar sync fails", text="Still failing for Room 4.12.",
                 in_reply_to=outlook_ids[-1],
                 references=[outlook_ids[0], str(first["Message-ID"]), *outlook_ids[1:]])
    await inbox.post(reply, stripped="Still failing for Room 4.12.")
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    (c1, _), (c2, content) = content_of(inbox)
    assert c1 == c2 and content == "Still failing for Room 4.12."


async def test_long_text_is_truncated_visibly(make_bridge: StartBridge,
                                              sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime", max_text_chars=500)
    await inbox.post(mail(subject="Log", text="x" * 2000, to=SUPPORT))
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    [(_, content)] = content_of(inbox)
    assert len(content) == 500
    assert content.endswith("more characters not shown]") and "[truncated: " in content
