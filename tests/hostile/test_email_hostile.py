"""Hostile input to the email webhooks (and the body reader every source shares), each over a
real socket: a clear answer code, the health endpoints answering while the request runs,
nothing stored for a refusal, and linear cost (twice the input costs at most three times as
much, best of a few runs; no absolute timings). Replies go to a real local SMTP server."""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from collections.abc import Awaitable, Callable
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from bridge_helpers import nothing_stored

sys.path.insert(0, str(Path(__file__).parents[1] / "email"))  # the email tests' helpers

from email_helpers import (
    CERT_URL,
    SUPPORT,
    Multipart,
    SNSKeys,
    StartBridge,
    basic_auth,
    mail,
    mailgun_payload,
    mailgun_signature,
    post_form,
    running_smtp,
    sns_keys,  # noqa: F401 - fixture
    sns_notification,
    start_inbox,
)

from livebridge.testing import BridgeHarness

from .conftest import HealthWatcher, assert_linear_cost, chunked

Response = tuple[int, dict[str, Any]]
Health = Callable[[BridgeHarness], HealthWatcher]


# --- helpers ------------------------------------------------------------------------------


async def answer(request: Awaitable[aiohttp.ClientResponse]) -> Response:
    """The status and JSON body (or ``{"text": ...}``) of the answer to ``request``."""
    resp = await request
    text = await resp.text()
    try:
        body = json.loads(text)
    except ValueError:
        body = {"text": text}
    return resp.status, body if isinstance(body, dict) else {"body": body}


def multipart(parts: list[tuple[str, bytes]], boundary: str = "b0undary") -> Multipart:
    body = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                    .encode() + data + b"\r\n" for name, data in parts)
    return Multipart(body + f"--{boundary}--\r\n".encode(),
                     f"multipart/form-data; boundary={boundary}")


def signed_fields(**signature: str) -> list[tuple[str, bytes]]:
    return [(k, v.encode()) for k, v in (signature or mailgun_signature()).items()]


def empty_parts(size: int, boundary: str = "b0undary") -> bytes:
    """About ``size`` bytes of parts with no headers and no content."""
    part = f"--{boundary}\r\n\r\n\r\n".encode()
    return part * (size // len(part))


# --- body reading -------------------------------------------------------------------------


async def test_mailgun_empty_parts_are_refused_before_the_signature(
        make_bridge: StartBridge, sns_keys: SNSKeys, health: Health) -> None:  # noqa: F811
    """Megabytes of empty parts: 413 (Mailgun's final 406) after reading, never parsed
    part by part on the event loop."""
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun")

    async def post(size: int) -> Response:
        body = multipart(signed_fields()).body[:-len(b"--b0undary--\r\n")] + empty_parts(size)
        return await answer(inbox.bridge.client.post(
            inbox.path, data=body + b"--b0undary--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=b0undary"}))

    status, body = await health(inbox.bridge).during(lambda: post(8 << 20))
    assert (status, body["error"]) == (406, "too many parts (at most 600)")
    await assert_linear_cost(post, 1 << 20)
    await nothing_stored(inbox.bridge)


async def test_chunked_body_counts_as_received(make_bridge: StartBridge,
                                                health: Health) -> None:
    """A chunked body (no Content-Length) of tiny parts to the form: refused by its part cap
    at once, not parsed part by part on the event loop."""
    bridge = await make_bridge({"sources": [{"type": "form", "rate_limit": 0}]})

    async def post(size: int) -> Response:
        return await answer(bridge.client.post(
            "/form", data=chunked(empty_parts(size) + b"--b0undary--\r\n"), headers={
                "Content-Type": "multipart/form-data; boundary=b0undary",
                "Accept": "application/json"}))

    status, body = await health(bridge).during(lambda: post(900 << 10))
    assert (status, body["error"]) == (413, "too many parts (at most 1000)")
    await assert_linear_cost(post, 400 << 10)
    await nothing_stored(bridge)


async def test_long_part_names_are_refused(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                           health: Health) -> None:
    inbox = await start_inbox(make_bridge, sns_keys, "sendgrid")
    form = multipart([("x" * 5000, b"1"), ("headers", b"From: a@example.com")])
    status, body = await health(inbox.bridge).during(lambda: answer(post_form(
        inbox.bridge.client, inbox.path, form, basic_auth())))
    assert (status, body.get("detail")) == (400, "part name too long")
    await nothing_stored(inbox.bridge)


async def test_a_slow_body_is_answered_408(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                           health: Health) -> None:
    """A sender that stops sending its body is answered 408 after ``server.body_timeout``
    (Mailgun retries it) and its socket closed."""
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun", server={"body_timeout": "1s"})
    server = inbox.bridge.client.server

    async def slow() -> aiohttp.ClientResponse:
        reader, writer = await asyncio.open_connection(server.host, server.port)
        writer.write(f"POST {inbox.path} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n"
                     "Content-Type: application/x-www-form-urlencoded\r\n\r\nsig".encode())
        raw = await asyncio.wait_for(reader.read(), 30)  # the server closes: EOF
        writer.close()
        return _Raw(raw)  # type: ignore[return-value]

    status, body = await health(inbox.bridge).during(lambda: answer(slow()))
    assert (status, body["error"]) == (408, "body read timeout")
    await nothing_stored(inbox.bridge)


class _Raw:
    """A raw HTTP answer read off a socket, as ``answer`` reads a client response."""

    def __init__(self, raw: bytes) -> None:
        head, _, self.body = raw.partition(b"\r\n\r\n")
        self.status = int(head.split()[1])

    async def text(self) -> str:
        return self.body.decode()


# --- Mailgun tokens -----------------------------------------------------------------------


async def test_a_mailgun_token_is_accepted_once(make_bridge: StartBridge,
                                                sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun")
    client = inbox.bridge.client
    signature = mailgun_signature()
    posts = [post_form(client, inbox.path, mailgun_payload(
        mail(text=f"Copy {i}"), signature=signature)) for i in range(20)]
    statuses = sorted([r.status for r in await asyncio.gather(*posts)])
    assert statuses == [200] + [406] * 19
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)

    refused = mailgun_signature()  # refused once (no From: final), never accepted after
    no_from = mailgun_payload(mail(text="x"), signature=refused)
    assert isinstance(no_from, dict)
    no_from["message-headers"] = json.dumps([["Subject", "x"]])
    del no_from["from"]
    assert (await post_form(client, inbox.path, no_from)).status == 406
    status, body = await answer(post_form(client, inbox.path, mailgun_payload(
        mail(text="Other content"), signature=refused)))
    assert (status, body["error"]) == (406, "reused token")


async def test_a_mailgun_timestamp_is_digits_only(make_bridge: StartBridge,
                                                  sns_keys: SNSKeys) -> None:  # noqa: F811
    """``timestamp + "e0"`` with ``token[2:]`` signs the same bytes: refused."""
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun")
    client = inbox.bridge.client
    signature = mailgun_signature(token="e0" + "7" * 48)
    assert (await post_form(client, inbox.path, mailgun_payload(
        mail(text="first"), signature=signature))).status == 200
    resplit = {**signature, "timestamp": signature["timestamp"] + "e0",
               "token": signature["token"][2:]}
    status, body = await answer(post_form(client, inbox.path, mailgun_payload(
        mail(text="second"), signature=resplit)))
    assert (status, body["error"]) == (401, "bad signature")
    await inbox.bridge.wait_idle()
    assert len(inbox.bridge.emulator.state.messages) == 1


# --- bounded parsing ----------------------------------------------------------------------


async def test_html_with_unclosed_links_costs_linear_time(
        make_bridge: StartBridge, sns_keys: SNSKeys, health: Health) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mailgun")

    def payload(size: int) -> dict[str, Any]:
        html = '<a href="https://example.com/">x ' * (size // 32)
        form = mailgun_payload(mail(text=None, html=html, subject="Links"))
        assert isinstance(form, dict)
        return form

    async def post(size: int) -> Response:
        # made in a thread: the test's own work must not stall the loop the daemon runs on
        form = await asyncio.to_thread(payload, size)
        return await answer(post_form(inbox.bridge.client, inbox.path, form))

    # 1 MiB: long enough that the loop's share of the GIL beside the parsing thread (a few
    # ms a turn) is not taken for a stall; the old quadratic code took 41 s for 0.83 MiB
    assert (await health(inbox.bridge).during(lambda: post(1 << 20)))[0] == 200
    await assert_linear_cost(post, 100 << 10)


async def test_many_references_are_looked_up_newest_first_and_few(
        make_bridge: StartBridge, sns_keys: SNSKeys, health: Health) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime")
    threads = inbox.source.threads
    lookups = 0
    owner = type(threads).owner

    async def counting(self: Any, message_id: str) -> Any:
        nonlocal lookups
        lookups += 1
        return await owner(self, message_id)

    type(threads).owner = counting  # type: ignore[method-assign]  # a spy: it calls through
    try:
        async def post(size: int) -> Response:
            refs = "\r\n ".join(f"<r{i}.{size}@example.com>" for i in range(size))
            raw = (f"From: a@example.com\r\nMessage-ID: {make_msgid(domain='example.com')}"
                   f"\r\nReferences: {refs}\r\n\r\nMany refs\r\n").encode()
            return await answer(inbox.bridge.client.post(inbox.path, data=raw,
                                                         headers=basic_auth()))

        assert (await health(inbox.bridge).during(lambda: post(20_000)))[0] == 200
        assert lookups <= 25
        await assert_linear_cost(post, 10_000)
    finally:
        type(threads).owner = owner  # type: ignore[method-assign]


@pytest.mark.parametrize("boundary", [b"boundary=xx", b"boundary*=utf-8''xx",
                                      b'boundary*0="x"; boundary*1="x"'])
async def test_many_empty_mime_parts_are_refused(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                                 health: Health, boundary: bytes) -> None:
    """However the boundary is written (RFC 2231's forms included, which the parser reads
    too), more parts than the cap are refused before parsing."""
    inbox = await start_inbox(make_bridge, sns_keys, "mime")

    async def post(size: int) -> Response:
        raw = (b"From: a@example.com\r\nMessage-ID: <p@example.com>\r\nContent-Type: "
               b"multipart/mixed; " + boundary + b"\r\n\r\n" + b"--xx\r\n\r\n\r\n" * size
               + b"--xx--\r\n")
        return await answer(inbox.bridge.client.post(inbox.path, data=raw, headers=basic_auth()))

    status, body = await health(inbox.bridge).during(lambda: post(100_000))
    assert (status, body["error"]) == (413, "too many MIME parts (at most 1000)")
    await assert_linear_cost(post, 50_000)
    await nothing_stored(inbox.bridge)


async def test_encoded_words_in_a_slow_charset_are_not_decoded_with_it(
        make_bridge: StartBridge, sns_keys: SNSKeys, health: Health) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime")

    async def post(size: int) -> Response:
        word = bytes(range(97, 123)) * (size // 26)
        raw = (b"From: a@example.com\r\nSubject: =?punycode?Q?" + word + b"?=\r\n"
               b"Message-ID: " + make_msgid(domain="example.com").encode() + b"\r\n\r\nhi\r\n")
        return await answer(inbox.bridge.client.post(inbox.path, data=raw, headers=basic_auth()))

    assert (await health(inbox.bridge).during(lambda: post(100_000)))[0] == 200
    await assert_linear_cost(post, 50_000)


# --- SES ----------------------------------------------------------------------------------


async def test_ses_malformed_requests_are_4xx(make_bridge: StartBridge,
                                              sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "ses")
    client = inbox.bridge.client
    note = sns_notification(mail(text="hi").as_bytes(), [SUPPORT], sns_keys)
    for content_type in ('text/plain; charset="', "x;;;=", "text/plain; charset=punycode"):
        resp = await client.post(inbox.path, data=json.dumps(note),
                                 headers={"Content-Type": content_type})
        assert resp.status == 200 or 400 <= resp.status < 500, (content_type, resp.status)
    await inbox.bridge.wait_idle()
    inbox.bridge.emulator.state.messages.clear()
    forged = {**sns_notification(mail(text="x").as_bytes(), [SUPPORT], sns_keys),
              "Signature": "é" * 40}
    status, body = await answer(client.post(inbox.path, data=json.dumps(forged)))
    assert (status, body["error"]) == (403, "bad SNS signature")
    status, body = await answer(client.post(inbox.path, data=b"[" * 100_000))  # unsigned
    assert (status, body["error"]) == (400, "malformed JSON")


async def test_ses_certificate_fetches_and_metric_series_are_bounded(
        make_bridge: StartBridge, sns_keys: SNSKeys) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "ses")
    fetched: list[str] = []

    async def unreachable(url: str) -> bytes:
        fetched.append(url)
        raise OSError("no route to host")

    inbox.source.provider.fetch = unreachable  # type: ignore[attr-defined]
    base = CERT_URL.removesuffix(".pem")
    for i in range(30):
        note = sns_notification(mail(text=f"x{i}").as_bytes(), [SUPPORT], sns_keys)
        note["SigningCertURL"] = CERT_URL if i % 2 else f"{base}-{i}.pem"
        note["Signature"] = base64.b64encode(b"forged" * 40).decode()
        status, body = await answer(inbox.bridge.client.post(
            inbox.path, data=json.dumps(note)))
        assert (status, body["error"]) == (503, "signing certificate unavailable")
    for url in ("https://sns.eu-west-1.amazonaws.com/whatever.txt",
                "https://sns.eu-west-1.amazonaws.com.evil.example/x.pem"):
        note = {**sns_notification(b"x", [SUPPORT], sns_keys), "SigningCertURL": url}
        assert (await inbox.bridge.client.post(inbox.path, data=json.dumps(note))).status \
            == 403
    assert fetched.count(CERT_URL) == 1  # a failure is remembered
    assert len(fetched) <= 10  # and fetches are rate-limited
    series = [line for line in (await (await inbox.bridge.client.get("/metrics")).text())
              .splitlines() if line.startswith("livebridge_requests_rejected_total{")]
    assert len(series) == 2, series
    await nothing_stored(inbox.bridge)


# --- caps and retry semantics -------------------------------------------------------------


async def test_the_email_cap_is_as_documented(make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
                                              health: Health) -> None:
    """30 MiB by default (the server's 10 MiB cap does not shorten it); past a source's cap,
    the provider's final answer."""
    inbox = await start_inbox(make_bridge, sns_keys, "mime")
    big = mail(text="Big attachment", attachments=[
        ("big.bin", "application/octet-stream", b"\0" * (12 << 20))]).as_bytes()
    status, _ = await health(inbox.bridge).during(lambda: answer(inbox.bridge.client.post(
        inbox.path, data=big, headers=basic_auth())))
    assert status == 200
    postmark = await start_inbox(make_bridge, sns_keys, "postmark", max_body_bytes=4096)
    resp = await postmark.bridge.client.post(postmark.path, data=b"{" + b" " * 5000 + b"}",
                                             headers=basic_auth())
    assert resp.status == 403  # Postmark stops retrying: the mail can never fit


@pytest.mark.parametrize(("provider", "status"), [
    ("mailgun", 401), ("postmark", 401), ("sendgrid", 503), ("mime", 503)])
async def test_bad_credentials_are_answered_with_a_code_the_provider_retries(
        make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
        provider: str, status: int) -> None:
    inbox = await start_inbox(make_bridge, sns_keys, provider)
    resp = await inbox.post(mail(text="After a key rotation"), forged=True)
    assert resp.status == status
    await nothing_stored(inbox.bridge)


# --- replies ------------------------------------------------------------------------------


@pytest.mark.parametrize("smtputf8", [True, False])
async def test_replies_reach_unusual_names_and_addresses(
        make_bridge: StartBridge, sns_keys: SNSKeys, smtputf8: bool) -> None:  # noqa: F811
    async with running_smtp(smtputf8) as smtp:
        inbox = await start_inbox(make_bridge, sns_keys, "mime", smtp_port=smtp.port)
        inbox.bridge.emulator.webhook_url = inbox.bridge.url("/livedesk/webhook")
        client, state = inbox.bridge.client, inbox.bridge.emulator.state
        senders = [("=?utf-8?q?Eve=0D=0ABcc=3A_x=40evil=2Eexample?= <eve@example.com>",
                    "eve@example.com"),
                   ("Jörg <jörg@bücher.example>", "jörg@bücher.example" if smtputf8 else None),
                   ("Ann <ann@bücher.example>",
                    "ann@bücher.example" if smtputf8 else "ann@xn--bcher-kva.example")]
        for header, _ in senders:
            raw = (f"From: {header}\r\nTo: {SUPPORT}\r\nSubject: Hi\r\nMessage-ID: "
                   f"{make_msgid(domain='example.com')}\r\n\r\nHello\r\n").encode()
            status, body = await answer(client.post(inbox.path, data=raw, headers=basic_auth()))
            assert status == 200, body
        await inbox.bridge.wait_for(lambda: len(state.messages) == 3)
        for conversation in sorted({m["conversation_id"] for m in state.messages.values()}):
            await inbox.bridge.emulator.agent_reply(conversation, "Thanks!")
        expected = sorted(address for _, address in senders if address)
        received = [await smtp.next() for _ in expected]
        assert sorted(r for e in received for r in e.rcpt_tos) == expected
        eve = next(e for e in received if e.rcpt_tos == ["eve@example.com"])
        assert b"\nBcc" not in eve.content and b"Eve Bcc: x@evil.example" in eve.content
