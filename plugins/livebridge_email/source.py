"""The ``email`` source: provider webhooks in, one normalize path to ``InboundMessage``, agent
replies out by SMTP with threading headers and a ``support+TOKEN@`` reply address."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
from email.utils import formataddr, parseaddr
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, SecretStr, field_validator, model_validator

from livebridge import (
    AcceptResult,
    Attachment,
    Bridge,
    InboundMessage,
    OutboundReply,
    Overloaded,
    Permanent,
    Sender,
    Source,
    SourceSettings,
    StoreUnavailable,
)
from livebridge.config import Duration
from livebridge_email.content import (
    LANGUAGES,
    is_forward,
    new_text,
    reply_subject,
    same_subject,
    truncate,
)
from livebridge_email.parse import ParsedAttachment, ParsedEmail, normalize_id
from livebridge_email.providers import PROVIDERS, Incoming, Provider, Refused
from livebridge_email.threads import ThreadInfo, Threads, tokens_of

__all__ = ["EmailSettings", "EmailSource"]

_BASIC_AUTH = ("sendgrid", "postmark", "mime")
#: Reply stripping reads at most this many times ``max_text_chars`` of a mail.
_STRIP_FACTOR = 4


class EmailSettings(SourceSettings):
    """``type: email``: one entry per provider webhook."""

    provider: Literal["mailgun", "sendgrid", "postmark", "ses", "mime"]
    path: str | None = Field(default=None, description="default /email/<provider>")
    #: Mailgun's webhook signing key (``${MAILGUN_SIGNING_KEY}``).
    signing_key: SecretStr | None = None
    #: Mailgun: refuse signatures older (or newer) than this; tokens are remembered twice as long.
    max_age: Duration = 300.0
    #: Basic auth for SendGrid, Postmark and mime (``${EMAIL_WEBHOOK_USER}``, ``..._PASSWORD``).
    webhook_user: str | None = None
    webhook_password: SecretStr | None = None
    #: SES: accept only these SNS topics (empty: any topic whose signature is valid).
    ses_topic_arns: list[str] = Field(default_factory=list)
    #: SES: confirm SNS subscriptions by fetching SubscribeURL (else log it for the operator).
    ses_auto_confirm: bool = False
    max_body_bytes: int = Field(default=30 * 1024 * 1024, gt=0)
    #: Attachment bytes are kept up to this size each (name, type and size always).
    attachment_max_bytes: int = Field(default=1024 * 1024, ge=0)
    #: Longer message text is cut, with a visible note.
    max_text_chars: int = Field(default=20_000, ge=200)
    #: Languages of quote headers and signatures to strip (``mail-parser-reply``).
    languages: list[str] = Field(default_factory=lambda: ["en", "de", "fr", "es", "it", "nl",
                                                          "sv", "da", "pl", "cs", "ja", "zh"])
    #: The address customers write to; replies say ``Reply-To: local+TOKEN@domain`` of it
    #: (default: the ``smtp.sender`` address).
    reply_address: str | None = None
    #: How long thread records (Message-IDs, tokens) are kept after their last use.
    thread_ttl: Duration = 365 * 86400.0

    @field_validator("languages")
    @classmethod
    def _known_languages(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - LANGUAGES)
        if unknown:
            raise ValueError(f"unknown languages {unknown}; known: {sorted(LANGUAGES)}")
        return value

    @model_validator(mode="after")
    def _credentials(self) -> EmailSettings:
        self.path = self.path or f"/email/{self.provider}"
        if self.provider == "mailgun" and not _secret(self.signing_key):
            raise ValueError("provider mailgun needs signing_key (${MAILGUN_SIGNING_KEY})")
        if self.ses_auto_confirm and not self.ses_topic_arns:
            raise ValueError("ses_auto_confirm needs ses_topic_arns: else any SNS topic could "
                             "subscribe this endpoint")
        if self.provider in _BASIC_AUTH and not (self.webhook_user
                                                 and _secret(self.webhook_password)):
            raise ValueError(f"provider {self.provider} needs webhook_user and webhook_password "
                             "(${EMAIL_WEBHOOK_USER}, ${EMAIL_WEBHOOK_PASSWORD}) for Basic auth")
        return self


def _secret(value: SecretStr | None) -> bool:
    return bool(value and value.get_secret_value())


class EmailSource(Source):
    """Inbound email from one provider's webhook; agent replies by SMTP."""

    type_name = "email"
    Settings = EmailSettings
    settings: EmailSettings

    def __init__(self, settings: SourceSettings, bridge: Bridge) -> None:
        super().__init__(settings, bridge)
        assert isinstance(settings, EmailSettings)
        self.provider: Provider = PROVIDERS[settings.provider](self)

    @property
    def threads(self) -> Threads:
        """The thread records, in the bridge's store."""
        return Threads(self.bridge.state(self), self.settings.thread_ttl)

    def routes(self) -> list[web.RouteDef]:
        assert self.settings.path is not None
        return [web.post(self.settings.path, self.handle)]

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "provider": self.settings.provider}

    async def start(self) -> None:
        if self.bridge.mailer is None:
            self.log.warning("no smtp: section, so agent replies to email cannot be sent")
        if self.settings.provider == "ses" and not self.settings.ses_topic_arns:
            self.log.warning("ses_topic_arns is empty: any SNS topic with a valid signature "
                             "is accepted")

    async def nonce_seen(self, nonce: str) -> bool:
        """Whether a one-time request token was already used."""
        return await self.bridge.state(self).get(f"nonce:{nonce}") is not None

    async def handle(self, request: web.Request) -> web.Response:
        """The provider's webhook: authenticate, parse, thread, accept."""
        try:
            incoming = await self.provider.receive(request)
            if incoming is None:
                return web.json_response({"ok": True})
            if incoming.mail.auto:
                self.bridge.metrics.dropped.labels(source=self.name,
                                                   reason=incoming.mail.auto).inc()
                self.log.info("automatic mail dropped", reason=incoming.mail.auto,
                              message_id=incoming.mail.message_id)
                await self._used(incoming)
                return web.json_response({"ok": True, "dropped": incoming.mail.auto})
            if not incoming.mail.from_email:
                raise Refused(422, "no From address")
            message, thread = await self._message(incoming)
            result = await self.bridge.accept(message, self)
            if result is not AcceptResult.DROPPED:
                await self.threads.remember(message.thread_key, thread, message.event_id)
            await self._used(incoming)
        except Refused as exc:
            stop = self.provider.stop_status
            status = exc.status if exc.status >= 500 or stop is None else stop
            return self.reject(request, status, exc.reason, headers=exc.headers)
        except (Overloaded, StoreUnavailable) as exc:
            return self.reject(request, 503, "busy",
                               headers={"Retry-After": str(exc.retry_after)})
        return web.json_response({"ok": True, "result": result.value})

    async def _used(self, incoming: Incoming) -> None:
        if incoming.nonce:
            await self.bridge.state(self).set(f"nonce:{incoming.nonce}", "1",
                                              2 * self.settings.max_age)

    async def _message(self, incoming: Incoming) -> tuple[InboundMessage, ThreadInfo]:
        """The normalized message and its thread (found, or new)."""
        mail = incoming.mail
        assert mail.from_email is not None
        message_id = mail.message_id or _fingerprint(mail)
        candidates = [i for i in (message_id, mail.in_reply_to, *reversed(mail.references)) if i]
        thread_key = await self.threads.find([*incoming.tokens, *tokens_of(mail.recipients)],
                                             candidates)
        thread = await self.threads.info(thread_key) if thread_key else None
        show_subject = thread is None or not same_subject(thread.subject, mail.subject)
        thread_key = thread_key or normalize_id(message_id)
        if thread is None:
            thread = ThreadInfo.new(mail.subject)
        elif show_subject and mail.subject:
            thread.subject = mail.subject
        thread.add(message_id)
        if is_forward(mail.subject, mail.text):
            body = mail.text.strip()
        else:  # regex work on a bounded text, off the event loop
            text = mail.text[:_STRIP_FACTOR * self.settings.max_text_chars]
            body = await asyncio.to_thread(new_text, text, self.settings.languages,
                                           incoming.stripped)
        if show_subject and mail.subject:
            body = f"Subject: {mail.subject}\n\n{body}"
        message = InboundMessage(
            source=self.name, event_id=message_id, message_ref=message_id,
            thread_key=thread_key, reply_to=mail.in_reply_to,
            sender=Sender(external_id=mail.from_email, name=mail.from_name,
                          email=mail.from_email),
            text=truncate(body, self.settings.max_text_chars),
            attachments=[_attachment(a) for a in mail.attachments],
            reply_context={
                "to": mail.reply_to or mail.from_email,
                "name": mail.from_name if mail.reply_to in (None, mail.from_email) else None,
                "subject": thread.subject or mail.subject, "message_id": message_id,
                "message_ids": thread.message_ids, "reply_to_token": thread.token,
            },
        )
        return message, thread

    async def send_reply(self, reply: OutboundReply) -> None:
        """Mail an agent's reply, threaded under the customer's last mail."""
        mailer = self.bridge.mailer
        if mailer is None:
            raise Permanent("no smtp: section is configured, so email replies cannot be sent")
        context = reply.reply_context
        if not context.get("to"):
            raise Permanent("the thread has no address to reply to")
        thread = await self.threads.info(reply.thread_key) or ThreadInfo(
            token=str(context.get("reply_to_token") or ThreadInfo.new(None).token),
            subject=context.get("subject"), message_ids=list(context.get("message_ids") or []))
        message_id = f"<lb.{reply.livedesk_message_id}.{thread.token}@{mailer.domain}>"
        references = list(thread.message_ids)
        # Known before it is sent, so a quick answer to it already finds the thread.
        await self.threads.remember(reply.thread_key, thread, message_id)
        await mailer.send(
            to=formataddr((context.get("name") or "", context["to"])),
            subject=reply_subject(thread.subject or context.get("subject")),
            text=reply.text, in_reply_to=context.get("message_id") or (
                references[-1] if references else None),
            references=references, reply_to=self._reply_address(thread.token),
            message_id=message_id, from_name=reply.agent_name,
        )

    def _reply_address(self, token: str) -> str | None:
        """``local+TOKEN@domain`` of the address customers write to."""
        mailer = self.bridge.mailer
        base = self.settings.reply_address or (mailer.config.sender if mailer else "")
        local, _, domain = parseaddr(base)[1].rpartition("@")
        if not local or not domain:
            return None
        return f"{local.split('+')[0]}+{token}@{domain}"


def _fingerprint(mail: ParsedEmail) -> str:
    """A stable stand-in Message-ID for a mail without one (so retries still dedupe)."""
    digest = hashlib.sha256("\x1f".join(
        [mail.from_email or "", mail.subject or "", mail.text]).encode()).hexdigest()
    return f"<{digest[:32]}@livebridge.invalid>"


def _attachment(part: ParsedAttachment) -> Attachment:
    if part.name:
        name = part.name
    elif part.content_type == "message/rfc822":
        name = "message.eml"
    else:
        name = "attachment" + (mimetypes.guess_extension(part.content_type) or ".bin")
    return Attachment(name=name, content_type=part.content_type, size=part.size,
                      data=part.data)
