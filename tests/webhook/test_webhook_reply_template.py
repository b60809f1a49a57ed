"""The reply template: placeholders, literal braces, JSON types and URL encoding."""

from __future__ import annotations

from livebridge_webhook.reply import render
from livebridge_webhook.settings import ReplySettings

from livebridge import OutboundReply


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
