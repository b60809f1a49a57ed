"""Malformed requests to the LINE webhook, over real HTTP: each is answered with a 4xx
(never a 500), stores nothing, and the endpoint keeps working afterwards."""

from __future__ import annotations

import json
from typing import Any

import pytest
from bridge_helpers import delivered
from line_helpers import PATH, body_of, event, image, post, text

Start = Any


def changed(make: Any, path: tuple[str | int, ...], value: Any) -> bytes:
    """A text event's body with the field at ``path`` set to ``value``."""
    ev = make()
    target = ev
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body_of(ev)


def hello() -> dict[str, Any]:
    return text("hi", "1", "01M1")


def picture() -> dict[str, Any]:
    return image("2", "01M2")


@pytest.mark.parametrize(("body", "field"), [
    (b'{"destination":"U1"}', "events"),
    (b'{"events":{"0":{}}}', "events"),
    (b'{"events":[[]]}', "events[0]"),
    (changed(hello, ("type",), 1), "events[0].type"),
    (changed(hello, ("webhookEventId",), 42), "events[0].webhookEventId"),
    (changed(hello, ("deliveryContext",), True), "events[0].deliveryContext"),
    (changed(hello, ("deliveryContext", "isRedelivery"), "yes"), "events[0].deliveryContext"),
    (changed(hello, ("source",), "U1"), "events[0].source"),
    (changed(hello, ("source", "userId"), ["U1"]), "events[0].source.userId"),
    (changed(hello, ("message",), "hi"), "events[0].message"),
    (changed(hello, ("message", "text"), {"t": 1}), "events[0].message.text"),
    (changed(hello, ("message", "id"), 1), "events[0].message.id"),
    (changed(hello, ("message", "keywords"), [1]), "events[0].message.keywords"),
    (changed(hello, ("message", "latitude"), "35.6"), "events[0].message.latitude"),
    (changed(hello, ("message", "fileSize"), -1), "events[0].message.fileSize"),
    (changed(picture, ("message", "contentProvider"), "line"),
     "events[0].message.contentProvider"),
    (changed(picture, ("message", "contentProvider", "originalContentUrl"), 3),
     "events[0].message.contentProvider.originalContentUrl"),
])
async def test_a_field_of_the_wrong_type_is_400_naming_it(start: Start, body: bytes,
                                                          field: str) -> None:
    bridge = await start()
    assert await post(bridge, body) == (400, {"error": "malformed event", "field": field})
    assert (await bridge.daemon.store.stats()).depth == 0


@pytest.mark.parametrize("body", [
    b"{not json", b"[]", b'"events"', b"[" * 100_000,
    b'{"events":[{"type":"message","webhookEventId":"\\ud800"}]}',
    json.dumps({"events": []}).encode("utf-16"),
])
async def test_a_body_that_is_not_a_json_object_is_400(start: Start, body: bytes) -> None:
    bridge = await start()
    assert await post(bridge, body) == (400, {"error": "malformed JSON"})


async def test_an_oversized_body_is_413_before_the_signature(start: Start) -> None:
    bridge = await start(max_body_bytes=1000)
    body = body_of(text("x" * 2000, "1", "01O1"))
    status, answer = await post(bridge, body)
    assert (status, answer["error"]) == (413, "body too large (at most 1000 bytes)")


async def test_a_signature_that_is_not_ascii_is_401(start: Start) -> None:
    bridge = await start()
    body = body_of(text("hi", "1", "01S1"))
    resp = await bridge.client.post(PATH, data=body, headers={
        "X-Line-Signature": "sïgnature".encode().decode("latin-1")})
    assert resp.status == 401


async def test_events_without_ids_are_dropped_not_retried(start: Start) -> None:
    bridge = await start()
    no_id = {k: v for k, v in text("hi", "1", "01X1").items() if k != "webhookEventId"}
    no_user = event("message", "01X2", src={"type": "group", "groupId": ""},
                    message={"id": "3", "type": "text", "text": "hi"})
    status, answer = await post(bridge, body_of(no_id, no_user))
    assert (status, answer["results"]) == (200, [
        {"result": "dropped", "reason": "incomplete event"}] * 2)
    await post(bridge, body_of(text("after", "4", "01X3")))
    assert [m["content"] for m in await delivered(bridge, 1)] == ["after"]


async def test_a_message_without_a_user_id_in_a_group_is_the_groups(start: Start) -> None:
    bridge = await start()
    anonymous = event("message", "01Y1", src={"type": "group", "groupId": "Cabc"},
                      message={"id": "5", "type": "text", "text": "hi"})
    await post(bridge, body_of(anonymous))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "Cabc: hi"
    assert [c["identifier"] for c in bridge.emulator.state.contacts.values()] == ["line:Cabc"]
