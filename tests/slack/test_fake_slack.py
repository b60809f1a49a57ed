"""FakeSlack against the real slack_sdk clients, over real HTTP and WebSocket."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from livebridge_slack.fake import FakeSlack
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.async_client import AsyncBaseSocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

BOT_TOKEN = "xoxb-test"

MESSAGE_EVENT = {
    "token": "x",
    "team_id": "T123ABC456",
    "api_app_id": "A0PNCHHK2",
    "event": {
        "type": "message",
        "channel": "D024BE91L",
        "user": "U2147483697",
        "text": "Hello hello can you hear me?",
        "ts": "1355517523.000005",
        "event_ts": "1355517523.000005",
        "channel_type": "im",
    },
    "type": "event_callback",
    "event_id": "Ev0PV52K21",
    "event_time": 1355517523,
}


def web_client(server: TestServer, token: str | None = BOT_TOKEN) -> AsyncWebClient:
    return AsyncWebClient(token=token, base_url=str(server.make_url("/api/")))


@pytest.fixture
async def socket_client(
    server: TestServer,
) -> AsyncIterator[tuple[SocketModeClient, asyncio.Queue[SocketModeRequest], list[dict[str, Any]]]]:
    """A connected SocketModeClient that acks every request; yields (client, requests, hellos)."""
    requests: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    hellos: list[dict[str, Any]] = []
    client = SocketModeClient(app_token="xapp-test", web_client=web_client(server, token=None))

    async def on_message(
        _: AsyncBaseSocketModeClient, message: dict[str, Any], raw: str | None
    ) -> None:
        if message.get("type") == "hello":
            hellos.append(message)

    async def on_request(c: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))
        requests.put_nowait(req)

    client.message_listeners.append(on_message)
    client.socket_mode_request_listeners.append(on_request)
    await client.connect()
    try:
        yield client, requests, hellos
    finally:
        await client.close()


async def test_auth_test(server: TestServer) -> None:
    resp = await web_client(server).auth_test()
    assert resp.data == {
        "ok": True,
        "url": "https://test.slack.com/",
        "team": "Test",
        "user": "livebridge",
        "team_id": "T123ABC456",
        "user_id": "UBOT0001",
        "bot_id": "BBOT0001",
        "is_enterprise_install": False,
    }


@pytest.mark.parametrize(
    ("token", "error"),
    [("xoxb-wrong", "invalid_auth"), ("xapp-test", "not_allowed_token_type"), (None, "not_authed")],
)
async def test_web_api_rejects_bad_tokens(
    server: TestServer, token: str | None, error: str
) -> None:
    with pytest.raises(SlackApiError) as exc:
        await web_client(server, token).auth_test()
    assert exc.value.response["error"] == error


async def test_token_as_form_param_and_unknown_method(server: TestServer, slack: FakeSlack) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(server.make_url("/api/auth.test"), data={"token": "xoxb-test"}) as r:
            assert (await r.json())["user_id"] == "UBOT0001"
        async with http.get(server.make_url("/api/users.list"), params={"token": "xoxb-test"}) as r:
            assert await r.json() == {"ok": False, "error": "unknown_method"}
    assert slack.calls == [("auth.test", {}), ("users.list", {})]


async def test_users_info(server: TestServer, slack: FakeSlack) -> None:
    slack.add_user("U2147483697", "spengler", email="egon@example.com", real_name="Egon Spengler")
    client = web_client(server)
    user = (await client.users_info(user="U2147483697"))["user"]
    assert user == {
        "id": "U2147483697",
        "team_id": "T123ABC456",
        "name": "spengler",
        "real_name": "Egon Spengler",
        "deleted": False,
        "is_bot": False,
        "profile": {
            "display_name": "",
            "real_name": "Egon Spengler",
            "email": "egon@example.com",
            "image_192": "https://avatars.slack-edge.test/U2147483697_192.png",
        },
    }
    with pytest.raises(SlackApiError) as exc:
        await client.users_info(user="UNOBODY")
    assert exc.value.response["error"] == "user_not_found"
    assert slack.calls[-1] == ("users.info", {"user": "UNOBODY"})


async def test_users_info_rate_limited(server: TestServer, slack: FakeSlack) -> None:
    slack.add_user("U1", "ada")
    slack.fail_users_info = True
    with pytest.raises(SlackApiError) as exc:
        await web_client(server).users_info(user="U1")
    assert exc.value.response.status_code == 429
    assert exc.value.response.headers["Retry-After"] == "1"
    assert exc.value.response["error"] == "ratelimited"
    slack.fail_users_info = False
    assert (await web_client(server).users_info(user="U1"))["user"]["name"] == "ada"


async def test_chat_post_message(server: TestServer, slack: FakeSlack) -> None:
    client = web_client(server)
    first = await client.chat_postMessage(channel="D024BE91L", text="hi")
    reply = await client.chat_postMessage(channel="D024BE91L", text="re", thread_ts=first["ts"])
    assert first["channel"] == "D024BE91L"
    assert first["message"] == {
        "type": "message",
        "text": "hi",
        "user": "UBOT0001",
        "bot_id": "BBOT0001",
        "ts": first["ts"],
    }
    assert reply["message"]["thread_ts"] == first["ts"]
    seconds, micro = reply["ts"].split(".")
    assert seconds.isdigit() and len(micro) == 6 and micro.isdigit()
    assert float(first["ts"]) < float(reply["ts"])
    assert slack.posted == [
        {"channel": "D024BE91L", "text": "hi", "ts": first["ts"]},
        {"channel": "D024BE91L", "text": "re", "thread_ts": first["ts"], "ts": reply["ts"]},
    ]
    assert [method for method, _ in slack.calls] == ["chat.postMessage"] * 2
    with pytest.raises(SlackApiError) as exc, pytest.warns(UserWarning, match="`text`"):
        await client.chat_postMessage(channel="D024BE91L", text="")
    assert exc.value.response["error"] == "no_text"


async def test_post_message_timestamps_unique_under_load(server: TestServer) -> None:
    client = web_client(server)
    replies = await asyncio.gather(
        *(client.chat_postMessage(channel="C1", text=str(i)) for i in range(20))
    )
    assert len({r["ts"] for r in replies}) == 20


async def test_apps_connections_open(server: TestServer) -> None:
    resp = await web_client(server, None).apps_connections_open(app_token="xapp-test")
    assert resp["url"] == f"ws://{server.host}:{server.port}/socket-mode"
    with pytest.raises(SlackApiError) as exc:
        await web_client(server, None).apps_connections_open(app_token="xoxb-test")
    assert exc.value.response["error"] == "not_allowed_token_type"


async def test_socket_mode_receive_ack_and_reconnect(
    slack: FakeSlack,
    socket_client: tuple[SocketModeClient, asyncio.Queue[SocketModeRequest], list[dict[str, Any]]],
) -> None:
    _, requests, hellos = socket_client
    await slack.wait_for_socket_client()
    assert slack.socket_connections == 1
    assert [m for m, _ in slack.calls] == ["apps.connections.open"]

    ack = await slack.send_events_api(MESSAGE_EVENT, envelope_id="env-1")
    assert ack == {"envelope_id": "env-1"}
    req = await asyncio.wait_for(requests.get(), 5)
    assert (req.type, req.envelope_id, req.payload, req.retry_attempt) == (
        "events_api",
        "env-1",
        MESSAGE_EVENT,
        0,
    )
    assert req.retry_reason == ""
    assert req.accepts_response_payload is False

    await slack.drop_socket_clients()
    await slack.wait_for_socket_client()
    assert slack.socket_connections == 2
    assert [m for m, _ in slack.calls] == ["apps.connections.open"] * 2

    ack = await slack.send_events_api(MESSAGE_EVENT)
    req = await asyncio.wait_for(requests.get(), 5)
    assert req.envelope_id == ack["envelope_id"]
    assert [h["connection_info"] for h in hellos] == [{"app_id": "A0PNCHHK2"}] * 2
    assert hellos[0]["num_connections"] == 1


async def test_unacked_envelope_times_out_then_retry(server: TestServer, slack: FakeSlack) -> None:
    seen: asyncio.Queue[SocketModeRequest] = asyncio.Queue()
    client = SocketModeClient(app_token="xapp-test", web_client=web_client(server, None))

    async def ack_only_retries(c: AsyncBaseSocketModeClient, req: SocketModeRequest) -> None:
        seen.put_nowait(req)
        if req.retry_attempt:
            await c.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))

    client.socket_mode_request_listeners.append(ack_only_retries)
    await client.connect()
    try:
        with pytest.raises(TimeoutError):
            await slack.send_events_api(MESSAGE_EVENT, envelope_id="env-9", timeout=0.3)
        ack = await slack.send_events_api(MESSAGE_EVENT, envelope_id="env-9", retry_attempt=1)
        assert ack == {"envelope_id": "env-9"}
        first, retry = seen.get_nowait(), seen.get_nowait()
        assert (first.retry_attempt, retry.retry_attempt, retry.retry_reason) == (0, 1, "timeout")
    finally:
        await client.close()


async def test_send_without_client_times_out(slack: FakeSlack, server: TestServer) -> None:
    with pytest.raises(TimeoutError):
        await slack.wait_for_socket_client(timeout=0.05)
    with pytest.raises(TimeoutError):
        await slack.send_events_api(MESSAGE_EVENT, timeout=0.05)


async def test_stats_give_arrival_times(server: TestServer) -> None:
    client = web_client(server)
    before = time.time()
    for text in ("one", "two", "three"):
        await client.chat_postMessage(channel="C1", text=text)
    async with aiohttp.ClientSession() as session:
        async with session.get(server.make_url("/_fake/stats?since=1")) as resp:
            stats = await resp.json()
        async with session.get(server.make_url("/_fake/stats?since=x")) as resp:
            assert resp.status == 400
    assert stats["posted"] == 3
    assert [text for _, text in stats["arrivals"]] == ["two", "three"]
    times = [at for at, _ in stats["arrivals"]]
    assert before <= times[0] <= times[1] <= time.time()
