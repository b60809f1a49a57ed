"""The slack source in socket mode (against FakeSlack's WebSocket server speaking the
envelope protocol), its settings, and what stops it from starting."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer
from bridge_helpers import delivered
from livebridge_slack.fake import FakeSlack
from slack_helpers import BOT_USER, CHANNEL, envelope, message

from livebridge import ConfigError, LivebridgeError
from livebridge._app import create_app
from livebridge._plugins import get_plugin_manager
from livebridge.testing import BridgeHarness, build_config

Start = Any


async def start_socket(start: Start, slack: FakeSlack, **settings: Any) -> BridgeHarness:
    bridge = await start(mode="socket", signing_secret="", app_token="xapp-test", **settings)
    await slack.wait_for_socket_client()
    return bridge


async def test_socket_mode_end_to_end_with_reconnect(start: Start, slack: FakeSlack) -> None:
    slack.add_user("U2147483697", "spengler", real_name="Egon Spengler")
    bridge = await start_socket(start, slack)
    assert (await bridge.client.post("/slack/events", data=b"{}")).status == 404

    first = envelope(message("Hello over the socket", "1355517523.000005"), "EvS1")
    assert await slack.send_events_api(first, envelope_id="env-1") == {"envelope_id": "env-1"}
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "Hello over the socket"
    assert [c["name"] for c in bridge.emulator.state.contacts.values()] == ["Egon Spengler"]

    # A redelivered envelope (Slack did not see the ack) is acked and not delivered twice.
    await slack.send_events_api(first, envelope_id="env-1", retry_attempt=1)
    # Noise is acked (so Slack stops resending it) and dropped.
    await slack.send_events_api(envelope(message("me", "1355517524.000001", user=BOT_USER), "Ev2"))
    await delivered(bridge, 1)

    await slack.drop_socket_clients()
    await slack.wait_for_socket_client()
    assert slack.socket_connections == 2
    await slack.send_events_api(envelope(message("after the reconnect", "1355517525.000001",
                                                 thread_ts="1355517523.000005"), "EvS3"))
    first_msg, second = await delivered(bridge, 2)
    assert second["conversation_id"] == first_msg["conversation_id"]
    assert second["content_attributes"] == {"in_reply_to": first_msg["id"]}


async def test_socket_mode_reply_and_echo(start: Start, slack: FakeSlack) -> None:
    bridge = await start_socket(start, slack)
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await slack.send_events_api(envelope(message("help", "1355517523.000005", channel=CHANNEL),
                                         "EvQ"))
    [question] = await delivered(bridge, 1)
    await bridge.emulator.agent_reply(question["conversation_id"], "On it.")
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    [posted] = slack.posted
    assert (posted["channel"], posted["thread_ts"]) == (CHANNEL, "1355517523.000005")
    echo = message("On it.", posted["ts"], channel=CHANNEL, user=BOT_USER,
                   thread_ts="1355517523.000005", bot_id=slack.bot_id)
    await slack.send_events_api(envelope(echo, "EvECHO"))
    await delivered(bridge, 1)


async def test_socket_mode_busy_bridge_does_not_ack(start: Start, slack: FakeSlack) -> None:
    bridge = await start_socket(start, slack, delivery={"max_outbox": 1, "retry_after_cap": 0.05})
    bridge.emulator.faults.outage_until = time.time() + 3600
    await slack.send_events_api(envelope(message("first", "1355517523.000001"), "Ev1"))
    second = envelope(message("second", "1355517523.000002"), "Ev2")
    with pytest.raises(TimeoutError):
        await slack.send_events_api(second, envelope_id="env-2", timeout=0.5)
    bridge.emulator.faults.outage_until = 0
    await delivered(bridge, 1)
    ack = await slack.send_events_api(second, envelope_id="env-2", retry_attempt=1)
    assert ack == {"envelope_id": "env-2"}
    assert [m["content"] for m in await delivered(bridge, 2)] == ["first", "second"]


async def test_refused_tokens_stop_the_start(tmp_path: Path, server: TestServer) -> None:
    api_url = str(server.make_url("/api/"))
    cases = [
        ({"bot_token": "xoxb-revoked"}, "Slack refused the bot token"),
        ({"mode": "socket", "app_token": "xapp-wrong"}, "cannot open Socket Mode"),
    ]
    for i, (settings, error) in enumerate(cases):
        source = {"type": "slack", "signing_secret": "s", "bot_token": "xoxb-test",
                  "api_url": api_url, **settings}
        config = build_config({"sources": [source]}, tmp_path / str(i))
        client = TestClient(TestServer(create_app(config, get_plugin_manager())))
        try:
            with pytest.raises(LivebridgeError, match=error):
                await client.start_server()
        finally:
            await client.close()


@pytest.mark.parametrize(("settings", "problem"), [
    ({}, "sources[0].signing_secret: required in events mode"),
    ({"signing_secret": ""}, "sources[0].signing_secret: required in events mode"),
    ({"signing_secret": "s", "bot_token": ""}, "sources[0].bot_token: must not be empty"),
    ({"mode": "socket"}, "sources[0].app_token: required in socket mode"),
    ({"signing_secret": "s", "channels": "some"}, "sources[0].channels"),
    ({"signing_secret": "s", "conversation": "team"}, "sources[0].conversation"),
])
def test_settings_errors_name_the_key(tmp_path: Path, settings: dict[str, Any],
                                      problem: str) -> None:
    source = {"type": "slack", "bot_token": "xoxb-test", **settings}
    with pytest.raises(ConfigError) as exc:
        build_config({"sources": [source]}, tmp_path)
    assert any(p.startswith(problem) for p in exc.value.problems), exc.value.problems


def test_settings_from_the_environment(tmp_path: Path) -> None:
    source = {"type": "slack", "signing_secret": "${SLACK_SIGNING_SECRET}",
              "bot_token": "${SLACK_BOT_TOKEN}", "api_url": "${SLACK_API_URL:-https://slack.com/api/}"}
    env = {"SLACK_SIGNING_SECRET": "secret", "SLACK_BOT_TOKEN": "xoxb-1",
           "SLACK_API_URL": "http://127.0.0.1:9/api"}
    config = build_config({"sources": [source]}, tmp_path, env=env)
    [settings] = config.sources
    assert settings.path == "/slack/events"
    assert settings.api_url == "http://127.0.0.1:9/api/"
    assert (settings.mode, settings.channels, settings.conversation) == ("events", "all", "thread")
    assert {"secret", "xoxb-1"} <= set(config.secrets())
    assert config.masked()["sources"][0]["signing_secret"] == "***"
    with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET is not set"):
        build_config({"sources": [source]}, tmp_path, env={"SLACK_BOT_TOKEN": "xoxb-1"})
