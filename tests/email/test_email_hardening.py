"""What a hostile or broken sender cannot do: join (and redirect) someone else's thread,
crash the webhook into a 500 with malformed input, replay an old SNS notification; and what
concurrent deliveries of one thread must not do: split it or lose its Message-IDs."""

from __future__ import annotations

import asyncio
import json
from email.utils import make_msgid
from typing import Any

import pytest
from email_helpers import (
    FORGED_STATUS,
    PROVIDERS,
    SUPPORT,
    Inbox,
    SMTPServer,
    SNSKeys,
    StartBridge,
    basic_auth,
    content_of,
    mail,
    mailgun_payload,
    mailgun_signature,
    post_form,
    postmark_payload,
    smtp_server,  # noqa: F401 - fixture
    sns_keys,  # noqa: F401 - fixture
    sns_notification,
    sns_time,
    start_inbox,
)
from livebridge_email.parse import normalize_id

FIRST_ID = "<CAJ8kVx1qW3n5uXk0w3Zr9F2pYb7hTg5sLm1oQ4dE6fA2cB7N_g@mail.gmail.com>"
EVE = "Maria Schneider <eve@attacker.example>"


async def _agent_replies(inbox: Inbox, conversation: int, text: str) -> None:
    inbox.bridge.emulator.webhook_url = inbox.bridge.url("/livedesk/webhook")
    await inbox.bridge.emulator.agent_reply(conversation, text)


# --- thread hijack ------------------------------------------------------------------------


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_stranger_cannot_join_or_redirect_a_thread(
        make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
        smtp_server: SMTPServer, provider: str) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, provider, smtp_port=smtp_server.port)
    state = inbox.bridge.emulator.state
    first = mail(subject="Refund for order 7", text="Please refund order 7.",
                 message_id=FIRST_ID, headers={"Cc": "Tom Becker <tom@example.com>"})
    assert (await inbox.post(first)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [(conversation, _)] = content_of(inbox)
    thread = await inbox.source.threads.info(normalize_id(FIRST_ID))
    assert thread is not None
    token_address = f"support+{thread.token}@help.example.com"

    # Eve knows Maria's Message-ID and the thread's reply token: she gets a thread of her own.
    hijack = mail(sender=EVE, subject="Re: Refund for order 7", to=token_address,
                  text="Please send the refund to IBAN DE00 6666.", in_reply_to=FIRST_ID,
                  references=[FIRST_ID])
    assert (await inbox.post(hijack)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    assert content_of(inbox)[1][0] != conversation
    # Even under Maria's own Message-ID her mail is neither Maria's nor a duplicate.
    resp = await inbox.post(mail(sender=EVE, subject="Re: Refund for order 7",
                                 text="Any news?", message_id=FIRST_ID))
    assert resp.status == 200 and (await resp.json())["result"] == "accepted"
    await inbox.bridge.wait_for(lambda: len(state.messages) == 3)
    assert [c for c, _ in content_of(inbox)].count(conversation) == 1  # only Maria's
    assert len(state.conversations) == 3

    # The agent's answer still goes to Maria, under a Message-ID that names no thread token.
    await _agent_replies(inbox, conversation, "The refund is on its way.")
    sent = await smtp_server.next()
    assert sent.rcpt_tos == ["maria@example.com"]
    ours = str(sent.message["Message-ID"])
    assert thread.token not in ours

    # Tom, in Cc of Maria's mail, is a participant: his answer joins the thread.
    tom = mail(sender="Tom Becker <tom@example.com>", subject="Re: Refund for order 7",
               text="Thanks from me too.", in_reply_to=ours, references=[FIRST_ID, ours])
    assert (await inbox.post(tom)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 5)  # the agent's counts
    assert content_of(inbox)[-1] == (conversation, "Thanks from me too.")


# --- races --------------------------------------------------------------------------------


async def test_concurrent_mails_of_one_thread_keep_it_whole(
        make_bridge: StartBridge, sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime")
    state = inbox.bridge.emulator.state

    # A reply that overtakes the mail it answers still ends up in one conversation.
    first_id = make_msgid(domain="example.com")
    reply = mail(subject="Re: Login", text="Also on mobile.", in_reply_to=first_id,
                 references=[first_id])
    assert (await inbox.post(reply)).status == 200
    assert (await inbox.post(mail(subject="Login", text="Cannot log in.",
                                  message_id=first_id))).status == 200

    # A new mail and its reply at the same time: one conversation, too.
    second_id = make_msgid(domain="example.com")
    pair = [mail(subject="Export", text="Export fails.", message_id=second_id),
            mail(subject="Re: Export", text="Since today.", in_reply_to=second_id,
                 references=[second_id])]
    assert [r.status for r in await asyncio.gather(*map(inbox.post, pair))] == [200, 200]

    # Several replies at once: the thread remembers every one of their Message-IDs.
    replies = [mail(subject="Re: Export", text=f"Detail {i}.", in_reply_to=second_id,
                    references=[second_id]) for i in range(6)]
    assert {r.status for r in await asyncio.gather(*map(inbox.post, replies))} == {200}

    await inbox.bridge.wait_for(lambda: len(state.messages) == 10)
    by_conversation: dict[int, int] = {}
    for conversation, _ in content_of(inbox):
        by_conversation[conversation] = by_conversation.get(conversation, 0) + 1
    assert sorted(by_conversation.values()) == [2, 8]
    thread = await inbox.source.threads.info(normalize_id(second_id))
    assert thread is not None
    assert set(thread.message_ids) == {second_id, str(pair[1]["Message-ID"]),
                                       *(str(r["Message-ID"]) for r in replies)}


# --- malformed input: 4xx, never 500 ------------------------------------------------------


def _raw_with_empty_id() -> bytes:
    return mail(subject="No id", text="My client writes an empty Message-ID.",
                message_id="<placeholder@x>").as_bytes().replace(b"<placeholder@x>", b"<>")


async def _post_empty_id(inbox: Inbox) -> Any:
    client, path = inbox.bridge.client, inbox.path
    msg = mail(subject="No id", text="My client writes an empty Message-ID.")
    if inbox.provider == "mime":
        return await client.post(path, data=_raw_with_empty_id(), headers=basic_auth())
    if inbox.provider == "mailgun":
        form = mailgun_payload(msg)
        assert isinstance(form, dict)
        headers = [[k, "<>" if k.lower() == "message-id" else str(v)] for k, v in msg.items()]
        form.update({"message-headers": json.dumps(headers), "Message-Id": "<>",
                     **mailgun_signature()})
        return await post_form(client, path, form)
    payload = postmark_payload(msg)
    for header in payload["Headers"]:
        if header["Name"].lower() == "message-id":
            header["Value"] = "<>"
    return await client.post(path, json=payload, headers=basic_auth())


@pytest.mark.parametrize("provider", ["mime", "mailgun", "postmark"])
async def test_empty_message_id_is_accepted_and_deduplicated(
        make_bridge: StartBridge, sns_keys: SNSKeys, provider: str) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, provider)
    first, again = await _post_empty_id(inbox), await _post_empty_id(inbox)
    assert first.status == 200, await first.text()
    assert (await first.json())["result"] == "accepted"
    assert (await again.json())["result"] == "duplicate"  # the fingerprint stands in
    await inbox.bridge.wait_idle()
    assert [c for _, c in content_of(inbox)] == [
        "Subject: No id\n\nMy client writes an empty Message-ID."]


def _multipart(*parts: str) -> tuple[bytes, dict[str, str]]:
    return "".join(parts).encode(), {"Content-Type": "multipart/form-data; boundary=b"}


_TRUNCATED = _multipart("--b\r\nxx")
_BOGUS_ENCODING = _multipart(
    '--b\r\nContent-Disposition: form-data; name="body-plain"\r\n'
    "Content-Transfer-Encoding: bogus\r\n\r\nhello\r\n--b--\r\n")


@pytest.mark.parametrize("provider", ["mailgun", "sendgrid"])
async def test_malformed_forms_are_a_400(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                         provider: str) -> None:
    """A 400, not retried (Mailgun's 406): a body the strict RFC 7578 reader cannot split is
    the sender's fault."""
    inbox = await start_inbox(make_bridge, sns_keys, provider)
    auth = basic_auth() if provider == "sendgrid" else {}
    for body, headers in (_TRUNCATED, _BOGUS_ENCODING):
        resp = await inbox.bridge.client.post(inbox.path, data=body,
                                              headers={**headers, **auth})
        assert resp.status == (406 if provider == "mailgun" else 400), await resp.text()
        assert (await resp.json())["error"] == "malformed multipart body"


async def test_non_ascii_credentials_are_refused(make_bridge: StartBridge,
                                               sns_keys: SNSKeys) -> None:  # noqa: F811
    mailgun = await start_inbox(make_bridge, sns_keys, "mailgun")
    form = mailgun_payload(mail(text="Hello"))
    assert isinstance(form, dict)
    for field in ("signature", "timestamp", "token"):
        resp = await post_form(mailgun.bridge.client, mailgun.path,
                               {**form, field: form[field] + "é"})
        assert resp.status == 401, await resp.text()
    for provider in ("sendgrid", "postmark", "mime"):
        inbox = await start_inbox(make_bridge, sns_keys, provider)
        for value in ("Basic é", "Basic " + "Zm9vOmLDqQ==", "Bäsic x"):  # foo:bé
            resp = await inbox.bridge.client.post(inbox.path, data=b"{}",
                                                  headers={"Authorization": value})
            assert resp.status == FORGED_STATUS[provider], (provider, value, await resp.text())


async def test_non_ascii_base64_is_refused(make_bridge: StartBridge,
                                           sns_keys: SNSKeys) -> None:  # noqa: F811
    postmark = await start_inbox(make_bridge, sns_keys, "postmark")
    payload = postmark_payload(mail(text="See attached",
                                    attachments=[("a.pdf", "application/pdf", b"%PDF")]))
    payload["Attachments"][0]["Content"] = "JVBERi0é"
    resp = await postmark.bridge.client.post(postmark.path, json=payload, headers=basic_auth())
    assert resp.status == 403  # Postmark's "stop": this payload never becomes valid

    ses = await start_inbox(make_bridge, sns_keys, "ses")
    body = sns_notification(mail(text="Hi").as_bytes(), [SUPPORT], sns_keys)
    notification = json.loads(body["Message"])
    notification["content"] = "SGVsbG8é"
    body = sns_keys.sign({**body, "Message": json.dumps(notification)})
    resp = await ses.bridge.client.post(ses.path, data=json.dumps(body), headers={
        "x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"})
    assert resp.status == 400


async def test_internationalized_sender_address(make_bridge: StartBridge,
                                                sns_keys: SNSKeys) -> None:  # noqa: F811
    """Postmark names the sender apart (``FromFull``); an SMTPUTF8 address is no 500."""
    inbox = await start_inbox(make_bridge, sns_keys, "postmark")
    payload = postmark_payload(mail(subject="Grüße", text="Hallo"))
    payload["FromFull"] = {"Email": "jörg@müller.example", "Name": 'Jörg "J" Müller'}
    resp = await inbox.bridge.client.post(inbox.path, json=payload, headers=basic_auth())
    assert resp.status == 200, await resp.text()
    await inbox.bridge.wait_idle()
    [contact] = inbox.bridge.emulator.state.contacts.values()
    assert contact["name"] == 'Jörg "J" Müller'


# --- SNS replay ---------------------------------------------------------------------------


async def test_old_sns_notifications_are_refused(make_bridge: StartBridge,
                                                 sns_keys: SNSKeys) -> None:  # noqa: F811
    headers = {"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"}
    raw = mail(subject="Replayed", text="Captured two hours ago").as_bytes()
    old = sns_notification(raw, [SUPPORT], sns_keys, timestamp=sns_time(age=7200))
    odd = sns_notification(raw, [SUPPORT], sns_keys, timestamp="yesterday")

    inbox = await start_inbox(make_bridge, sns_keys, "ses")
    for body, reason in ((old, "stale timestamp"), (odd, "bad timestamp")):
        resp = await inbox.bridge.client.post(inbox.path, data=json.dumps(body),
                                              headers=headers)
        assert resp.status == 403 and (await resp.json())["error"] == reason
    await inbox.bridge.wait_idle()
    assert not inbox.bridge.emulator.state.messages

    lenient = await start_inbox(make_bridge, sns_keys, "ses", ses_max_age="3h")
    resp = await lenient.bridge.client.post(lenient.path, data=json.dumps(old),
                                            headers=headers)
    assert resp.status == 200
