"""The reply template: placeholders, literal braces, JSON types and URL encoding."""

from __future__ import annotations

from livebridge_webhook.reply import render
from livebridge_webhook.settings import ReplySettings

from livebridge import Attachment, OutboundReply


def test_the_template_is_filled() -> None:
    settings = ReplySettings(
        url="https://chat.example/rooms/{thread}/post?as={agent_name}",
        body={"text": "{text}", "id": "{conversation_id}", "tag": "#{conversation_id}",
              "team": "{team}", "none": "{missing}", "raw": "{{text}} {{", "n": [1, True]})
    reply = OutboundReply(source="s", thread_key="r/1 ?x", livedesk_message_id=9,
                          conversation_id=42, text='say "hi" {text}', agent_name="Ann Lee",
                          reply_context={"team": {"id": 7}})
    url, body = render(settings, reply)
    assert url == "https://chat.example/rooms/r%2F1%20%3Fx/post?as=Ann%20Lee"
    assert body == {"text": 'say "hi" {text}', "id": 42, "tag": "#42", "team": {"id": 7},
                    "none": None, "raw": "{text} {", "n": [1, True]}


def test_the_agents_files_are_listed_in_the_text() -> None:
    """A JSON webhook takes no file: each is a line (name, type, size, link), never dropped,
    and a file-only reply still says something."""
    settings = ReplySettings(url="https://chat.example/post", body={"text": "{text}"})
    pdf = Attachment(name="invoice.pdf", content_type="application/pdf", size=48,
                     url="https://desk.example/files/1/invoice.pdf")
    reply = OutboundReply(source="s", thread_key="t", livedesk_message_id=9,
                          conversation_id=42, text="Here it is.", attachments=[pdf])
    assert render(settings, reply)[1] == {"text": f"Here it is.\n\n{pdf.line()}"}
    only = reply.model_copy(update={"text": ""})
    assert render(settings, only)[1] == {"text": pdf.line()}
