"""The ``email`` source: provider webhooks in, one normalize path to ``InboundMessage``, agent
replies out by SMTP with threading headers and a ``support+TOKEN@`` reply address."""

from __future__ import annotations

import asyncio
import hashlib
import mimetypes
import secrets
from email.utils import parseaddr
from typing import Any, Literal

from aiohttp import web
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator

from livebridge import (
    AcceptResult,
    Attachment,
    Bridge,
    Duration,
    InboundMessage,
    OutboundReply,
    Overloaded,
    Permanent,
    Sender,
    Source,
    SourceSettings,
    StoreUnavailable,
)
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
from livebridge_email.threads import LOCK, MAX_IDS, ThreadInfo, Threads, tokens_of

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
    #: SES: refuse SNS messages whose ``Timestamp`` is older (or newer) than this (replays);
    #: SNS stops retrying an HTTPS delivery after one hour.
    ses_max_age: Duration = 3600.0
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

    async def consume_nonce(self, nonce: str) -> bool:
        """Record a one-time request token; False when it was used before (atomic across
        the daemons sharing the store)."""
        state, key = self.bridge.state(self), f"nonce:{nonce}"
        async with self.bridge.lock(self, key):
            if await state.get(key) is not None:
                return False
            await state.set(key, "1", 2 * self.settings.max_age)
        return True

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
                return web.json_response({"ok": True, "dropped": incoming.mail.auto})
            if not incoming.mail.from_email:
                raise Refused(422, "no From address")
            body = await self._body(incoming)
            async with self.bridge.lock(self, LOCK):  # one lookup-accept-remember at a time
                message, thread, claim = await self._message(incoming, body)
                result = await self.bridge.accept(message, self)
                if result is not AcceptResult.DROPPED:
                    await self.threads.remember(message.thread_key, thread, message.event_id,
                                                claim=claim)
        except Refused as exc:
            return self._refuse(request, exc)
        except ValidationError as exc:  # e.g. after a hook's change: a 4xx, never a 500
            self.log.warning("invalid message", error=str(exc))
            return self._refuse(request, Refused(422, "invalid message", final=False))
        except (Overloaded, StoreUnavailable) as exc:
            return self.reject(request, 503, "busy",
                               headers={"Retry-After": str(exc.retry_after)})
        except TimeoutError:  # the thread lock: another daemon holds it too long
            return self.reject(request, 503, "busy", headers={"Retry-After": "5"})
        return web.json_response({"ok": True, "result": result.value})

    def _refuse(self, request: web.Request, exc: Refused) -> web.Response:
        """Answer a refusal so that the provider retries it exactly when a retry may pass:
        a final one as its "do not retry" status (if it has one), any other with a status
        it retries (503 for those that retry only 5xx)."""
        provider = self.provider
        if exc.final:
            status = provider.stop_status or exc.status
        else:
            status = exc.status if exc.status >= 500 or provider.retries_4xx else 503
        return self.reject(request, status, exc.reason, headers=exc.headers,
                           detail={"detail": exc.detail} if exc.detail else None)

    async def _body(self, incoming: Incoming) -> str:
        """What the agent reads of the mail: the new part of a reply, a forward whole."""
        mail = incoming.mail
        if is_forward(mail.subject, mail.text):
            return mail.text.strip()
        text = mail.text[:_STRIP_FACTOR * self.settings.max_text_chars]
        # regex work on a bounded text, off the event loop
        return await asyncio.to_thread(new_text, text, self.settings.languages,
                                       incoming.stripped)

    async def _thread(self, incoming: Incoming) -> tuple[str, ThreadInfo | None, str]:
        """(thread key, its record or None for a new thread, the mail's event id).

        A mail joins the first thread it names (by its own Message-ID, a token, In-Reply-To
        or References) whose participant its sender is; else it opens a new thread.
        """
        mail = incoming.mail
        message_id = mail.message_id or _fingerprint(mail)
        own = await self.threads.owner(message_id)
        if own is not None and not own[1].has(mail.from_email):
            # Someone else's Message-ID: never a redelivery of this mail, so an id of its own.
            message_id = _fingerprint(mail, message_id)
            own = await self.threads.owner(message_id)
        named = await self.threads.candidates(
            [*incoming.tokens, *tokens_of(mail.recipients)],
            [mail.in_reply_to, *reversed(mail.references)])
        for key, info in [*([own] if own else []), *named]:
            if info.has(mail.from_email):
                return key, info, message_id
        if named:
            self.log.info("mail names a thread its sender is no participant of: new thread",
                          sender=mail.from_email, message_id=message_id)
        thread_key = normalize_id(message_id)
        if await self.threads.info(thread_key) is not None:  # taken (its ids expired)
            thread_key = f"{thread_key}.{secrets.token_hex(4)}"
        return thread_key, None, message_id

    def _participants(self, mail: ParsedEmail) -> list[str]:
        """Who may join the thread after this mail: its sender and Reply-To, and its To and
        Cc less our own addresses (the reply address, the SMTP sender, where it was
        delivered)."""
        mailer = self.bridge.mailer
        ours = {_base(a) for a in (self.settings.reply_address or "",
                                   mailer.config.sender if mailer else "") if a}
        delivered = ours | {_base(a) for a in mail.delivered}
        writers = [a for a in (mail.from_email, mail.reply_to) if a and _base(a) not in ours]
        return [*writers, *(a for a in mail.copied if _base(a) not in delivered)]

    async def _message(self, incoming: Incoming,
                       body: str) -> tuple[InboundMessage, ThreadInfo, list[str]]:
        """The normalized message, its thread (found, or new) and, for a new thread, the ids
        it refers to (claimed for it where unknown: a reply that overtook the mail it answers
        opens the thread that mail then joins). Under the thread lock."""
        mail = incoming.mail
        assert mail.from_email is not None
        thread_key, thread, message_id = await self._thread(incoming)
        show_subject = thread is None or not same_subject(thread.subject, mail.subject)
        claim: list[str] = []
        if thread is None:
            thread = ThreadInfo.new(mail.subject)
            claim = [i for i in (mail.in_reply_to, *mail.references[-MAX_IDS:]) if i]
        elif show_subject and mail.subject:
            thread.subject = mail.subject
        thread.add(message_id)
        thread.admit(self._participants(mail))
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
        return message, thread, claim

    async def send_reply(self, reply: OutboundReply) -> None:
        """Mail an agent's reply, threaded under the customer's last mail."""
        mailer = self.bridge.mailer
        if mailer is None:
            raise Permanent("no smtp: section is configured, so email replies cannot be sent")
        context = reply.reply_context
        if not context.get("to"):
            raise Permanent("the thread has no address to reply to")
        prepared = await self.bridge.reply_files(reply)
        async with self.bridge.lock(self, LOCK):
            thread = await self.threads.info(reply.thread_key) or ThreadInfo(
                token=str(context.get("reply_to_token") or ThreadInfo.new(None).token),
                subject=context.get("subject"),
                message_ids=list(context.get("message_ids") or []))
            message_id = await self.threads.sent_id(reply.livedesk_message_id, mailer.domain)
            references = [i for i in thread.message_ids if i != message_id]  # on a retry
            thread.admit([str(context["to"]).lower()])  # whom we write to may answer
            # Known before it is sent, so a quick answer to it already finds the thread.
            await self.threads.remember(reply.thread_key, thread, message_id)
        await mailer.send(
            to=str(context["to"]), to_name=context.get("name"),
            subject=reply_subject(thread.subject or context.get("subject")),
            text=prepared.text, in_reply_to=context.get("message_id") or (
                references[-1] if references else None),
            references=references, reply_to=self._reply_address(thread.token),
            message_id=message_id, from_name=reply.agent_name, attachments=prepared.files,
        )

    def _reply_address(self, token: str) -> str | None:
        """``local+TOKEN@domain`` of the address customers write to."""
        mailer = self.bridge.mailer
        base = self.settings.reply_address or (mailer.config.sender if mailer else "")
        local, _, domain = parseaddr(base)[1].rpartition("@")
        if not local or not domain:
            return None
        return f"{local.split('+')[0]}+{token}@{domain}"


def _fingerprint(mail: ParsedEmail, message_id: str | None = None) -> str:
    """A stable stand-in Message-ID (so retries still dedupe) for a mail without one, or
    for one whose ``message_id`` belongs to another sender's thread."""
    parts = [mail.from_email or "", message_id] if message_id else [
        mail.from_email or "", mail.subject or "", mail.text]
    digest = hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()
    return f"<{digest[:32]}@livebridge.invalid>"


def _base(address: str) -> str:
    """An address without its ``+tag``, lowercased (``support+x@a.b`` → ``support@a.b``)."""
    local, _, domain = parseaddr(address)[1].lower().rpartition("@")
    return f"{local.split('+')[0]}@{domain}" if local else address.lower()


def _attachment(part: ParsedAttachment) -> Attachment:
    if part.name:
        name = part.name
    elif part.content_type == "message/rfc822":
        name = "message.eml"
    else:
        name = "attachment" + (mimetypes.guess_extension(part.content_type) or ".bin")
    return Attachment(name=name, content_type=part.content_type, size=part.size,
                      data=part.data)
