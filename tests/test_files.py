"""Agents' files reach mail customers (the web form's, here) as MIME parts, a file-only reply
too; a file that cannot be fetched becomes a line; an edit or deletion cannot unsend a mail
(logged and counted). The emulator sends its webhooks to the running daemon, which mails a
real local SMTP server."""

from __future__ import annotations

import base64
from email.message import EmailMessage
from typing import Any

import pytest
from bridge_helpers import form_customer_wrote
from smtp_helpers import SMTPServer

from livebridge.testing import BridgeHarness

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


async def form_conversation(make_bridge: Any, port: int) -> tuple[BridgeHarness, int]:
    """A web-form customer wrote; the emulator sends its webhooks to the bridge."""
    bridge, conversation = await form_customer_wrote(make_bridge, port)
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    return bridge, conversation


async def reply(bridge: BridgeHarness, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """An agent acts on the emulator's page (its JSON endpoints)."""
    resp = await bridge.client.post(f"/emulator/_emulator/{path}", json=body)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


PDF_FILE = {"name": "invoice-42.pdf", "content_type": "application/pdf",
            "data": base64.b64encode(PDF).decode()}


def parts(mail: EmailMessage) -> list[tuple[str | None, str, bytes]]:
    """(file name, type, bytes) of each attachment."""
    return [(p.get_filename(), p.get_content_type(), p.get_content())
            for p in mail.iter_attachments()]


@pytest.mark.parametrize("text", ["Your invoice is attached.", ""])
async def test_a_reply_pdf_reaches_the_mail_as_a_pdf_part(make_bridge: Any,
                                                          smtp_server: SMTPServer,
                                                          text: str) -> None:
    bridge, cid = await form_conversation(make_bridge, smtp_server.port)
    await reply(bridge, f"conversations/{cid}/reply", {"content": text,
                                                       "attachments": [PDF_FILE]})
    mail = (await smtp_server.next()).message
    assert parts(mail) == [("invoice-42.pdf", "application/pdf", PDF)]
    body = mail.get_body(("plain",))
    assert body is not None and body.get_content().strip() == text


async def test_a_file_that_cannot_be_fetched_becomes_a_line(make_bridge: Any,
                                                             smtp_server: SMTPServer) -> None:
    bridge, cid = await form_conversation(make_bridge, smtp_server.port)
    gone = bridge.url("/emulator/_emulator/files/99/invoice-42.pdf")  # answers 404
    event = {"event": "message_created", "id": 9001, "content": "See the file.",
             "message_type": "outgoing", "private": False, "conversation": {"id": cid},
             "attachments": [{"id": 99, "message_id": 9001, "file_type": "file",
                              "account_id": 1, "extension": "pdf", "data_url": gone,
                              "thumb_url": "", "file_size": 48, "width": None,
                              "height": None}]}
    resp = await bridge.post_webhook(event)
    assert resp.status == 200 and (await resp.json())["queued"] is True
    mail = (await smtp_server.next()).message
    assert parts(mail) == []
    plain = mail.get_body(("plain",))
    assert plain is not None and plain.get_content().splitlines() == [
        "See the file.", "", f"[attachment] invoice-42.pdf (application/pdf, 48 bytes): {gone}"]


async def test_an_edit_or_delete_cannot_unsend_a_mail(make_bridge: Any,
                                                      smtp_server: SMTPServer) -> None:
    bridge, cid = await form_conversation(make_bridge, smtp_server.port)
    sent = await reply(bridge, f"conversations/{cid}/reply", {"content": "It ships today."})
    await smtp_server.next()
    await reply(bridge, f"messages/{sent['id']}/edit", {"content": "It ships tomorrow."})
    await reply(bridge, f"messages/{sent['id']}/delete", {})
    await bridge.wait_idle()
    assert smtp_server.inbox.empty()

    def dropped(action: str) -> float | None:
        return bridge.daemon.metrics.registry.get_sample_value(
            "livebridge_messages_dropped_total",
            {"source": "form", "reason": f"reply {action} not supported"})

    assert (dropped("edit"), dropped("delete")) == (1.0, 1.0)
