"""Sending email (agent replies to email and web-form customers) over SMTP."""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from livebridge.config import SMTPConfig
from livebridge.exceptions import Permanent, Retryable
from livebridge.model import Attachment

__all__ = ["Mailer", "display_name", "mailbox"]


def display_name(name: str | None) -> str:
    """A display name fit for a header: control characters (CR, LF, ...) and runs of
    whitespace become single spaces."""
    return " ".join("".join(c if c.isprintable() else " " for c in name or "").split())


class Mailer:
    """An async SMTP sender configured by the ``smtp:`` section."""

    def __init__(self, config: SMTPConfig) -> None:
        self.config = config
        self.domain = config.sender.rsplit("@", 1)[-1].strip(">") or "livebridge.local"

    def new_message_id(self) -> str:
        """A fresh ``Message-ID`` in the sender's domain."""
        return email.utils.make_msgid(domain=self.domain)

    async def send(
        self, *, to: str, subject: str, text: str, to_name: str | None = None,
        in_reply_to: str | None = None, references: Sequence[str] = (),
        reply_to: str | None = None, message_id: str | None = None,
        from_name: str | None = None, attachments: Sequence[Attachment] = (),
    ) -> str:
        """Send a plain-text mail to the address ``to`` (named ``to_name``), with
        ``attachments`` (those with bytes) as MIME parts; return its Message-ID.

        A non-ASCII address goes out with SMTPUTF8 when the server offers it, else with its
        domain IDNA-encoded (a non-ASCII local part then cannot be sent: ``Permanent``).
        Names are cleaned with ``display_name``. Raises ``Retryable`` for connection trouble
        and 4xx SMTP answers, ``Permanent`` for 5xx answers (a refused recipient, say).
        """
        c = self.config
        client = aiosmtplib.SMTP(
            hostname=c.host, port=c.port, username=c.user,
            password=c.password.get_secret_value() if c.password else None,
            use_tls=c.tls == "tls", start_tls=c.tls == "starttls", timeout=c.timeout,
        )
        try:
            async with client:
                if client.is_ehlo_or_helo_needed:
                    await client.ehlo()
                utf8 = client.supports_extension("smtputf8")
                msg = EmailMessage()
                msg["From"] = mailbox(from_name, c.sender) if from_name else c.sender
                msg["To"] = mailbox(to_name, _deliverable(to, utf8))
                msg["Subject"] = display_name(subject)
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
                await client.send_message(msg)
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
        except ValueError as exc:  # an address with characters SMTP cannot carry
            raise Permanent(f"cannot send to this address: {exc}") from exc
        return str(msg["Message-ID"])


def _deliverable(address: str, utf8: bool) -> str:
    """``address`` as this server can take it: as is with SMTPUTF8 (or when ASCII), else
    with its domain IDNA-encoded."""
    local, _, domain = address.strip().rpartition("@")
    if not local or not domain:
        raise Permanent("not an email address")
    if utf8 or address.isascii():
        return f"{local}@{domain}"
    if not local.isascii():
        raise Permanent("the address has a non-ASCII local part and the SMTP server does "
                        "not offer SMTPUTF8")
    try:
        return f"{local}@{domain.encode('idna').decode('ascii')}"
    except UnicodeError:
        raise Permanent("the address has an invalid domain") from None


def mailbox(name: str | None, address: str) -> str:
    """``"Name" <address>`` for a header (``address`` may be ``Name <a@b>`` itself), the name
    cleaned with ``display_name`` and quoted; non-ASCII (SMTPUTF8) addresses too, which the
    standard library's ``formataddr`` and ``Address`` refuse."""
    addr_spec = email.utils.parseaddr(address)[1] or address.strip()
    name = display_name(name)
    if not name:
        return addr_spec
    quoted = name.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}" <{addr_spec}>'
