"""Slack formatting both ways: mrkdwn in as readable text with names (users.info and
conversations.info on the fake Slack, cached), agents' Markdown out as mrkdwn."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestServer
from bridge_helpers import delivered
from livebridge_slack.fake import FakeSlack
from livebridge_slack.mrkdwn import markdown_to_mrkdwn, mrkdwn_refs, mrkdwn_to_text
from livebridge_slack.users import MAX_NAME_LOOKUPS, UserDirectory
from slack_helpers import CHANNEL, body_of, envelope, message, sign
from slack_sdk.web.async_client import AsyncWebClient

from livebridge.testing import BridgeHarness

Start = Any

OUT = [
    ("bold", "**Next step:** pay", "*Next step:* pay"),
    ("italic", "*soon* or _later_", "_soon_ or _later_"),
    ("strike", "~~old~~ new", "~old~ new"),
    ("bold italic", "***both***", "_*both*_"),
    ("link", "[invoice](https://x.test/i?a=1&b=2)", "<https://x.test/i?a=1&b=2|invoice>"),
    ("link text escaped", "[a <b> & c](https://x.test/)", "<https://x.test/|a &lt;b&gt; &amp; c>"),
    ("link url cannot break out", "[x](https://x.test/a|b>c)", "<https://x.test/a%7Cb%3Ec|x>"),
    ("autolink", "<https://x.test/a>", "<https://x.test/a>"),
    ("mail", "<a@b.test> and [us](mailto:a@b.test)", "<mailto:a@b.test> and <mailto:a@b.test|us>"),
    ("unsafe link stays text", "[x](javascript:alert(1))", "[x](javascript:alert(1))"),
    ("escaping", "a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
    ("raw html is text", "<b>hi</b>", "&lt;b&gt;hi&lt;/b&gt;"),
    ("no mention from text", "<!here> <@U123>", "&lt;!here&gt; &lt;@U123&gt;"),
    ("inline code", "run `a*b <c>`", "run `a*b &lt;c&gt;`"),
    ("code block", "```python\nif a < b:\n    **x**\n```", "```\nif a &lt; b:\n    **x**\n```"),
    ("bullets", "- one\n- two\n  * deep", "• one\n• two\n  • deep"),
    ("numbered", "1. a\n2. b", "1. a\n2. b"),
    ("heading", "## Steps\ndo it", "*Steps*\n\ndo it"),
    ("quote", "> said *this*", "> said _this_"),
    ("line breaks", "one\ntwo", "one\ntwo"),
    ("unclosed", "**unclosed", "**unclosed"),
    ("nested too deep is literal", "> " * 30 + "a<b", "&gt; " * 30 + "a&lt;b"),
    ("empty", "", ""),
]


@pytest.mark.parametrize(("md", "mrkdwn"), [(md, out) for _, md, out in OUT],
                         ids=[name for name, _, _ in OUT])
def test_markdown_to_mrkdwn(md: str, mrkdwn: str) -> None:
    assert markdown_to_mrkdwn(md) == mrkdwn


NAMES = {"W222": "Ada Lovelace", "C0RANDOM": "random"}
IN = [
    ("plain", "Hello, world", "Hello, world", set()),
    ("entities", "&lt;b&gt; &amp;amp; &quot;", "<b> &amp; &quot;", set()),
    ("user", "hi <@W222>", "hi @Ada Lovelace", {"W222"}),
    ("user with legacy label", "<@W222|ada>", "@Ada Lovelace", {"W222"}),
    ("unknown user keeps its id", "<@U0GONE>", "@U0GONE", {"U0GONE"}),
    ("unknown user with label", "<@U0GONE|gone>", "@gone", {"U0GONE"}),
    ("channel label", "<#C024BE7LR|general>", "#general", set()),
    ("channel looked up", "<#C0RANDOM> <#C0RANDOM|>", "#random #random", {"C0RANDOM"}),
    ("unknown channel", "<#C0GONE>", "#C0GONE", {"C0GONE"}),
    ("user group", "<!subteam^S0614TZR7|@support>", "@support", set()),
    ("user group without label", "<!subteam^S0614TZR7>", "@S0614TZR7", set()),
    ("special mentions", "<!here> <!channel> <!everyone|everyone>", "@here @channel @everyone",
     set()),
    ("date", "<!date^1392734382^Posted {date_short}^https://x.test|Feb 18, 2014>",
     "Feb 18, 2014", set()),
    ("link with text", "<https://example.com/docs?a=1&amp;b=2|the &lt;docs&gt;>",
     "the <docs> (https://example.com/docs?a=1&b=2)", set()),
    ("bare link", "<https://example.com/docs>", "https://example.com/docs", set()),
    ("link labelled with itself", "<https://x.test|https://x.test>", "https://x.test", set()),
    ("mailto", "<mailto:a@b.test|a@b.test>", "a@b.test", set()),
    ("mailto with text", "<mailto:a@b.test|Mail>", "Mail (a@b.test)", set()),
    ("formatting stays", "*bold* _it_ ~s~ `code`", "*bold* _it_ ~s~ `code`", set()),
    ("odd: stray brackets", "<<@W222> >> <> <|x> <!>", "<@Ada Lovelace >> <> <|x> <!>",
     {"W222"}),
    ("odd: unclosed", "<@W222 and <https://x.test", "<@W222 and <https://x.test", set()),
    ("odd: not an id", "<@w222> <@U1 2> <@>", "@w222 @U1 2 @", set()),
    ("odd: many", "<" * 500 + "@W222>", "<" * 499 + "@Ada Lovelace", {"W222"}),
]


@pytest.mark.parametrize(("mrkdwn", "text", "refs"), [case[1:] for case in IN],
                         ids=[case[0] for case in IN])
def test_mrkdwn_to_text(mrkdwn: str, text: str, refs: set[str]) -> None:
    assert mrkdwn_refs(mrkdwn) == refs
    assert mrkdwn_to_text(mrkdwn, NAMES) == text


async def test_names_are_looked_up_once_and_failures_left_out(server: TestServer,
                                                              slack: FakeSlack) -> None:
    slack.add_user("W222", "ada", real_name="Ada Lovelace")
    slack.add_channel("C0RANDOM", "random")
    fallbacks: list[tuple[str, str]] = []
    users = UserDirectory(AsyncWebClient(token="xoxb-test", base_url=str(server.make_url("/api/"))),
                          ttl=60.0, size=10, timeout=1.0,
                          on_fallback=lambda user, why: fallbacks.append((user, why)))
    wanted = {"W222", "C0RANDOM", "U0GONE", "C0GONE"}
    assert await users.names("T1", wanted) == NAMES
    assert await users.names("T1", {"W222", "C0RANDOM"}) == NAMES  # cached
    assert sorted(m for m, _ in slack.calls) == ["conversations.info"] * 2 + ["users.info"] * 2
    assert fallbacks == []  # the sender fallback is not for mentions
    many = {f"U{i:04d}" for i in range(MAX_NAME_LOOKUPS + 5)}
    await users.names("T1", many)
    assert len(slack.calls) == 4 + MAX_NAME_LOOKUPS
    slack.fail_users_info = True  # rate limited: left out, and lookups pause
    assert await users.names("T1", {"W333", "W444"}) == {}
    assert await users.names("T1", {"W555", "C0RANDOM"}) == {"C0RANDOM": "random"}
    assert len(slack.calls) == 4 + MAX_NAME_LOOKUPS + 2


async def post(bridge: BridgeHarness, payload: dict[str, Any]) -> None:
    body = body_of(payload)
    resp = await bridge.client.post("/slack/events", data=body, headers=sign(body))
    assert resp.status == 200


async def test_mentions_and_links_reach_the_agent_readable(start: Start,
                                                           slack: FakeSlack) -> None:
    slack.add_user("W222", "ada", real_name="Ada Lovelace")
    slack.add_channel("C0RANDOM", "random")
    bridge = await start()
    text = ("Hi <@W222>, see <https://example.com/docs?a=1&amp;b=2|the docs> in "
            "<#C024BE7LR|general> &amp; <#C0RANDOM>, <!here>: 1 &lt; 2")
    await post(bridge, envelope(message(text, "1355517523.000005", channel=CHANNEL), "Ev1"))
    await post(bridge, envelope(message("ping <@W222> <@U0GONE>", "1355517524.000005",
                                        channel=CHANNEL), "Ev2"))
    first, second = sorted(m["content"] for m in await delivered(bridge, 2))
    assert first == ("Hi @Ada Lovelace, see the docs (https://example.com/docs?a=1&b=2)"
                                " in #general & #random, @here: 1 < 2")
    # A name that cannot be had keeps the id; the one already known comes from the cache.
    assert second == "ping @Ada Lovelace @U0GONE"
    assert [p["user"] for m, p in slack.calls if m == "users.info"].count("W222") == 1


async def test_agent_markdown_reaches_slack_as_mrkdwn(start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await post(bridge, envelope(message("Where is my order?", "1355517523.000005",
                                        channel=CHANNEL), "EvQ"))
    [question] = await delivered(bridge, 1)
    reply = "**Next step:** pay the [invoice](https://x.test/i?a=1&b=2) & <reply>\n\n- today"
    await bridge.emulator.agent_reply(question["conversation_id"], reply)
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    assert slack.posted[0]["text"] == (
        "*Next step:* pay the <https://x.test/i?a=1&b=2|invoice> &amp; &lt;reply&gt;\n\n• today")
