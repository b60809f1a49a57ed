"""Sending email (agent replies to email and web-form customers) over SMTP."""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from livebridge.config import SMTPConfig
from livebridge.exceptions import Permanent, Retryable
from livebridge.model import Attachment

__all__ = ["Mailer"]


class Mailer:
    """An async SMTP sender configured by the ``smtp:`` section."""

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config
        self.domain = config.sender.rsplit("@", 1)[-1].strip(">") or "livebridge.local"

    def new_message_id(self) -> str:
        """A fresh ``Message-ID`` in the sender's domain."""
        return email.utils.make_msgid(domain=self.domain)

    async def send(
        self, *, to: str, subject: str, text: str, in_reply_to: str | None = None,
        references: Sequence[str] = (), reply_to: str | None = None,
        message_id: str | None = None, from_name: str | None = None,
        attachments: Sequence[Attachment] = (),
    ) -> str:
        """Send a plain-text mail, with ``attachments`` (those with bytes) as MIME parts;
        return its Message-ID.

        Raises ``Retryable`` for connection trouble and 4xx SMTP answers, ``Permanent`` for
        5xx answers (a refused recipient, say).
        """
        c = self.config
        msg = EmailMessage()
        msg["From"] = email.utils.formataddr((from_name, c.sender)) if from_name else c.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg["Date"] = email.utils.formatdate(localtime=False)
        msg["Message-ID"] = message_id or self.new_message_id()
        if in_reply_to:
            msg["In-Reply-To"] = in_reply_to
        if references:
            msg["References"] = " ".join(references)
        if reply_to:
            msg["Reply-To"] = reply_to
        msg.set_content(text)
        for a in attachments:
            if a.data is not None:
                maintype, _, subtype = a.content_type.partition("/")
                msg.add_attachment(a.data, maintype=maintype, filename=a.name,
                                   subtype=subtype or "octet-stream")
        try:
            await aiosmtplib.send(
                msg, hostname=c.host, port=c.port,
                username=c.user, password=c.password.get_secret_value() if c.password else None,
                use_tls=c.tls == "tls", start_tls=c.tls == "starttls",
                timeout=c.timeout,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:  # every recipient was refused
            answers = "; ".join(f"{r.code} {r.message}" for r in exc.recipients)
            if all(500 <= r.code < 600 for r in exc.recipients):
                raise Permanent(f"SMTP refused the recipient: {answers}") from exc
            raise Retryable(f"SMTP: {answers}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            if 500 <= exc.code < 600:
                raise Permanent(f"SMTP refused the mail: {exc.code} {exc.message}") from exc
            raise Retryable(f"SMTP: {exc.code} {exc.message}") from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise Retryable(f"SMTP: {type(exc).__name__}: {exc}") from exc
        return str(msg["Message-ID"])
