"""Email test helpers: mails, each provider's webhook payload (signed or authenticated as that
provider does it), an offline SNS signing certificate, and a local SMTP server.

A module, not ``conftest.py``: test modules import what they use (see tests/slack).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import getaddresses, make_msgid, parseaddr
from typing import Any

import aiohttp
import pytest
from aiosmtpd.controller import Controller
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from livebridge_email.sns import canonical
from livebridge_email.source import EmailSource

from livebridge.testing import BridgeHarness

SIGNING_KEY = "key-3ax6xnjp29jd6fds4gc373sgvjxteol0"
USER, PASSWORD = "postmaster", "s3cret-webhook-pass"
SUPPORT = "support@help.example.com"
TOPIC = "arn:aws:sns:eu-west-1:123456789012:ses-inbound"
CERT_URL = "https://sns.eu-west-1.amazonaws.com/SimpleNotificationService-9c6465fa7f48f5cacd23014631ec1136.pem"
PROVIDERS = ["mailgun", "sendgrid", "postmark", "ses", "mime"]
#: What each provider is answered when a request is forged: a status it retries (a rotated key
#: must not lose mail): 401, or 503 for those that retry only 5xx; 403 for SNS (its signature
#: is AWS's own, not a key of ours).
FORGED_STATUS = {"mailgun": 401, "sendgrid": 503, "postmark": 401, "ses": 403, "mime": 503}

StartBridge = Callable[..., Awaitable[BridgeHarness]]


def mail(*, sender: str = "Maria Schneider <maria@example.com>", subject: str | None = "Hello",
         text: str | None = "Hi there", html: str | None = None, to: str = SUPPORT,
         message_id: str | None = None, in_reply_to: str | None = None,
         references: list[str] | None = None, charset: str = "utf-8", cte: str | None = None,
         headers: dict[str, str] | None = None,
         attachments: Sequence[tuple[str, str, bytes]] = ()) -> EmailMessage:
    """A mail as a client would send it."""
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = to
    if subject is not None:
        msg["Subject"] = subject
    msg["Date"] = "Thu, 12 Mar 2026 10:31:07 +0100"
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = " ".join(references)
    for name, value in (headers or {}).items():
        msg[name] = value
    if text is not None:
        msg.set_content(text, charset=charset, cte=cte)
        if html is not None:
            msg.add_alternative(html, subtype="html", charset=charset)
    elif html is not None:
        msg.set_content(html, subtype="html", charset=charset, cte=cte)
    for name, content_type, data in attachments:
        maintype, subtype = content_type.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg


def bodies(msg: EmailMessage) -> tuple[str | None, str | None, str | None, str | None]:
    """(text, html, text charset, html charset) as a parsing provider extracts them."""
    text = html = text_cs = html_cs = None
    for part in msg.walk():
        if part.get_content_disposition() == "attachment":
            continue
        if part.get_content_type() == "text/plain" and text is None:
            text, text_cs = part.get_content(), part.get_content_charset()
        elif part.get_content_type() == "text/html" and html is None:
            html, html_cs = part.get_content(), part.get_content_charset()
    return text, html, text_cs, html_cs


def files(msg: EmailMessage) -> list[tuple[str, str, bytes]]:
    """(name, type, bytes) of the attachments."""
    return [(p.get_filename() or "", p.get_content_type(), p.get_content())
            for p in msg.iter_attachments()]


def basic_auth(user: str = USER, password: str = PASSWORD) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def mailgun_signature(key: str = SIGNING_KEY, timestamp: int | None = None,
                      token: str | None = None) -> dict[str, str]:
    """Mailgun's signature trio: HEX(HMAC-SHA256(key, timestamp + token))."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    token = token or uuid.uuid4().hex + uuid.uuid4().hex[:18]
    digest = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return {"timestamp": ts, "token": token, "signature": digest}


@dataclass
class SNSKeys:
    """A test RSA key and self-signed certificate standing in for SNS's signing certificate."""

    key: rsa.RSAPrivateKey
    pem: bytes
    fetched: list[str] = field(default_factory=list)

    async def fetch(self, url: str) -> bytes:
        """The injected fetcher: serves the certificate, records every URL asked for."""
        self.fetched.append(url)
        return self.pem

    def sign(self, message: dict[str, Any], version: str = "1") -> dict[str, Any]:
        """``message`` with SignatureVersion, SigningCertURL and Signature set as SNS does."""
        message = {**message, "SignatureVersion": version,
                   "SigningCertURL": message.get("SigningCertURL", CERT_URL)}
        algorithm = hashes.SHA1() if version == "1" else hashes.SHA256()  # noqa: S303 - SNS v1
        signature = self.key.sign(canonical(message), padding.PKCS1v15(), algorithm)
        return {**message, "Signature": base64.b64encode(signature).decode()}


@pytest.fixture(scope="session")
def sns_keys() -> SNSKeys:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    now = datetime.now(UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .sign(key, hashes.SHA256()))
    return SNSKeys(key, cert.public_bytes(serialization.Encoding.PEM))


def sns_time(age: float = 0.0) -> str:
    """An SNS ``Timestamp``: ISO 8601 UTC with milliseconds, ``age`` seconds ago."""
    when = datetime.now(UTC) - timedelta(seconds=age)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def sns_notification(raw: bytes, recipients: list[str], keys: SNSKeys, version: str = "1",
                     topic: str = TOPIC, timestamp: str | None = None) -> dict[str, Any]:
    """An SNS Notification carrying an SES 'Received' notification with the base64 MIME."""
    parsed = BytesParser(policy=policy.default).parsebytes(raw)
    ses = {
        "notificationType": "Received",
        "mail": {
            "timestamp": "2026-03-12T09:31:08.123Z", "source": parseaddr(str(parsed["From"]))[1],
            "messageId": uuid.uuid4().hex, "destination": recipients, "headersTruncated": False,
            "headers": [{"name": k, "value": str(v)} for k, v in parsed.items()],
            "commonHeaders": {"from": [str(parsed["From"])], "to": recipients,
                              "messageId": str(parsed["Message-ID"]),
                              "subject": str(parsed["Subject"] or "")},
        },
        "receipt": {
            "timestamp": "2026-03-12T09:31:08.123Z", "processingTimeMillis": 420,
            "recipients": recipients, "spamVerdict": {"status": "PASS"},
            "virusVerdict": {"status": "PASS"}, "spfVerdict": {"status": "PASS"},
            "dkimVerdict": {"status": "PASS"}, "dmarcVerdict": {"status": "PASS"},
            "action": {"type": "SNS", "topicArn": topic, "encoding": "BASE64"},
        },
        "content": base64.b64encode(raw).decode(),
    }
    return keys.sign({
        "Type": "Notification", "MessageId": str(uuid.uuid4()), "TopicArn": topic,
        "Subject": "Amazon SES Email Receipt Notification", "Message": json.dumps(ses),
        "Timestamp": timestamp or sns_time(),
        "UnsubscribeURL": "https://sns.eu-west-1.amazonaws.com/?Action=Unsubscribe",
    }, version)


def _recipients(msg: EmailMessage) -> list[str]:
    """The envelope recipients a provider names: those of its (our) domain only."""
    domain = SUPPORT.partition("@")[2]
    return [a for _, a in getaddresses([str(msg.get(h, "")) for h in ("To", "Cc")])
            if a.lower().endswith(f"@{domain}")]


@dataclass
class Multipart:
    """A multipart/form-data body written byte by byte, as the providers send it (text
    fields raw in their own charset, files with a filename and type)."""

    body: bytes
    content_type: str


def _multipart(fields: dict[str, str | bytes],
               attached: list[tuple[str, str, str, bytes]]) -> Multipart:
    boundary = uuid.uuid4().hex
    chunks: list[bytes] = []
    for name, value in fields.items():
        data = value.encode() if isinstance(value, str) else value
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
                      .encode() + data + b"\r\n")
    for name, filename, content_type, data in attached:
        chunks.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; '
                      f'filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
                      .encode() + data + b"\r\n")
    return Multipart(b"".join(chunks) + f"--{boundary}--\r\n".encode(),
                     f"multipart/form-data; boundary={boundary}")


def mailgun_payload(msg: EmailMessage, stripped: str | None = None,
                    signature: dict[str, str] | None = None) -> dict[str, str] | Multipart:
    """Mailgun's forward() fields: urlencoded, or multipart when there are attachments."""
    text, html, _, _ = bodies(msg)
    fields: dict[str, str | bytes] = {
        "recipient": ",".join(_recipients(msg)), "sender": parseaddr(str(msg["From"]))[1],
        "from": str(msg["From"]), "subject": str(msg.get("Subject", "")),
        "body-plain": text or "", "stripped-text": stripped if stripped is not None else
        (text or ""), "stripped-signature": "",
        "message-headers": json.dumps([[k, str(v)] for k, v in msg.items()]),
        "Message-Id": str(msg["Message-ID"]), **(signature or mailgun_signature()),
    }
    for name in ("In-Reply-To", "References"):
        if name in msg:
            fields[name] = str(msg[name])
    if html is not None:
        fields["body-html"] = html
    attached = files(msg)
    if not attached:
        return {k: v if isinstance(v, str) else v.decode() for k, v in fields.items()}
    fields["attachment-count"] = str(len(attached))
    return _multipart(fields, [(f"attachment-{i}", n, t, d)
                               for i, (n, t, d) in enumerate(attached, 1)])


def sendgrid_payload(msg: EmailMessage, raw: bool = False) -> Multipart:
    """SendGrid Inbound Parse: multipart; parsed fields with ``charsets``, or raw ``email``."""
    recipients = _recipients(msg)
    fields: dict[str, str | bytes] = {
        "envelope": json.dumps({"to": recipients, "from": parseaddr(str(msg["From"]))[1]}),
        "from": str(msg["From"]), "to": ", ".join(recipients), "sender_ip": "198.51.100.7",
        "SPF": "pass", "dkim": "{@example.com : pass}", "spam_score": "0.1",
    }
    if raw:
        fields["email"] = msg.as_bytes()
        return _multipart(fields, [])
    text, html, text_cs, html_cs = bodies(msg)
    header_block = b"".join(f"{k}: {v}\r\n".encode() for k, v in msg.items()
                            if k.lower() not in ("content-type", "content-transfer-encoding"))
    charsets = {"to": "UTF-8", "from": "UTF-8", "subject": "UTF-8"}
    fields.update(headers=header_block, subject=str(msg.get("Subject", "")))
    if text is not None:
        charsets["text"] = text_cs or "utf-8"
        fields["text"] = text.encode(charsets["text"])
    if html is not None:
        charsets["html"] = html_cs or "utf-8"
        fields["html"] = html.encode(charsets["html"])
    attached = files(msg)
    fields.update(charsets=json.dumps(charsets), attachments=str(len(attached)))
    info = {f"attachment{i}": {"filename": n, "name": n, "type": t}
            for i, (n, t, _) in enumerate(attached, 1)}
    if attached:
        fields["attachment-info"] = json.dumps(info)
    return _multipart(fields, [(f"attachment{i}", n, t, d)
                               for i, (n, t, d) in enumerate(attached, 1)])


def postmark_payload(msg: EmailMessage, stripped: str | None = None,
                     mailbox_hash: str = "") -> dict[str, Any]:
    """Postmark's inbound JSON."""
    name, address = parseaddr(str(msg["From"]))
    text, html, _, _ = bodies(msg)
    to, cc = ([{"Email": a, "Name": n, "MailboxHash": a.partition("@")[0].partition("+")[2]}
               for n, a in getaddresses([str(msg.get(h, ""))]) if a] for h in ("To", "Cc"))
    skip = {"from", "to", "cc", "subject", "date", "content-type", "content-transfer-encoding"}
    return {
        "FromName": name, "MessageStream": "inbound", "From": address,
        "FromFull": {"Email": address, "Name": name, "MailboxHash": ""},
        "To": str(msg.get("To", "")), "ToFull": to, "Cc": str(msg.get("Cc", "")),
        "CcFull": cc, "Bcc": "",
        "BccFull": [], "OriginalRecipient": to[0]["Email"] if to else SUPPORT,
        "Subject": str(msg.get("Subject", "")), "MessageID": str(uuid.uuid4()),
        "ReplyTo": "", "MailboxHash": mailbox_hash or (to[0]["MailboxHash"] if to else ""),
        "Date": str(msg["Date"]), "TextBody": text or "", "HtmlBody": html or "",
        "StrippedTextReply": stripped or "", "Tag": "",
        "Headers": [{"Name": k, "Value": str(v)} for k, v in msg.items()
                    if k.lower() not in skip],
        "Attachments": [{"Name": n, "Content": base64.b64encode(d).decode(), "ContentType": t,
                         "ContentLength": len(d), "ContentID": ""} for n, t, d in files(msg)],
    }


@dataclass
class Inbox:
    """A running bridge with one email source, and how its provider posts to it."""

    bridge: BridgeHarness
    provider: str
    keys: SNSKeys

    @property
    def source(self) -> EmailSource:
        source = self.bridge.daemon.sources["email"]
        assert isinstance(source, EmailSource)
        return source

    @property
    def path(self) -> str:
        assert self.source.settings.path is not None
        return self.source.settings.path

    async def post(self, msg: EmailMessage, *, stripped: str | None = None,
                   forged: bool = False) -> aiohttp.ClientResponse:
        """Send ``msg`` the way this provider delivers it (``forged``: wrong signature or
        credentials)."""
        client = self.bridge.client
        auth = basic_auth(password="wrong" if forged else PASSWORD)
        if self.provider == "mailgun":
            key = "forged-key" if forged else SIGNING_KEY
            return await post_form(client, self.path,
                                   mailgun_payload(msg, stripped, mailgun_signature(key)))
        if self.provider == "sendgrid":
            return await post_form(client, self.path, sendgrid_payload(msg), auth)
        if self.provider == "postmark":
            return await client.post(self.path, json=postmark_payload(msg, stripped),
                                     headers=auth)
        if self.provider == "ses":
            body = sns_notification(msg.as_bytes(), _recipients(msg), self.keys)
            if forged:
                body["Message"] = body["Message"].replace("PASS", "FAIL")
            return await client.post(self.path, data=json.dumps(body), headers={
                "x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"})
        return await client.post(self.path, data=msg.as_bytes(),
                                 headers={**auth, "Content-Type": "message/rfc822"})


async def post_form(client: Any, path: str, form: dict[str, str] | Multipart,
                    headers: dict[str, str] | None = None) -> aiohttp.ClientResponse:
    """POST a urlencoded (dict) or multipart form."""
    if isinstance(form, Multipart):
        headers = {**(headers or {}), "Content-Type": form.content_type}
        return await client.post(path, data=form.body, headers=headers)  # type: ignore[no-any-return]
    return await client.post(path, data=form, headers=headers)  # type: ignore[no-any-return]


def source_config(provider: str, **extra: Any) -> dict[str, Any]:
    """A ``sources:`` entry for ``provider`` with its credentials."""
    entry: dict[str, Any] = {"type": "email", "provider": provider, **extra}
    if provider == "mailgun":
        entry.setdefault("signing_key", SIGNING_KEY)
    elif provider == "ses":
        entry.setdefault("ses_topic_arns", [TOPIC])
    else:
        entry.setdefault("webhook_user", USER)
        entry.setdefault("webhook_password", PASSWORD)
    return entry


async def start_inbox(make_bridge: StartBridge, keys: SNSKeys, provider: str,
                      smtp_port: int | None = None, **extra: Any) -> Inbox:
    """A bridge with one ``email`` source for ``provider`` (SNS certificates served offline)."""
    config: dict[str, Any] = {"sources": [source_config(provider, **extra)]}
    if smtp_port is not None:
        config["smtp"] = {"host": "127.0.0.1", "port": smtp_port, "tls": "none",
                          "sender": SUPPORT}
    inbox = Inbox(await make_bridge(config), provider, keys)
    if provider == "ses":
        inbox.source.provider.fetch = keys.fetch  # type: ignore[attr-defined]
    return inbox


@dataclass
class Received:
    """One mail the local SMTP server took."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage


class _Handler:
    """aiosmtpd handler: hands each mail to the test's loop (it runs in the server thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Received]):
        self.loop, self.queue = loop, queue

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), message)
        self.loop.call_soon_threadsafe(self.queue.put_nowait, received)
        return "250 OK"


@dataclass
class SMTPServer:
    port: int
    inbox: asyncio.Queue[Received]

    async def next(self, timeout: float = 10) -> Received:
        """The next mail received (no sleeping: waits on the queue)."""
        return await asyncio.wait_for(self.inbox.get(), timeout)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def smtp_server() -> AsyncIterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1."""
    queue: asyncio.Queue[Received] = asyncio.Queue()
    controller = Controller(_Handler(asyncio.get_running_loop(), queue), hostname="127.0.0.1",
                            port=_free_port())
    controller.start()
    try:
        yield SMTPServer(controller.port, queue)
    finally:
        controller.stop()


def content_of(inbox: Inbox) -> list[tuple[int, str]]:
    """(conversation id, content) of every message in the emulator, in order."""
    return [(m["conversation_id"], m["content"])
            for m in inbox.bridge.emulator.state.messages.values()]

