"""The slack source in events mode: signed Events API requests over HTTP to the running
daemon, a local fake Slack Web API, and what lands in the Livedesk emulator."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bridge_helpers import DropAll, delivered, dropped
from livebridge_slack.fake import FakeSlack
from slack_helpers import (
    BOT_USER,
    CHANNEL,
    DM,
    TEAM,
    URL_VERIFICATION,
    USER,
    body_of,
    bot_message,
    channel_join,
    envelope,
    file_share,
    message,
    message_changed,
    sign,
)

from livebridge import OutboundReply, Permanent, Retryable
from livebridge.testing import BridgeHarness

PATH = "/slack/events"
Start = Any


async def post(bridge: BridgeHarness, payload: dict[str, Any], *, path: str = PATH,
               **headers: str) -> tuple[int, dict[str, Any]]:
    """POST ``payload`` signed as Slack does; returns the status and the JSON answer."""
    body = body_of(payload)
    resp = await bridge.client.post(path, data=body, headers={**sign(body), **headers})
    return resp.status, await resp.json()


async def test_a_message_a_hook_drops_is_answered_and_counted_once(start: Start) -> None:
    bridge = await start(plugins=(DropAll(),))
    status, answer = await post(bridge, envelope(message("spam", "1355517523.000005"), "EvD"))
    assert (status, answer["result"], answer["reason"]) == (200, "dropped", None)
    assert dropped(bridge, "slack") == {"hook": 1.0}


async def test_url_verification_is_answered_after_the_signature_check(start: Start) -> None:
    bridge = await start()
    status, answer = await post(bridge, URL_VERIFICATION)
    assert (status, answer) == (200, {"challenge": URL_VERIFICATION["challenge"]})
    resp = await bridge.client.post(PATH, data=body_of(URL_VERIFICATION))
    assert resp.status == 401


async def test_the_path_is_configurable(start: Start) -> None:
    bridge = await start(path="/hooks/slack")
    status, answer = await post(bridge, URL_VERIFICATION, path="/hooks/slack")
    assert (status, answer) == (200, {"challenge": URL_VERIFICATION["challenge"]})
    body = body_of(URL_VERIFICATION)
    assert (await bridge.client.post(PATH, data=body, headers=sign(body))).status == 404


async def test_message_im_lands_with_the_slack_profile(start: Start, slack: FakeSlack) -> None:
    slack.add_user(USER, "spengler", email="egon@example.com", real_name="Egon Spengler")
    bridge = await start()
    status, answer = await post(bridge, envelope(message("Hello hello can you hear me?",
                                                         "1355517523.000005"), "Ev0PV52K21"))
    assert (status, answer) == (200, {"ok": True, "result": "accepted", "reason": None})
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "Hello hello can you hear me?"
    state = bridge.emulator.state
    [contact] = state.contacts.values()
    assert (contact["name"], contact["email"], contact["identifier"], contact["thumbnail"]) == (
        "Egon Spengler", "egon@example.com", f"slack:{TEAM}:{USER}",
        f"https://avatars.slack-edge.test/{USER}_192.png")
    [conversation] = state.conversations.values()
    assert conversation["custom_attributes"] == {
        "slack_team": TEAM, "slack_channel": DM, "slack_channel_type": "im",
        "livebridge_thread": f"slack|{TEAM}:{DM}:1355517523.000005"}


@pytest.mark.parametrize(("headers", "reason"), [
    ({"X-Slack-Request-Timestamp": str(int(time.time()) - 301)}, "stale timestamp"),
    ({"X-Slack-Signature": "v0=" + "0" * 64}, "bad signature"),
    ({"X-Slack-Request-Timestamp": "", "X-Slack-Signature": ""}, "unsigned"),
    ({"X-Slack-Request-Timestamp": "soon"}, "bad timestamp"),
])
async def test_unverified_requests_get_401_and_store_nothing(
        start: Start, headers: dict[str, str], reason: str) -> None:
    bridge = await start()
    forged = body_of(envelope(message("forged", "1355517523.000001"), "EvFORGED"))
    resp = await bridge.client.post(PATH, data=forged, headers={**sign(forged), **headers})
    assert (resp.status, (await resp.json())["error"]) == (401, reason)
    await post(bridge, envelope(message("real", "1355517523.000002"), "EvREAL"))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "real"
    assert not await bridge.daemon.store.seen("slack", "EvFORGED")


async def test_signed_with_another_secret_or_tampered_is_refused(start: Start) -> None:
    bridge = await start()
    body = body_of(envelope(message("hi", "1355517523.000001"), "EvOTHER"))
    resp = await bridge.client.post(PATH, data=body, headers=sign(body, secret="not-the-secret"))
    assert resp.status == 401
    tampered = body.replace(b"hi", b"yo")
    resp = await bridge.client.post(PATH, data=tampered, headers=sign(body))
    assert resp.status == 401
    assert not await bridge.daemon.store.seen("slack", "EvOTHER")


async def test_malformed_and_oversized_bodies(start: Start) -> None:
    bridge = await start(max_body_bytes=2048)
    resp = await bridge.client.post(PATH, data=b"{not json", headers=sign(b"{not json"))
    assert (resp.status, (await resp.json())["error"]) == (400, "malformed JSON")
    big = body_of(envelope(message("x" * 3000, "1355517523.000001"), "EvBIG"))
    resp = await bridge.client.post(PATH, data=big, headers=sign(big))
    assert resp.status == 413


async def test_retries_and_repeated_event_ids_deliver_once(start: Start) -> None:
    bridge = await start()
    payload = envelope(message("once", "1355517523.000005"), "Ev0PV52K21")
    assert (await post(bridge, payload))[1]["result"] == "accepted"
    status, answer = await post(bridge, payload, **{"X-Slack-Retry-Num": "1",
                                                   "X-Slack-Retry-Reason": "http_timeout"})
    assert (status, answer["result"]) == (200, "duplicate")
    await delivered(bridge, 1)
    assert (await post(bridge, payload, **{"X-Slack-Retry-Num": "2"}))[1]["result"] == "duplicate"
    await delivered(bridge, 1)


@pytest.mark.parametrize(("event", "reason"), [
    (bot_message("Build passed", "1355517600.000001"), "bot message"),
    (message("from an app", "1355517600.000002", bot_id="B0OTHER01",
             app_id="A0OTHER01"), "bot message"),
    (message_changed("1355517523.000005", "1355517600.000003"), "system message"),
    (channel_join("1355517600.000004"), "system message"),
    (message("deleted", "1355517600.000005", subtype="message_deleted", hidden=True),
     "system message"),
    (message("I am the bridge", "1355517600.000006", user=BOT_USER), "own bot user"),
    ({"type": "reaction_added", "user": USER, "reaction": "thumbsup",
      "item": {"type": "message", "channel": DM, "ts": "1355517523.000005"},
      "event_ts": "1355517600.000007"}, "not a message"),
])
async def test_bots_and_system_messages_are_dropped(
        start: Start, event: dict[str, Any], reason: str) -> None:
    bridge = await start()
    status, answer = await post(bridge, envelope(event, "EvNOISE"))
    assert (status, answer["result"], answer["reason"]) == (200, "dropped", reason)
    await post(bridge, envelope(message("signal", "1355517700.000001"), "EvSIGNAL"))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "signal"
    dropped = bridge.daemon.metrics.dropped.labels(source="slack", reason=reason)
    assert dropped._value.get() == 1


async def test_thread_reply_joins_the_parent_conversation(start: Start) -> None:
    bridge = await start()
    parent = message("My order is late", "1355517523.000005", channel=CHANNEL)
    await post(bridge, envelope(parent, "EvPARENT"))
    [first] = await delivered(bridge, 1)
    reply = message("Order #42", "1355517600.000001", channel=CHANNEL,
                    thread_ts="1355517523.000005")
    broadcast = message("Also: it is urgent", "1355517601.000001", channel=CHANNEL,
                        thread_ts="1355517523.000005", subtype="thread_broadcast")
    await post(bridge, envelope(reply, "EvREPLY"))
    await post(bridge, envelope(broadcast, "EvBROADCAST"))
    await post(bridge, envelope(message("Another topic", "1355517700.000001", channel=CHANNEL),
                                "EvOTHER"))
    _, second, third, fourth = await delivered(bridge, 4)
    assert second["conversation_id"] == third["conversation_id"] == first["conversation_id"]
    assert second["content_attributes"] == {"in_reply_to": first["id"]}
    assert third["content_attributes"] == {"in_reply_to": first["id"]}
    assert fourth["conversation_id"] != first["conversation_id"]
    assert fourth["content_attributes"] == {}


async def test_file_share_becomes_an_attachment_line(start: Start) -> None:
    bridge = await start()
    await post(bridge, envelope(file_share("Here is the invoice", "1355517523.000005"), "EvFILE"))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == (
        "Here is the invoice\n\n[attachment] invoice-42.pdf (application/pdf, 52345 bytes): "
        f"https://test.slack.com/files/{USER}/F0123ABCD/invoice-42.pdf")


async def test_users_info_failure_falls_back_to_the_user_id(start: Start,
                                                              slack: FakeSlack) -> None:
    slack.add_user(USER, "spengler", real_name="Egon Spengler")
    slack.fail_users_info = True
    bridge = await start()
    status, answer = await post(bridge, envelope(message("hi", "1355517523.000005"), "Ev1"))
    assert (status, answer["result"]) == (200, "accepted")
    await delivered(bridge, 1)
    [contact] = bridge.emulator.state.contacts.values()
    assert (contact["name"], contact["identifier"]) == (USER, f"slack:{TEAM}:{USER}")
    # Slack said "ratelimited": later messages do not ask again while it lasts.
    await post(bridge, envelope(message("again", "1355517524.000005"), "Ev2"))
    await delivered(bridge, 2)
    assert [m for m, _ in slack.calls].count("users.info") == 1
    fallbacks = bridge.daemon.metrics.registry.get_sample_value(
        "livebridge_slack_profile_fallbacks_total", {"source": "slack"})
    assert fallbacks == 2


async def test_profiles_are_cached(start: Start, slack: FakeSlack) -> None:
    slack.add_user(USER, "spengler")
    bridge = await start(conversation="channel")
    for i in range(3):
        await post(bridge, envelope(message(f"m{i}", f"135551752{i}.000005"), f"Ev{i}"))
    await delivered(bridge, 3)
    assert [m for m, _ in slack.calls].count("users.info") == 1


@pytest.mark.parametrize(("channels", "kept"), [
    ("all", {"im", "C1", "C2"}),
    ("dms", {"im"}),
    (["C1"], {"C1"}),
])
async def test_which_channels_are_bridged(start: Start, channels: Any, kept: set[str]) -> None:
    bridge = await start(channels=channels)
    events = {"im": message("im", "1355517523.000001"),
              "C1": message("C1", "1355517523.000002", channel="C1"),
              "C2": message("C2", "1355517523.000003", channel="C2")}
    for name, event in events.items():
        _, answer = await post(bridge, envelope(event, f"Ev{name}"))
        assert (answer["result"] == "accepted") == (name in kept), answer
        assert answer["reason"] in (None, "channel not bridged")
    found = await delivered(bridge, len(kept))
    assert {m["content"] for m in found} == kept


async def test_channel_and_sender_granularity(start: Start) -> None:
    bridge = await start(conversation="sender")
    await post(bridge, envelope(message("in a DM", "1355517523.000001"), "Ev1"))
    await post(bridge, envelope(message("in #help", "1355517523.000002", channel=CHANNEL), "Ev2"))
    first, second = await delivered(bridge, 2)
    assert first["conversation_id"] == second["conversation_id"]


async def test_bridge_busy_answers_503_and_slack_retry_gets_in(start: Start) -> None:
    bridge = await start(delivery={"max_outbox": 1, "retry_after_cap": 0.05})
    bridge.emulator.faults.outage_until = time.time() + 3600
    await post(bridge, envelope(message("first", "1355517523.000001"), "Ev1"))
    payload = envelope(message("second", "1355517523.000002"), "Ev2")
    body = body_of(payload)
    resp = await bridge.client.post(PATH, data=body, headers=sign(body))
    assert (resp.status, resp.headers["Retry-After"]) == (503, "30")
    bridge.emulator.faults.outage_until = 0
    await delivered(bridge, 1)
    status, answer = await post(bridge, payload, **{"X-Slack-Retry-Num": "1"})
    assert (status, answer["result"]) == (200, "accepted")
    assert [m["content"] for m in await delivered(bridge, 2)] == ["first", "second"]


async def test_agent_reply_goes_to_the_thread_and_its_echo_is_dropped(
        start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    parent_ts = "1355517523.000005"
    await post(bridge, envelope(message("Where is my order?", parent_ts, channel=CHANNEL),
                                "EvQ"))
    [question] = await delivered(bridge, 1)
    await bridge.emulator.agent_reply(question["conversation_id"], "It ships today.")
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    [posted] = slack.posted
    assert (posted["channel"], posted["thread_ts"], posted["text"]) == (
        CHANNEL, parent_ts, "It ships today.")

    # Slack sends the bridge's own post back as a message event: it must not come back in.
    echo = message("It ships today.", posted["ts"], channel=CHANNEL, user=BOT_USER,
                   thread_ts=parent_ts, bot_id=slack.bot_id, app_id="A0PNCHHK2")
    _, answer = await post(bridge, envelope(echo, "EvECHO"))
    assert (answer["result"], answer["reason"]) == ("dropped", "bot message")
    # Even without bot_id and with an unknown user (bot detection failed), its ts gives it away.
    disguised = {k: v for k, v in echo.items() if k != "bot_id"} | {"user": "UNKNOWN1"}
    _, answer = await post(bridge, envelope(disguised, "EvECHO2"))
    assert (answer["result"], answer["reason"]) == ("dropped", "own post")
    await delivered(bridge, 1)


async def test_replies_in_channel_granularity_go_top_level(start: Start,
                                                           slack: FakeSlack) -> None:
    bridge = await start(conversation="channel")
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await post(bridge, envelope(message("hi", "1355517523.000005"), "Ev1"))
    [msg] = await delivered(bridge, 1)
    await bridge.emulator.agent_reply(msg["conversation_id"], "hello")
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    assert "thread_ts" not in slack.posted[0]
    assert slack.posted[0]["channel"] == DM


@pytest.mark.parametrize(("error", "raised", "retry_after"), [
    ("ratelimited", Retryable, 7.0),
    ("internal_error", Retryable, None),
    ("channel_not_found", Permanent, None),
    ("not_in_channel", Permanent, None),
    ("invalid_auth", Permanent, None),
])
async def test_send_reply_failures(start: Start, slack: FakeSlack, error: str,
                                   raised: type[Exception], retry_after: float | None) -> None:
    bridge = await start()
    slack.fail_post_message = error
    reply = OutboundReply(source="slack", thread_key="t", livedesk_message_id=1,
                          conversation_id=1, text="hi",
                          reply_context={"channel": DM, "thread_ts": "1355517523.000005"})
    with pytest.raises(raised, match=error) as exc:
        await bridge.daemon.sources["slack"].send_reply(reply)
    assert getattr(exc.value, "retry_after", None) == retry_after
