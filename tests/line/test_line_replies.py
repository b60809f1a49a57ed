"""Agent replies to LINE: played in the emulator, sent by the push API of the fake LINE."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from bridge_helpers import delivered
from line_helpers import GROUP, OTHER, USER, body_of, post, source, text
from livebridge_line.fake import FakeLine
from livebridge_line.source import retry_key

from livebridge import OutboundReply, Permanent, Retryable

Start = Any
PUSH = ("POST", "/v2/bot/message/push")


def reply(text: str = "hi", **context: Any) -> OutboundReply:
    return OutboundReply(source="line", thread_key=USER, livedesk_message_id=77,
                         conversation_id=5, text=text, reply_context={"to": USER, **context})


async def test_an_agent_reply_is_pushed_to_the_users_chat(start: Start, line: FakeLine) -> None:
    bridge = await start()
    await post(bridge, body_of(text("Where is my order?", "1", "01A1")))
    [question] = await delivered(bridge, 1)
    answer = await bridge.emulator.agent_reply(question["conversation_id"], "It ships today.")
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    [pushed] = line.pushed
    assert (pushed["to"], pushed["messages"]) == (
        USER, [{"type": "text", "text": "It ships today."}])
    assert pushed["retry_key"] == str(uuid.UUID(pushed["retry_key"]))
    assert pushed["retry_key"] == retry_key(OutboundReply(
        source="line", thread_key=USER, livedesk_message_id=answer["id"],
        conversation_id=question["conversation_id"], text=""), 0)


async def test_an_agent_reply_in_a_group_goes_to_the_group(start: Start,
                                                          line: FakeLine) -> None:
    bridge = await start()
    await post(bridge, body_of(text("hi", "1", "01B1", src=source(OTHER, group=GROUP))))
    [question] = await delivered(bridge, 1)
    await bridge.emulator.agent_reply(question["conversation_id"], "Hello, group")
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    assert line.pushed[0]["to"] == GROUP


async def test_a_push_that_failed_is_retried_and_sent_once(start: Start,
                                                          line: FakeLine) -> None:
    bridge = await start()
    await post(bridge, body_of(text("hi", "1", "01C1")))
    [question] = await delivered(bridge, 1)
    line.fail_push = 500
    await bridge.emulator.agent_reply(question["conversation_id"], "On it.")
    await bridge.wait_for(lambda: PUSH in line.calls)
    line.fail_push = None
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    await bridge.wait_idle()
    assert [p["messages"][0]["text"] for p in line.pushed] == ["On it."]


async def test_a_push_sent_before_is_not_sent_again(start: Start, line: FakeLine) -> None:
    bridge = await start()
    source = bridge.daemon.sources["line"]
    await source.send_reply(reply())
    await source.send_reply(reply())  # a retry after the answer was lost: LINE answers 409
    assert len(line.pushed) == 1
    assert line.calls.count(PUSH) == 2


async def test_a_long_reply_is_split_into_messages_and_pushes(start: Start,
                                                            line: FakeLine) -> None:
    bridge = await start()
    long = "".join(chr(ord("a") + i) * 5000 for i in range(6)) + "z"
    await bridge.daemon.sources["line"].send_reply(reply(long))
    first, second = line.pushed
    assert [m["text"][0] for m in first["messages"]] == list("abcde")
    assert [m["text"] for m in second["messages"]] == ["f" * 5000, "z"]
    assert "".join(m["text"] for p in line.pushed for m in p["messages"]) == long
    assert first["retry_key"] != second["retry_key"]


@pytest.mark.parametrize(("status", "raised", "retry_after"), [
    (429, Retryable, 7.0),
    (500, Retryable, None),
    (503, Retryable, None),
    (400, Permanent, None),
    (403, Permanent, None),
])
async def test_push_errors(start: Start, line: FakeLine, status: int,
                           raised: type[Exception], retry_after: float | None) -> None:
    bridge = await start()
    line.fail_push = status
    with pytest.raises(raised, match=f"HTTP {status}") as exc:
        await bridge.daemon.sources["line"].send_reply(reply())
    assert getattr(exc.value, "retry_after", None) == retry_after


async def test_a_refused_token_is_permanent(start: Start) -> None:
    bridge = await start(channel_access_token="revoked")
    with pytest.raises(Permanent, match="Authentication failed"):
        await bridge.daemon.sources["line"].send_reply(reply())


async def test_an_unreachable_line_is_retryable(start: Start) -> None:
    bridge = await start(api_url="http://127.0.0.1:9")
    with pytest.raises(Retryable, match="no answer"):
        await bridge.daemon.sources["line"].send_reply(reply())
