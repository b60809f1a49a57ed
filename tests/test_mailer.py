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


@pytest.mark.parametrize(("smtputf8", "expected"), [
    (True, ["jörg@bücher.example", "ann@bücher.example"]),
    (False, ["ann@xn--bcher-kva.example"])])
async def test_non_ascii_addresses_and_names_with_line_breaks(smtputf8: bool,
                                                             expected: list[str]) -> None:
    """SMTPUTF8 when the server offers it, else the domain IDNA-encoded (a non-ASCII local
    part cannot go then); a name with CR/LF is cleaned, never a header of its own."""
    handler = Refusing()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port(),
                            enable_SMTPUTF8=smtputf8)
    controller.start()
    try:
        mailer = Mailer(SMTPConfig(host="127.0.0.1", port=controller.port,
                                   sender="help@example.com", tls="none"))
        if not smtputf8:
            with pytest.raises(Permanent, match="non-ASCII local part"):
                await mailer.send(to="jörg@bücher.example", subject="Hi", text="Hello")
        for to in expected:
            await mailer.send(to=to.replace("xn--bcher-kva", "bücher"), subject="Hi\r\nX: y",
                              text="Hello", to_name="Eve\r\nBcc: x@evil.example",
                              from_name="Agent\nSmith")
    finally:
        controller.stop()
    assert [e.rcpt_tos for e in handler.received] == [[to] for to in expected]
    content = handler.received[-1].content
    content = content if isinstance(content, bytes) else content.encode()
    assert b"\nBcc:" not in content and b"\nX: y" not in content
    assert b'"Eve Bcc: x@evil.example"' in content and b"Agent Smith" in content
