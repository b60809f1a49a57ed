"""What is particular to each provider: Mailgun's replay protection and raw mode, SendGrid's
raw mode and Basic auth, Postmark's MailboxHash and 403, SNS signatures and subscriptions,
raw MIME limits; and the settings each one needs."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from email_helpers import (
    CERT_URL,
    PASSWORD,
    SIGNING_KEY,
    SUPPORT,
    TOPIC,
    USER,
    Inbox,
    SNSKeys,
    StartBridge,
    basic_auth,
    content_of,
    mail,
    mailgun_payload,
    mailgun_signature,
    post_form,
    sendgrid_payload,
    sns_keys,  # noqa: F401 - fixture
    sns_notification,
    sns_time,
    source_config,
    start_inbox,
)
from livebridge_email.sns import canonical, is_sns_url

from livebridge.exceptions import ConfigError
from livebridge.testing import build_config

# --- Mailgun ------------------------------------------------------------------------------


async def _nothing_stored(inbox: Inbox) -> None:
    await inbox.bridge.wait_idle()
    assert (await inbox.bridge.daemon.store.stats()).depth == 0
    assert not inbox.bridge.emulator.state.messages


async def test_mailgun_refuses_stale_unsigned_and_replayed(make_bridge: StartBridge,
                                                           sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun", max_age="2m")
    client, msg = inbox.bridge.client, mail(text="Hello")
    stale = mailgun_signature(timestamp=int(time.time()) - 121)
    resp = await post_form(client, inbox.path, mailgun_payload(msg, signature=stale))
    assert resp.status == 401 and (await resp.json())["error"] == "stale timestamp"
    unsigned = {k: v for k, v in mailgun_payload(msg).items() if k != "signature"}  # type: ignore[union-attr]
    assert (await post_form(client, inbox.path, unsigned)).status == 401
    await _nothing_stored(inbox)

    signed = mailgun_payload(msg, signature=mailgun_signature())
    assert (await post_form(client, inbox.path, signed)).status == 200
    replay = await post_form(client, inbox.path, signed)
    assert replay.status == 406 and (await replay.json())["error"] == "reused token"


async def test_mailgun_raw_mime_mode(make_bridge: StartBridge,
                                     sns_keys: SNSKeys) -> None:  # noqa: F811
    """A route URL ending in 'mime' gets the whole message as ``body-mime``."""
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun", path="/email/mailgun/mime")
    msg = mail(subject="Raw", text="Hello from the raw route\n\nOn Mon, X wrote:\n> old")
    form = {"body-mime": msg.as_string(), "recipient": SUPPORT, "sender": "maria@example.com",
            **mailgun_signature()}
    assert (await post_form(inbox.bridge.client, inbox.path, form)).status == 200
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    assert content_of(inbox)[0][1] == "Subject: Raw\n\nHello from the raw route"


async def test_mailgun_stripped_text_is_preferred(make_bridge: StartBridge,
                                                  sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun")
    msg = mail(subject="Parsed", text="Mine\n\nOn Mon someone wrote:\n> old")
    payload = mailgun_payload(msg, stripped="Mailgun's own cut")
    assert (await post_form(inbox.bridge.client, inbox.path, payload)).status == 200
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    assert content_of(inbox)[0][1] == "Subject: Parsed\n\nMailgun's own cut"


# --- SendGrid -----------------------------------------------------------------------------


async def test_sendgrid_raw_mode_and_basic_auth(make_bridge: StartBridge,
                                                sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "sendgrid")
    client = inbox.bridge.client
    msg = mail(sender="佐藤 健 <sato@example.net>", subject="請求書の再発行",
               text="再発行をお願いできますでしょうか。", charset="shift_jis", cte="base64",
               attachments=[("invoice.pdf", "application/pdf", b"%PDF-1.4")])
    form = sendgrid_payload(msg, raw=True)
    for headers in ({}, basic_auth(password="nope"), {"Authorization": "Bearer x"}):
        resp = await post_form(client, inbox.path, form, headers)
        assert resp.status == 503 and resp.headers["WWW-Authenticate"].startswith("Basic")
    assert (await post_form(client, inbox.path, form, basic_auth())).status == 200
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    [(_, content)] = content_of(inbox)
    assert content == "Subject: 請求書の再発行\n\n再発行をお願いできますでしょうか。"
    [message] = inbox.bridge.emulator.state.messages.values()
    assert [(a["name"], a["file_size"]) for a in message["attachments"]] == [("invoice.pdf", 8)]
    [contact] = inbox.bridge.emulator.state.contacts.values()
    assert contact["name"] == "佐藤 健"


async def test_sendgrid_post_without_email_or_headers_is_refused(
        make_bridge: StartBridge, sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "sendgrid")
    resp = await post_form(inbox.bridge.client, inbox.path, {"text": "hi"}, basic_auth())
    assert resp.status == 400


# --- Postmark -----------------------------------------------------------------------------


async def test_postmark_mailbox_hash_threads_and_403_stops_retries_of_bad_mail(
        make_bridge: StartBridge, sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "postmark")
    client, state = inbox.bridge.client, inbox.bridge.emulator.state
    first = mail(subject="Order 7", text="Where is my order?")
    assert (await inbox.post(first)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    [message] = state.messages.values()
    thread = await inbox.source.threads.info(str(first["Message-ID"]).strip("<>").lower())
    assert thread is not None
    # A new mail (no In-Reply-To/References) to the reply address: MailboxHash = the token.
    again = mail(subject="something else", text="Any news?", to=f"support+{thread.token}@"
                 "help.example.com")
    assert (await inbox.post(again)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    assert content_of(inbox)[1] == (message["conversation_id"],
                                    "Subject: something else\n\nAny news?")

    bad_json = await client.post(inbox.path, data=b"{not json", headers=basic_auth())
    assert bad_json.status == 403
    bad_auth = await client.post(inbox.path, json={}, headers=basic_auth(user="x"))
    assert bad_auth.status == 401  # retried: a rotated password must not lose mail
    odd_shape = {"Headers": 5, "Attachments": "x", "TextBody": 3, "FromFull": "x"}
    assert (await client.post(inbox.path, json=odd_shape, headers=basic_auth())).status == 403


# --- Amazon SES via SNS -------------------------------------------------------------------


def _subscription(keys: SNSKeys, version: str = "1") -> dict[str, Any]:
    return keys.sign({
        "Type": "SubscriptionConfirmation", "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "2336412f37fb687f5d51e6e241d09c805a5a57b30d712f794cc5f6a988666d92768dd60a747b"
                 "a6f3beb71854e285d6ad02428b09ceece29417f1f02d609c582afbacc99c583a916b9981dd2728"
                 "f4ae6fdb82efd087cc3b7849e05798d2d2785c03b0879594eeac82c01f235d0e717736",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.\nTo confirm the "
                   "subscription, visit the SubscribeURL included in this message.",
        "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=ConfirmSubscription&"
                        f"TopicArn={TOPIC}&Token=2336412f37",
        "Timestamp": sns_time(),
    }, version)


async def _sns_post(inbox: Inbox, body: dict[str, Any], kind: str | None = None) -> Any:
    return await inbox.bridge.client.post(inbox.path, data=json.dumps(body), headers={
        "x-amz-sns-message-type": kind or body["Type"], "Content-Type": "text/plain"})


@pytest.mark.parametrize("auto_confirm", [False, True])
async def test_ses_subscription_confirmation(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                             auto_confirm: bool) -> None:
    inbox = await start_inbox(make_bridge, sns_keys, "ses", ses_auto_confirm=auto_confirm)
    sns_keys.fetched.clear()
    body = _subscription(sns_keys)
    assert (await _sns_post(inbox, body)).status == 200
    assert sns_keys.fetched == ([CERT_URL, body["SubscribeURL"]] if auto_confirm
                                else [CERT_URL])
    forged = {**body, "SubscribeURL": "https://sns.eu-west-1.amazonaws.com/?evil=1"}
    assert (await _sns_post(inbox, forged)).status == 403
    await _nothing_stored(inbox)


async def test_ses_signature_versions_and_certificate_checks(make_bridge: StartBridge,
                                                             sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "ses")
    msg = mail(subject="v2", text="Signed with SHA256")
    assert (await _sns_post(inbox, sns_notification(msg.as_bytes(), [SUPPORT], sns_keys,
                                                    version="2"))).status == 200
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)

    sns_keys.fetched.clear()
    other = mail(subject="forged", text="x").as_bytes()
    for url in ("https://sns.eu-west-1.amazonaws.com.evil.example/cert.pem",
                "http://sns.eu-west-1.amazonaws.com/cert.pem",
                "https://s3.amazonaws.com/sns/cert.pem"):
        body = sns_notification(other, [SUPPORT], sns_keys)
        resp = await _sns_post(inbox, sns_keys.sign({**body, "SigningCertURL": url}))
        assert resp.status == 403
    assert sns_keys.fetched == []  # a foreign certificate URL is never fetched

    wrong_topic = sns_notification(other, [SUPPORT], sns_keys, topic="arn:aws:sns:eu-west-1:"
                                   "999999999999:attacker")
    assert (await _sns_post(inbox, wrong_topic)).status == 403
    unknown_version = {**sns_notification(other, [SUPPORT], sns_keys), "SignatureVersion": "3"}
    assert (await _sns_post(inbox, unknown_version)).status == 403
    mismatch = sns_notification(other, [SUPPORT], sns_keys)
    assert (await _sns_post(inbox, mismatch, kind="SubscriptionConfirmation")).status == 400

    async def unreachable(url: str) -> bytes:
        raise ConnectionError("sns.eu-west-1.amazonaws.com unreachable")

    inbox.source.provider.fetch = unreachable  # type: ignore[attr-defined]
    inbox.source.provider.verifier._cache.clear()  # type: ignore[attr-defined]
    resp = await _sns_post(inbox, sns_notification(other, [SUPPORT], sns_keys))
    assert resp.status == 503  # transient: SNS retries 5xx
    assert len(inbox.bridge.emulator.state.messages) == 1


async def test_ses_setup_notification_is_ignored(make_bridge: StartBridge,
                                                 sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "ses")
    body = sns_keys.sign({
        "Type": "Notification", "MessageId": "a1", "TopicArn": TOPIC,
        "Message": json.dumps({"notificationType": "AmazonSnsSubscriptionSucceeded",
                               "message": "You have successfully subscribed"}),
        "Timestamp": sns_time()})
    assert (await _sns_post(inbox, body)).status == 200
    await _nothing_stored(inbox)


def test_sns_canonical_string_is_the_documented_one() -> None:
    notification = {"Type": "Notification", "MessageId": "m", "TopicArn": "t", "Message": "x",
                    "Timestamp": "ts", "SignatureVersion": "1", "UnsubscribeURL": "u"}
    assert canonical(notification) == (b"Message\nx\nMessageId\nm\nTimestamp\nts\n"
                                       b"TopicArn\nt\nType\nNotification\n")
    assert canonical({**notification, "Subject": "s"}).startswith(
        b"Message\nx\nMessageId\nm\nSubject\ns\nTimestamp")
    confirmation = {"Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "t",
                    "Message": "x", "Timestamp": "ts", "Token": "k", "SubscribeURL": "s"}
    assert canonical(confirmation) == (b"Message\nx\nMessageId\nm\nSubscribeURL\ns\n"
                                       b"Timestamp\nts\nToken\nk\nTopicArn\nt\n"
                                       b"Type\nSubscriptionConfirmation\n")
    assert is_sns_url("https://sns.cn-north-1.amazonaws.com.cn/x.pem")
    assert not is_sns_url("https://user@sns.us-east-1.amazonaws.com/x.pem")
    assert not is_sns_url("https://sns.us-east-1.amazonaws.com:8443/x.pem")


# --- raw MIME -----------------------------------------------------------------------------


async def test_mime_limits_and_token_address(make_bridge: StartBridge,
                                             sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime", max_body_bytes=4096)
    client, state = inbox.bridge.client, inbox.bridge.emulator.state
    raw = mail(subject="Hi", text="Hello").as_bytes()
    no_auth = await client.post(inbox.path, data=raw)
    assert no_auth.status == 503 and "WWW-Authenticate" in no_auth.headers
    big = mail(subject="Big", text="y" * 5000).as_bytes()
    assert (await client.post(inbox.path, data=big, headers=basic_auth())).status == 413
    assert (await client.post(inbox.path, data=b"  ", headers=basic_auth())).status == 400
    no_from = b"Subject: nobody\r\nMessage-ID: <x@y>\r\n\r\nhello\r\n"
    assert (await client.post(inbox.path, data=no_from, headers=basic_auth())).status == 422
    await _nothing_stored(inbox)

    first = mail(subject="Token", text="First")
    assert (await inbox.post(first)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 1)
    thread = await inbox.source.threads.info(str(first["Message-ID"]).strip("<>").lower())
    assert thread is not None
    to_token = mail(subject="Re: Token", text="Second", to=f"Support <support+{thread.token}"
                    "@help.example.com>")
    assert (await inbox.post(to_token)).status == 200
    await inbox.bridge.wait_for(lambda: len(state.messages) == 2)
    (c1, _), (c2, second) = content_of(inbox)
    assert c1 == c2 and second == "Second"  # same thread, same subject: shown once


# --- settings -----------------------------------------------------------------------------


@pytest.mark.parametrize(("entry", "problem"), [
    ({"provider": "mailgun"}, "needs signing_key"),
    ({"provider": "mailgun", "signing_key": ""}, "needs signing_key"),
    ({"provider": "postmark", "webhook_user": USER}, "needs webhook_user and webhook_password"),
    ({"provider": "mime", "webhook_user": USER, "webhook_password": PASSWORD,
      "languages": ["en", "klingon"]}, "unknown languages"),
    ({"provider": "imap"}, "provider"),
    ({"provider": "ses", "ses_auto_confirm": True}, "needs ses_topic_arns"),
    ({"provider": "ses", "colour": "blue"}, "unknown key"),
])
def test_settings_are_checked(tmp_path: Any, entry: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        build_config({"sources": [{"type": "email", **entry}]}, tmp_path)


def test_settings_defaults_and_env(tmp_path: Any) -> None:
    config = build_config({"sources": [
        {"type": "email", "name": "mg", "provider": "mailgun",
         "signing_key": "${MAILGUN_SIGNING_KEY}"},
        {"type": "email", "name": "pm", "provider": "postmark",
         "webhook_user": "${EMAIL_WEBHOOK_USER}", "webhook_password": "${EMAIL_WEBHOOK_PASSWORD}",
         "path": "/inbound/pm"},
    ]}, tmp_path, env={"MAILGUN_SIGNING_KEY": SIGNING_KEY, "EMAIL_WEBHOOK_USER": USER,
                       "EMAIL_WEBHOOK_PASSWORD": PASSWORD})
    mailgun, postmark = config.sources
    assert mailgun.path == "/email/mailgun" and postmark.path == "/inbound/pm"
    assert SIGNING_KEY in config.secrets() and PASSWORD in config.secrets()
    assert source_config("ses")["ses_topic_arns"] == [TOPIC]
