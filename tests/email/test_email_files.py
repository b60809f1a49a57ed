"""Agents' files reach email customers as MIME parts (a file-only reply too): email in →
agent reply with a PDF in the emulator → mail out over a real local SMTP server."""

from __future__ import annotations

import base64

import pytest
from email_helpers import (
    SMTPServer,
    SNSKeys,
    StartBridge,
    content_of,
    mail,
    smtp_server,  # noqa: F401 - fixture
    sns_keys,  # noqa: F401 - fixture
    start_inbox,
)

PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@pytest.mark.parametrize("text", ["Your invoice is attached.", ""])
async def test_a_reply_pdf_reaches_the_mail_as_a_pdf_part(
        make_bridge: StartBridge, sns_keys: SNSKeys,  # noqa: F811
        smtp_server: SMTPServer, text: str) -> None:  # noqa: F811
    inbox = await start_inbox(make_bridge, sns_keys, "mime", smtp_port=smtp_server.port)
    await inbox.post(mail(subject="Invoice", text="Where is my invoice?"))
    await inbox.bridge.wait_for(lambda: len(inbox.bridge.emulator.state.messages) == 1)
    [(conversation, _)] = content_of(inbox)
    inbox.bridge.emulator.webhook_url = inbox.bridge.url("/livedesk/webhook")
    resp = await inbox.bridge.client.post(
        f"/emulator/_emulator/conversations/{conversation}/reply",
        json={"content": text, "attachments": [{
            "name": "invoice-42.pdf", "content_type": "application/pdf",
            "data": base64.b64encode(PDF).decode()}]})
    assert resp.status == 200, await resp.text()
    out = (await smtp_server.next()).message
    assert [(p.get_filename(), p.get_content_type(), p.get_content())
            for p in out.iter_attachments()] == [("invoice-42.pdf", "application/pdf", PDF)]
    body = out.get_body(("plain",))
    assert body is not None and body.get_content().strip() == text
