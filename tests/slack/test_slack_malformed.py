"""Malformed requests to the Events API endpoint, over real HTTP: each is answered with a
4xx (never a 500) and stores nothing; the endpoint keeps working afterwards."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from bridge_helpers import delivered
from livebridge_slack.fake import FakeSlack
from slack_helpers import URL_VERIFICATION, body_of, envelope, file_share, message, sign

from livebridge.testing import BridgeHarness

PATH = "/slack/events"
Start = Any
TS = "1355517523.000001"


def event(**changes: Any) -> bytes:
    """A signed-able message envelope with ``changes`` applied to its event (None deletes)."""
    ev = message("hi", TS)
    for key, value in changes.items():
        if value is None:
            del ev[key]
        else:
            ev[key] = value
    return body_of(envelope(ev, "EvBAD"))


def with_payload(**changes: Any) -> bytes:
    """The envelope of a valid message with top-level ``changes``."""
    return body_of({**envelope(message("hi", TS), "EvBAD"), **changes})


def shared(**file_changes: Any) -> bytes:
    """A ``file_share`` message whose one file has ``file_changes``."""
    ev = file_share("see file", TS)
    ev["files"][0].update(file_changes)
    return body_of(envelope(ev, "EvBAD"))


def signed(body: bytes, **headers: str) -> dict[str, Any]:
    return {"data": body, "headers": {**sign(body), **headers}}


def raw_signed(body: bytes, raw_headers: bytes) -> dict[str, Any]:
    """Signed ``body`` plus header bytes no HTTP client would send (not UTF-8)."""
    return {"data": body, "raw": raw_headers}


OK = event()
NOW = str(int(time.time()))

CASES: dict[str, tuple[int, dict[str, Any]]] = {
    # not provably from Slack: 401
    "non-ASCII signature": (401, signed(OK, **{"X-Slack-Signature": "v0=\u00e9" * 10})),
    "signature not UTF-8": (401, raw_signed(OK, b"X-Slack-Signature: v0=\xff\xfe\r\n")),
    "non-ASCII timestamp digits": (401, signed(OK, **{
        "X-Slack-Request-Timestamp": "".join(chr(0x660 + int(d)) for d in NOW)})),
    "timestamp not UTF-8": (401, raw_signed(OK, b"X-Slack-Request-Timestamp: 1\xff\r\n")),
    "timestamp as a float": (401, signed(OK, **{"X-Slack-Request-Timestamp": NOW + ".0"})),
    "timestamp with a sign": (401, signed(OK, **{"X-Slack-Request-Timestamp": "+" + NOW})),
    "timestamp infinity": (401, signed(OK, **{"X-Slack-Request-Timestamp": "inf"})),
    "timestamp of 5000 digits": (401, signed(OK, **{"X-Slack-Request-Timestamp": "9" * 5000})),
    "huge header": (400, signed(OK, **{"X-Junk": "a" * 20_000})),
    # signed, but not JSON: 400
    "not UTF-8": (400, signed(b'{"type": "event_callback", "x": "\xff"}')),
    "JSON nested too deep": (400, signed(b"[" * 100_000 + b"]" * 100_000)),
    "JSON huge integer": (400, signed(b'{"type": ' + b"9" * 5000 + b"}")),
    # signed JSON of the wrong shape: 400
    "JSON array": (400, signed(b'[{"type": "event_callback"}]')),
    "JSON string": (400, signed(b'"event_callback"')),
    "JSON number": (400, signed(b"42")),
    "JSON null": (400, signed(b"null")),
    "challenge not text": (400, signed(body_of({**URL_VERIFICATION, "challenge": {"a": 1}}))),
    "type not text": (400, signed(with_payload(type=["event_callback"]))),
    "event a string": (400, signed(with_payload(event="message"))),
    "event a list": (400, signed(with_payload(event=[message("hi", TS)]))),
    "event_id a list": (400, signed(with_payload(event_id=["EvBAD"]))),
    "team_id a number": (400, signed(with_payload(team_id=42))),
    "authorizations a number": (400, signed(with_payload(authorizations=42))),
    "authorizations of strings": (400, signed(with_payload(authorizations=["UBOT"]))),
    "user a number": (400, signed(event(user=42))),
    "user an object": (400, signed(event(user={"id": "U1"}))),
    "channel a list": (400, signed(event(channel=["D1"]))),
    "ts a number": (400, signed(event(ts=1355517523.000001))),
    "thread_ts an object": (400, signed(event(thread_ts={"ts": TS}))),
    "text an object": (400, signed(event(text={"a": 1}))),
    "subtype a list": (400, signed(event(subtype=["file_share"]))),
    "channel_type a list": (400, signed(event(channel_type=["im"]))),
    "user_team a list": (400, signed(event(user_team=["T1"]))),
    "text with an unpaired surrogate": (400, signed(event(text="hi \ud800"))),
    "user with an unpaired surrogate": (400, signed(event(user="U\udfff"))),
    "files not a list": (400, signed(event(subtype="file_share", files={"id": "F1"}))),
    "files of strings": (400, signed(event(subtype="file_share", files=["F1"]))),
    "file permalink an object": (400, signed(shared(permalink={"url": "x"}))),
    "file name a number": (400, signed(shared(name=7, title=None))),
    "file size text": (400, signed(shared(size="52345"))),
    "file name with an unpaired surrogate": (400, signed(shared(name="a\ud800.pdf"))),
}


async def raw_post(bridge: BridgeHarness, body: bytes, raw_headers: bytes) -> int:
    """POST ``body`` signed, with ``raw_headers`` replacing the matching signed header."""
    server = bridge.client.server
    headers = sign(body)
    for line in raw_headers.split(b"\r\n"):
        if line:
            headers.pop(line.split(b":")[0].decode(), None)
    head = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(f"POST {PATH} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
                 f"Connection: close\r\nContent-Length: {len(body)}\r\n".encode()
                 + head + raw_headers + b"\r\n" + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    return int(answer.split()[1])


@pytest.mark.parametrize("case", CASES)
async def test_malformed_request_is_a_4xx_and_stores_nothing(start: Start, case: str) -> None:
    bridge = await start()
    status, kwargs = CASES[case]
    if "raw" in kwargs:
        got = await raw_post(bridge, kwargs["data"], kwargs["raw"])
    else:
        resp = await bridge.client.post(PATH, data=kwargs["data"], headers=kwargs["headers"])
        got = resp.status
        assert got == status, (case, await resp.text())
        if case != "huge header":  # that one aiohttp refuses before the source sees it
            assert "error" in await resp.json(), case
    assert got == status, case  # raw posts
    assert not await bridge.daemon.store.seen("slack", "EvBAD")
    # The endpoint still works, and only the good message got through.
    good = body_of(envelope(message("fine", "1355517523.000009"), "EvGOOD"))
    resp = await bridge.client.post(PATH, data=good, headers=sign(good))
    assert resp.status == 200
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "fine"


async def test_non_ascii_signature_is_401_not_500(start: Start) -> None:
    """Regression: ``hmac.compare_digest`` raised TypeError on a non-ASCII header."""
    bridge = await start()
    body = event()
    resp = await bridge.client.post(PATH, data=body, headers={
        **sign(body), "X-Slack-Signature": "v0=caf\u00e9"})
    assert (resp.status, (await resp.json())["error"]) == (401, "bad signature")
    assert not await bridge.daemon.store.seen("slack", "EvBAD")


@pytest.mark.parametrize("retry", ["\u00b2", "\u0661", "9" * 5000, "-1", ""])
async def test_a_strange_retry_header_is_ignored(start: Start, retry: str) -> None:
    """``X-Slack-Retry-Num`` is informational: a bad one neither crashes nor refuses."""
    bridge = await start()
    body = event()
    resp = await bridge.client.post(PATH, data=body, headers={
        **sign(body), "X-Slack-Retry-Num": retry})
    assert (resp.status, (await resp.json())["result"]) == (200, "accepted")
    await delivered(bridge, 1)


@pytest.mark.parametrize(("change", "reason"), [
    ({"user": None}, "incomplete event"),
    ({"channel": ""}, "incomplete event"),
    ({"type": "app_mention", "user": {"id": "object users are another event's business"}},
     "not a message"),
])
async def test_signed_events_that_are_not_bridged_are_acknowledged(
        start: Start, change: dict[str, Any], reason: str) -> None:
    """Shapes Slack may really send but the bridge does not take: 200 (so Slack does not
    retry them), dropped with a reason, nothing stored."""
    bridge = await start()
    body = event(**change)
    resp = await bridge.client.post(PATH, data=body, headers=sign(body))
    answer = await resp.json()
    assert (resp.status, answer["result"], answer["reason"]) == (200, "dropped", reason)
    assert not await bridge.daemon.store.seen("slack", "EvBAD")


async def test_socket_mode_acks_and_drops_a_malformed_event(start: Start, slack: FakeSlack
                                                             ) -> None:
    """The same checks guard Socket Mode: the envelope is acked (Slack would resend it
    forever otherwise) and nothing is stored."""
    bridge = await start(mode="socket", signing_secret="", app_token="xapp-test")
    await slack.wait_for_socket_client()
    for bad in (envelope({**message("hi", TS), "subtype": ["x"]}, "EvBAD"),
                {**envelope(message("hi", TS), "EvBAD"), "authorizations": 42}):
        assert await slack.send_events_api(bad, envelope_id="env-bad") == {
            "envelope_id": "env-bad"}
    await slack.send_events_api(envelope(message("fine", "1355517523.000009"), "EvGOOD"))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "fine"
    assert not await bridge.daemon.store.seen("slack", "EvBAD")
