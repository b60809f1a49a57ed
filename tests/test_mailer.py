"""The mailer against a real local SMTP server: what is retried and what is not."""

from __future__ import annotations

from typing import Any

import pytest
from aiosmtpd.controller import Controller

from livebridge.config import SMTPConfig
from livebridge.exceptions import Permanent, Retryable
from livebridge.mailer import Mailer
from livebridge.testing import free_port


class Refusing:
    """An SMTP handler that refuses recipients with the given code, accepts the rest."""

    def __init__(self) -> None:
        self.code = 550
        self.received: list[Any] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: Any) -> str:
        if address.startswith("nobody@"):
            return f"{self.code} 5.1.1 no such user" if self.code >= 500 else \
                f"{self.code} 4.2.1 try later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp() -> Any:
    handler = Refusing()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


async def test_refused_recipient_is_permanent_and_a_busy_one_is_retried(smtp: Any) -> None:
    handler, port = smtp
    mailer = Mailer(SMTPConfig(host="127.0.0.1", port=port, sender="help@example.com",
                               tls="none"))
    message_id = await mailer.send(to="ann@example.com", subject="Hi", text="Hello")
    assert [e.rcpt_tos for e in handler.received] == [["ann@example.com"]]
    assert message_id.endswith("@example.com>")
    with pytest.raises(Permanent, match="550"):
        await mailer.send(to="nobody@example.com", subject="Hi", text="Hello")
    handler.code = 450
    with pytest.raises(Retryable, match="450"):
        await mailer.send(to="nobody@example.com", subject="Hi", text="Hello")


async def test_unreachable_server_is_retried() -> None:
    mailer = Mailer(SMTPConfig(host="127.0.0.1", port=free_port(), sender="h@example.com",
                               tls="none", timeout=2))
    with pytest.raises(Retryable):
        await mailer.send(to="ann@example.com", subject="Hi", text="Hello")
