"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests of mail the bridge sends: each mail
taken is handed to the test, which waits for it on a queue (no sleeping)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from livebridge.testing import free_port


@dataclass
class Received:
    """One mail the local SMTP server took."""

    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    #: The mail as it arrived.
    content: bytes


class _Handler:
    """aiosmtpd handler: refuses the recipients in ``refused`` (550), hands each mail to the
    test's loop (it runs in the server thread)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, queue: asyncio.Queue[Received],
                 refused: set[str]):
        self.loop, self.queue, self.refused = loop, queue, refused

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refused:
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = BytesParser(policy=policy.default).parsebytes(envelope.content)
        assert isinstance(message, EmailMessage)
        received = Received(envelope.mail_from, list(envelope.rcpt_tos), message,
                            envelope.content)
        self.loop.call_soon_threadsafe(self.queue.put_nowait, received)
        return "250 OK"


@dataclass
class SMTPServer:
    port: int
    inbox: asyncio.Queue[Received]
    #: Recipients refused with 550 (change it at any time).
    refused: set[str]

    async def next(self, timeout: float = 10) -> Received:
        """The next mail received (no sleeping: waits on the queue)."""
        return await asyncio.wait_for(self.inbox.get(), timeout)


@contextlib.asynccontextmanager
async def running_smtp(smtputf8: bool = False) -> AsyncIterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, offering SMTPUTF8 if ``smtputf8``."""
    queue: asyncio.Queue[Received] = asyncio.Queue()
    refused: set[str] = set()
    controller = Controller(_Handler(asyncio.get_running_loop(), queue, refused),
                            hostname="127.0.0.1", port=free_port(), enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        yield SMTPServer(controller.port, queue, refused)
    finally:
        controller.stop()


@pytest.fixture
async def smtp_server() -> AsyncIterator[SMTPServer]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1."""
    async with running_smtp() as server:
        yield server


def smtp_section(port: int, sender: str = "support@example.com") -> dict[str, Any]:
    """The ``smtp:`` section of a bridge that sends to the test server on ``port``."""
    return {"host": "127.0.0.1", "port": port, "tls": "none", "sender": sender}
