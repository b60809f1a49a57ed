"""One small adapter per provider: authenticate the request as that provider signs it, and
read it into a ``ParsedEmail`` (through ``parse``; no provider parses MIME its own way)."""

from __future__ import annotations

import asyncio
import base64
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qsl

import aiohttp
from aiohttp import web

import livebridge
from livebridge import (
    BodyError,
    equal,
    hmac_sha256_hex,
    mailbox,
    read_body,
    read_multipart,
    timestamp_problem,
)
from livebridge_email.parse import (
    MAX_MIME_PARTS,
    ParsedAttachment,
    ParsedEmail,
    TooManyParts,
    decode_text,
    header_block,
    parse_bytes,
    parse_fields,
)
from livebridge_email.sns import (
    CertificateUnavailable,
    Fetch,
    SNSError,
    SNSVerifier,
    is_sns_url,
)

if TYPE_CHECKING:
    from livebridge_email.source import EmailSource

__all__ = ["MAX_FIELDS", "MAX_FILES", "MAX_SIGNATURE_FIELD", "PROVIDERS", "Incoming",
           "Provider", "Refused", "Unauthenticated"]

_FETCH_MAX_BYTES = 64 * 1024
#: Files a multipart form may carry (the body cap bounds their bytes).
MAX_FILES = 500
#: Fields (parts) a form may carry, files included.
MAX_FIELDS = MAX_FILES + 100
#: Characters of each of Mailgun's signature fields (``timestamp``, ``token``, ``signature``).
MAX_SIGNATURE_FIELD = 256


class Refused(livebridge.Refused):
    """A refused mail request (nothing is stored): ``status`` is the natural HTTP answer,
    which the source turns into the provider's own (``EmailSource._refusal``); ``final``: the
    mail can never be accepted, so the provider may stop retrying it."""

    def __init__(self, status: int, reason: str, headers: Mapping[str, str] | None = None,
                 *, final: bool = True, detail: str | None = None):
        super().__init__(status, reason, detail, headers=headers)
        self.final = final and status < 500


class Unauthenticated(Refused):
    """A bad signature or credentials: 401, retried by every provider (a rotated key or a
    typo in the configuration must not lose the mail sent meanwhile)."""

    def __init__(self, reason: str, headers: Mapping[str, str] | None = None):
        super().__init__(401, reason, headers, final=False)


def _body_refused(exc: BodyError) -> Refused:
    """A body that could not be read: only a slow one (408) may pass on a retry."""
    return Refused(exc.status, exc.reason, final=exc.status != 408, detail=exc.detail)


@dataclass(slots=True)
class Incoming:
    """An authenticated mail, with what the provider adds to it."""

    mail: ParsedEmail
    #: The provider's own reply text without quotes and signature, when it gives one.
    stripped: str | None = None
    #: Reply-address tags the provider names itself (Postmark's MailboxHash).
    tokens: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Field:
    data: bytes
    filename: str | None = None
    content_type: str | None = None

    def text(self, charset: str | None = "utf-8") -> str:
        return decode_text(self.data, charset)


class Provider(ABC):
    """Turns one provider's webhook request into an ``Incoming`` mail."""

    name: ClassVar[str]
    #: The answer that stops the provider's retries of a ``final`` refusal, if it has one.
    stop_status: ClassVar[int | None] = None
    #: Whether the provider retries a 4xx answer; if not, a refusal that may pass on a retry
    #: is answered 503 (SendGrid and SNS retry 5xx only).
    retries_4xx: ClassVar[bool] = False

    def __init__(self, source: EmailSource) -> None:
        self.source = source
        self.settings = source.settings

    @abstractmethod
    async def receive(self, request: web.Request) -> Incoming | None:
        """The mail in ``request``, or None when it carries none (answered 200).
        Raises ``Refused``."""

    # --- helpers shared by the adapters ---------------------------------------------------

    def check_basic_auth(self, request: web.Request) -> None:
        """Refuse (401) unless the request has the configured Basic credentials."""
        user = self.settings.webhook_user or ""
        password = self.settings.webhook_password.get_secret_value() \
            if self.settings.webhook_password else ""
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        given_user = given_password = ""
        if scheme.lower() == "basic":
            try:  # ValueError: non-ASCII text
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except ValueError:
                decoded = ""
            given_user, _, given_password = decoded.partition(":")
        if not (equal(given_user, user) & equal(given_password, password)):
            raise Unauthenticated("bad credentials",
                                  headers={"WWW-Authenticate": 'Basic realm="livebridge"'})

    async def body(self, request: web.Request) -> bytes:
        """The raw body, refused (413) past ``max_body_bytes``."""
        try:
            return await read_body(request, self.settings.max_body_bytes)
        except BodyError as exc:
            raise _body_refused(exc) from None

    async def json_body(self, request: web.Request) -> dict[str, Any]:
        """The body as a JSON object, refused (400) otherwise."""
        try:
            data = json.loads(await self.body(request))
        except (ValueError, RecursionError):  # RecursionError: nested too deeply
            raise Refused(400, "malformed JSON") from None
        if not isinstance(data, dict):
            raise Refused(400, "expected a JSON object")
        return data

    async def form(self, request: web.Request) -> dict[str, _Field]:
        """A urlencoded or multipart form as raw bytes per field (charsets decoded later)."""
        if request.content_type == "application/x-www-form-urlencoded":
            body = await self.body(request)
            try:
                return await asyncio.to_thread(_urlencoded, body)
            except ValueError:  # parse_qsl past max_num_fields
                raise Refused(413, f"too many fields (at most {MAX_FIELDS})") from None
        try:
            parts = await read_multipart(request, self.settings.max_body_bytes,
                                         max_files=MAX_FILES, max_parts=MAX_FIELDS)
        except BodyError as exc:
            raise _body_refused(exc) from None
        return {p.name: _Field(p.data, p.filename, p.content_type) for p in parts}

    def attachment(self, name: str | None, content_type: str | None,
                   data: bytes) -> ParsedAttachment:
        """A file, its bytes kept up to ``attachment_max_bytes``."""
        keep = len(data) <= self.settings.attachment_max_bytes
        return ParsedAttachment(name=name, content_type=content_type or
                                "application/octet-stream", size=len(data),
                                data=data if keep else None)

    async def parse_raw(self, raw: bytes) -> ParsedEmail:
        """A whole MIME message (parsed in a worker thread), refused (400) when empty."""
        if not raw.strip():
            raise Refused(400, "empty message")
        try:
            return await asyncio.to_thread(parse_bytes, raw, self.settings.attachment_max_bytes)
        except TooManyParts:
            raise Refused(413, f"too many MIME parts (at most {MAX_MIME_PARTS})") from None
        except Exception:  # the parser is lenient; whatever still fails is not a mail
            self.source.log.exception("unparsable message")
            raise Refused(422, "unparsable message", final=False) from None

    async def parse_fields(self, headers: EmailMessage, text: str | None, html: str | None,
                           files: list[ParsedAttachment]) -> ParsedEmail:
        """A provider's parsed fields (HTML converted in a worker thread)."""
        try:
            return await asyncio.to_thread(parse_fields, headers, text, html, files)
        except Exception:
            self.source.log.exception("unparsable message")
            raise Refused(422, "unparsable message", final=False) from None


class Mailgun(Provider):
    """Mailgun route ``forward()``: parsed fields (or ``body-mime``), HMAC-signed."""

    name = "mailgun"
    stop_status = 406
    retries_4xx = True

    async def receive(self, request: web.Request) -> Incoming | None:
        form = await self.form(request)
        await self._verify(*(form[k].data if k in form else b""
                             for k in ("timestamp", "token", "signature")))
        fields = {k.lower(): v for k, v in form.items()}
        if "body-mime" in fields:
            mail = await self.parse_raw(fields["body-mime"].data)
            stripped = None
        else:
            pairs = _json(fields.get("message-headers"), list) or [
                (name, fields[name.lower()].text()) for name in
                ("From", "To", "Cc", "Subject", "Message-Id", "In-Reply-To", "References")
                if name.lower() in fields]
            files = [self.attachment(f.filename, f.content_type, f.data)
                     for k, f in form.items() if k.startswith("attachment-") and f.filename]
            headers = header_block((str(p[0]), str(p[1])) for p in pairs
                                   if isinstance(p, list | tuple) and len(p) == 2)
            mail = await self.parse_fields(headers, _text(fields, "body-plain"),
                                           _text(fields, "body-html"), files)
            stripped = _text(fields, "stripped-text")
        mail.delivered.extend(a.strip() for a in _text(fields, "recipient").lower().split(",")
                              if a.strip())
        return Incoming(mail, stripped=stripped)

    async def _verify(self, timestamp: bytes, token: bytes, signature: bytes) -> None:
        """Check the signature trio before anything else is read, and consume the token
        (once, whatever then becomes of the mail: Mailgun signs every attempt anew)."""
        if (max(len(timestamp), len(token), len(signature)) > MAX_SIGNATURE_FIELD
                or not (timestamp.isdigit() and token.isascii() and token
                        and signature.isascii())):
            raise Unauthenticated("bad signature")
        assert self.settings.signing_key is not None
        expected = hmac_sha256_hex(self.settings.signing_key.get_secret_value(),
                                   timestamp + token)
        if not equal(signature, expected):
            raise Unauthenticated("bad signature")
        if problem := timestamp_problem(int(timestamp), self.settings.max_age):
            raise Unauthenticated(problem)
        if not await self.source.consume_nonce(token.decode()):
            raise Refused(401, "reused token")  # a replay: never accepted, so final


class SendGrid(Provider):
    """SendGrid Inbound Parse: multipart, parsed (``charsets`` honoured) or raw (``email``)."""

    name = "sendgrid"

    async def receive(self, request: web.Request) -> Incoming | None:
        self.check_basic_auth(request)
        form = await self.form(request)
        if "email" in form:
            mail = await self.parse_raw(form["email"].data)
        elif "headers" in form:
            charsets = _json(form.get("charsets"), dict) or {}
            info = _json(form.get("attachment-info"), dict) or {}
            files = []
            for key, item in form.items():
                meta: dict[str, Any] = info[key] if isinstance(info.get(key), dict) else {}
                if key.startswith("attachment") and key[10:].isdigit():
                    files.append(self.attachment(item.filename or meta.get("filename"),
                                                 item.content_type or meta.get("type"),
                                                 item.data))
            text = form["text"].text(charsets.get("text")) if "text" in form else None
            html = form["html"].text(charsets.get("html")) if "html" in form else None
            decoded = {name: form[name.lower()].text(charsets.get(name.lower()))
                       for name in ("From", "Subject") if name.lower() in form}
            pairs = [(k, v) for k, v in _header_lines(form["headers"].text(None))
                     if k.strip() not in decoded]
            headers = header_block([*pairs, *decoded.items()])
            mail = await self.parse_fields(headers, text, html, files)
        else:
            raise Refused(400, "neither 'email' nor 'headers': not an Inbound Parse post")
        envelope = _json(form.get("envelope"), dict) or {}
        mail.delivered.extend(a.lower() for a in _strs(envelope.get("to")))
        return Incoming(mail)


class Postmark(Provider):
    """Postmark inbound webhook: JSON, Basic auth; ``MailboxHash`` names the thread token."""

    name = "postmark"
    stop_status = 403
    retries_4xx = True

    async def receive(self, request: web.Request) -> Incoming | None:
        self.check_basic_auth(request)
        data = await self.json_body(request)
        pairs = [(str(h.get("Name", "")), str(h.get("Value", "")))
                 for h in _dicts(data.get("Headers"))]
        present = {name.lower() for name, _ in pairs}
        sender = _dict(data.get("FromFull"))
        top = {
            "From": mailbox(str(sender.get("Name") or data.get("FromName") or ""),
                             str(sender.get("Email") or data.get("From") or "")),
            "To": data.get("To"), "Cc": data.get("Cc"), "Reply-To": data.get("ReplyTo"),
            "Subject": data.get("Subject"), "Date": data.get("Date"),
            "Message-ID": f"<{data['MessageID']}>" if data.get("MessageID") else None,
        }
        pairs += [(k, str(v)) for k, v in top.items() if v and k.lower() not in present]
        files = []
        for item in _dicts(data.get("Attachments")):
            # Postmark's own test webhook carries the bytes in ``Data``, real ones in ``Content``.
            encoded = item.get("Content") or item.get("Data") or ""
            try:  # ValueError: non-ASCII text
                content = base64.b64decode(str(encoded), validate=True)
            except ValueError:
                raise Refused(400, "attachment content is not base64") from None
            files.append(self.attachment(_str(item.get("Name")), _str(item.get("ContentType")),
                                         content))
        mail = await self.parse_fields(header_block(pairs), _str(data.get("TextBody")),
                                       _str(data.get("HtmlBody")), files)
        if _str(data.get("OriginalRecipient")):
            mail.delivered.append(data["OriginalRecipient"].lower())
        addressed = [*_dicts(data.get("ToFull")), *_dicts(data.get("CcFull")),
                     *_dicts(data.get("BccFull"))]
        tokens = [_str(data.get("MailboxHash")), *(_str(a.get("MailboxHash")) for a in addressed)]
        return Incoming(mail, stripped=_str(data.get("StrippedTextReply")),
                        tokens=[t for t in tokens if t])


class SES(Provider):
    """Amazon SES receipt rule → SNS: RSA-signed JSON with the raw MIME in ``content``."""

    name = "ses"

    def __init__(self, source: EmailSource) -> None:
        super().__init__(source)
        #: GETs certificates and SubscribeURLs; replace it to run offline.
        self.fetch: Fetch = self._get
        self.verifier = SNSVerifier(self._fetch_certificate)

    async def _fetch_certificate(self, url: str) -> bytes:
        return await self.fetch(url)  # looked up on each call, so a replaced fetch is used

    async def _get(self, url: str) -> bytes:
        timeout = aiohttp.ClientTimeout(total=10)
        async with self.source.bridge.http.get(url, timeout=timeout) as response:
            response.raise_for_status()
            return await response.content.read(_FETCH_MAX_BYTES)

    async def receive(self, request: web.Request) -> Incoming | None:
        data = await self.json_body(request)
        kind = request.headers.get("x-amz-sns-message-type", data.get("Type"))
        if kind != data.get("Type"):
            raise Refused(400, "x-amz-sns-message-type does not match the message Type")
        try:
            await self.verifier.verify(data)
        except CertificateUnavailable as exc:
            raise Refused(503, "signing certificate unavailable", detail=str(exc)) from None
        except SNSError as exc:
            raise Refused(403, "bad SNS signature", detail=str(exc)) from None
        if problem := timestamp_problem(_iso_seconds(data["Timestamp"]),
                                        self.settings.ses_max_age):
            raise Refused(403, problem)  # a replay (or a clock far off): SNS gives up in 1 h
        topics = self.settings.ses_topic_arns
        if topics and data.get("TopicArn") not in topics:
            raise Refused(403, "topic not in ses_topic_arns")
        if kind == "SubscriptionConfirmation":
            await self._confirm(data)
            return None
        if kind != "Notification":
            self.source.log.info("SNS message ignored", type=kind, topic=data.get("TopicArn"))
            return None
        notification = _dict(_loads(str(data["Message"]), dict))
        if notification.get("notificationType") != "Received":
            self.source.log.info("SES notification ignored",
                                 notification_type=notification.get("notificationType"))
            return None
        content = notification.get("content")
        if not isinstance(content, str):
            raise Refused(400, "SES notification without content: use an SNS action, "
                               "not S3, in the receipt rule")
        receipt = _dict(notification.get("receipt"))
        encoding = _dict(receipt.get("action")).get("encoding")
        try:  # ValueError: non-ASCII text
            raw = base64.b64decode(content) if encoding == "BASE64" else content.encode()
        except ValueError:
            raise Refused(400, "content is not base64") from None
        mail = await self.parse_raw(raw)
        mail.delivered.extend(r.lower() for r in _strs(receipt.get("recipients")))
        return Incoming(mail)

    async def _confirm(self, data: Mapping[str, Any]) -> None:
        url = str(data.get("SubscribeURL") or "")
        if not (self.settings.ses_auto_confirm and is_sns_url(url)):
            self.source.log.warning("SNS subscription waiting for confirmation: open "
                                    "SubscribeURL (or set ses_auto_confirm)",
                                    topic=data.get("TopicArn"), subscribe_url=url)
            return
        try:
            await self.fetch(url)
        except Exception as exc:
            raise Refused(503, "could not confirm the subscription", detail=str(exc)) from None
        self.source.log.info("SNS subscription confirmed", topic=data.get("TopicArn"))


class Mime(Provider):
    """Any relay posting the raw RFC 5322 message as the body, with Basic auth."""

    name = "mime"

    async def receive(self, request: web.Request) -> Incoming | None:
        self.check_basic_auth(request)
        return Incoming(await self.parse_raw(await self.body(request)))


PROVIDERS: dict[str, type[Provider]] = {
    p.name: p for p in (Mailgun, SendGrid, Postmark, SES, Mime)}


def _iso_seconds(stamp: str) -> float | None:
    """Unix seconds of an ISO 8601 time (SNS ``Timestamp``; UTC when no zone), or None."""
    try:
        when = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list (nothing, when it is not one)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _strs(value: Any) -> list[str]:
    """The strings of a JSON list (nothing, when it is not one)."""
    return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


def _text(fields: Mapping[str, _Field], name: str) -> str:
    return fields[name].text() if name in fields else ""


def _json(item: _Field | None, kind: type[Any]) -> Any:
    """A JSON form field of type ``kind``, or None when absent or malformed."""
    return None if item is None else _loads(item.text(), kind)


def _urlencoded(body: bytes) -> dict[str, _Field]:
    """A urlencoded form's fields (``ValueError`` past ``MAX_FIELDS``)."""
    pairs = parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True,
                      max_num_fields=MAX_FIELDS)
    return {k: _Field(v.encode("utf-8", "surrogateescape")) for k, v in pairs}


def _loads(text: str, kind: type[Any]) -> Any:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, kind) else None


def _header_lines(block: str) -> list[tuple[str, str]]:
    """(name, value) pairs of a raw header block, folded lines joined."""
    pairs: list[tuple[str, str]] = []
    for line in block.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and pairs:
            pairs[-1] = (pairs[-1][0], pairs[-1][1] + " " + line.strip())
        elif ":" in line:
            name, _, value = line.partition(":")
            pairs.append((name, value.strip()))
    return pairs
