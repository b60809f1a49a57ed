"""The line source end to end: signed webhook requests over HTTP to the running daemon, the
fake LINE API for profiles and content, and what lands in the Livedesk emulator."""

from __future__ import annotations

from typing import Any

from bridge_helpers import DropAll, delivered, dropped
from line_helpers import (
    GROUP,
    OTHER,
    PATH,
    ROOM,
    USER,
    body_of,
    event,
    file,
    image,
    post,
    sign,
    source,
    text,
)
from livebridge_line.fake import FakeLine

Start = Any
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 40


async def test_a_text_reaches_the_users_conversation_with_the_profile(
        start: Start, line: FakeLine) -> None:
    line.add_profile(USER, "LINE taro", picture="https://profile.line-scdn.net/abcdefghijklmn")
    bridge = await start()
    status, answer = await post(bridge, body_of(text("Hello, world", "325708", "01FZ74A0TD")))
    assert (status, answer) == (200, {"ok": True, "results": [
        {"result": "accepted", "reason": None}]})
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "Hello, world"
    state = bridge.emulator.state
    [contact] = state.contacts.values()
    assert (contact["name"], contact["identifier"], contact["thumbnail"]) == (
        "LINE taro", f"line:{USER}", "https://profile.line-scdn.net/abcdefghijklmn")
    [conversation] = state.conversations.values()
    assert conversation["custom_attributes"] == {
        "line_chat_type": "user", "line_chat": USER, "livebridge_thread": f"line|{USER}"}


async def test_an_image_is_uploaded_with_its_bytes_into_the_same_conversation(
        start: Start, line: FakeLine) -> None:
    line.add_profile(USER, "LINE taro")
    line.add_content("354718705033693861", PNG, "image/png")
    bridge = await start()
    await post(bridge, body_of(text("Look:", "354718705033693860", "01FZ74A0TE")))
    await post(bridge, body_of(image("354718705033693861", "01FZ74A0TF")))
    first, second = await delivered(bridge, 2)
    assert second["conversation_id"] == first["conversation_id"]
    [attachment] = second["attachments"]
    assert (attachment["name"], attachment["content_type"], attachment["file_size"]) == (
        "image-354718705033693861.png", "image/png", len(PNG))
    assert bridge.emulator.state.attachments == [PNG]
    assert ("GET", "/v2/bot/message/354718705033693861/content") in line.calls


async def test_line_gets_its_200_before_the_content_is_fetched(start: Start,
                                                               line: FakeLine) -> None:
    """The file is fetched just before delivery, not inside LINE's request: with Livedesk
    down the event is stored and answered, and nothing is downloaded until it can go."""
    line.add_profile(USER, "LINE taro")
    line.add_content("7101", PNG, "image/png")
    bridge = await start()
    await bridge.client.post("/emulator/_emulator/faults", json={"outage_seconds": 3600})
    status, _ = await post(bridge, body_of(image("7101", "01FZ74A0TX")))
    assert status == 200
    await bridge.wait_for(lambda: any(c.status == 503 for c in bridge.emulator.state.calls))
    content = ("GET", "/v2/bot/message/7101/content")
    assert content not in line.calls
    await bridge.client.post("/emulator/_emulator/faults", json={"outage_seconds": 0})
    await delivered(bridge, 1)
    assert bridge.emulator.state.attachments == [PNG]
    assert line.calls.count(content) == 1


async def test_a_group_is_one_conversation_with_each_sender_named(
        start: Start, line: FakeLine) -> None:
    line.add_profile(USER, "LINE taro", chat=GROUP)
    line.add_profile(OTHER, "Hanako", chat=GROUP)
    bridge = await start()
    await post(bridge, body_of(text("Hi all", "1001", "01G1", src=source(USER, group=GROUP))))
    await post(bridge, body_of(text("Hello", "1002", "01G2", src=source(OTHER, group=GROUP)),
                               text("In private", "1003", "01G3")))
    by_content = {m["content"]: m for m in await delivered(bridge, 3)}
    taro, hanako = by_content["LINE taro: Hi all"], by_content["Hanako: Hello"]
    private = by_content["In private"]
    assert taro["conversation_id"] == hanako["conversation_id"] != private["conversation_id"]
    state = bridge.emulator.state
    group = state.conversations[taro["conversation_id"]]
    assert group["custom_attributes"]["line_chat"] == GROUP
    # One contact per LINE user, whichever chat they write from.
    assert sorted(c["identifier"] for c in state.contacts.values()) == sorted(
        [f"line:{USER}", f"line:{OTHER}"])
    assert ("GET", f"/v2/bot/group/{GROUP}/member/{OTHER}") in line.calls


async def test_a_room_member_is_looked_up_in_the_room(start: Start, line: FakeLine) -> None:
    line.add_profile(OTHER, "Jiro", chat=ROOM)
    bridge = await start()
    await post(bridge, body_of(text("yo", "2001", "01R1", src=source(OTHER, room=ROOM))))
    [msg] = await delivered(bridge, 1)
    assert msg["content"] == "Jiro: yo"
    assert ("GET", f"/v2/bot/room/{ROOM}/member/{OTHER}") in line.calls


async def test_a_forged_or_unsigned_request_stores_nothing(start: Start) -> None:
    bridge = await start()
    body = body_of(text("Hello, world", "325708", "01FZ74A0TD"))
    forged = sign(body, secret="not-the-channel-secret")
    assert (await post(bridge, body, headers=forged)) == (401, {"error": "bad signature"})
    assert (await post(bridge, body, headers={})) == (401, {"error": "unsigned"})
    tampered = body.replace(b"Hello", b"Hallo")
    assert (await post(bridge, tampered, headers=sign(body)))[0] == 401
    assert (await bridge.daemon.store.stats()).depth == 0
    assert (await post(bridge, body))[0] == 200  # the same body, signed with the secret
    await delivered(bridge, 1)


async def test_a_redelivery_stores_nothing_new(start: Start, line: FakeLine) -> None:
    line.add_content("7001", PNG, "image/png")
    bridge = await start()
    await post(bridge, body_of(image("7001", "01RED1")))
    await delivered(bridge, 1)
    status, answer = await post(bridge, body_of(image("7001", "01RED1", redelivery=True)))
    assert (status, answer["results"]) == (200, [{"result": "duplicate", "reason": None}])
    await delivered(bridge, 1)
    # The content is not fetched again for an event already stored.
    assert line.calls.count(("GET", "/v2/bot/message/7001/content")) == 1


async def test_the_profile_is_cached(start: Start, line: FakeLine) -> None:
    line.add_profile(USER, "LINE taro")
    bridge = await start()
    await post(bridge, body_of(text("one", "1", "01C1"), text("two", "2", "01C2")))
    await post(bridge, body_of(text("three", "3", "01C3")))
    await delivered(bridge, 3)
    assert line.calls.count(("GET", f"/v2/bot/profile/{USER}")) == 1


async def test_without_a_profile_the_user_id_stands_in(start: Start, line: FakeLine) -> None:
    bridge = await start()  # no profile: the user has not added the account as a friend
    await post(bridge, body_of(text("hi", "1", "01N1", src=source(USER, group=GROUP))))
    await post(bridge, body_of(text("again", "2", "01N2", src=source(USER, group=GROUP))))
    assert [m["content"] for m in await delivered(bridge, 2)] == [f"{USER}: hi",
                                                                  f"{USER}: again"]
    [contact] = bridge.emulator.state.contacts.values()
    assert contact["name"] == USER
    # LINE's 404 (no profile) is remembered like a profile.
    assert line.calls.count(("GET", f"/v2/bot/group/{GROUP}/member/{USER}")) == 1


async def test_sticker_and_location_as_readable_lines(start: Start) -> None:
    bridge = await start()
    sticker = event("message", "01S1", message={
        "id": "3001", "type": "sticker", "packageId": "446", "stickerId": "1988",
        "stickerResourceType": "STATIC", "keywords": ["Love You", "Love"],
        "quoteToken": "q"})
    plain = event("message", "01S2", message={
        "id": "3002", "type": "sticker", "packageId": "11537", "stickerId": "52002734",
        "stickerResourceType": "ANIMATION"})
    location = event("message", "01S3", message={
        "id": "3003", "type": "location", "title": "my location", "address": "Tokyo",
        "latitude": 35.65910807942215, "longitude": 139.70372892916203})
    await post(bridge, body_of(sticker, plain, location))
    assert [m["content"] for m in await delivered(bridge, 3)] == [
        "[sticker 446/1988: Love You, Love]",
        "[sticker 11537/52002734]",
        "[location] my location, Tokyo: https://www.google.com/maps/search/?api=1&query="
        "35.65910807942215%2C139.70372892916203",
    ]


async def test_a_file_over_the_cap_or_not_fetched_is_an_attachment_line(
        start: Start, line: FakeLine) -> None:
    line.add_content("4001", b"x" * 2048, "text/plain")
    bridge = await start(max_file_bytes=1024)
    await post(bridge, body_of(file("4001", "01F1", "notes.txt", 2048),
                               file("4002", "01F2", "gone.pdf", 52345)))
    over, missing = await delivered(bridge, 2)
    assert over["content"] == "[attachment] notes.txt (text/plain, 2048 bytes): " \
                              "(file not forwarded)"
    assert missing["content"] == "[attachment] gone.pdf (application/octet-stream, 52345 " \
                                 "bytes): (file not forwarded)"
    assert bridge.emulator.state.attachments == []


async def test_a_file_within_the_cap_keeps_its_name(start: Start, line: FakeLine) -> None:
    line.add_content("4003", b"%PDF-1.4 hello", "application/pdf")
    bridge = await start()
    await post(bridge, body_of(file("4003", "01F3", "invoice-42.pdf", 14)))
    [msg] = await delivered(bridge, 1)
    assert [a["name"] for a in msg["attachments"]] == ["invoice-42.pdf"]
    assert bridge.emulator.state.attachments == [b"%PDF-1.4 hello"]


async def test_follow_unfollow_and_other_events_are_counted_not_delivered(
        start: Start) -> None:
    bridge = await start()
    events = [event("follow", "01E1", follow={"isUnblocked": False}),
              event("unfollow", "01E2"),
              event("postback", "01E3", postback={"data": "action=buy&itemId=123"}),
              event("undefined", "01E4", undefinedField={"1": 1})]
    status, answer = await post(bridge, body_of(*events))
    assert (status, answer["results"]) == (200, [
        {"result": "dropped", "reason": "follow"}, {"result": "dropped", "reason": "unfollow"},
        {"result": "dropped", "reason": "not a message"},
        {"result": "dropped", "reason": "not a message"}])
    await post(bridge, body_of(text("hi", "1", "01E5")))
    await delivered(bridge, 1)
    metrics = await (await bridge.client.get("/metrics")).text()
    for kind in ("follow", "unfollow", "postback", "other", "message"):
        assert f'livebridge_line_events_total{{source="line",type="{kind}"}} 1.0' in metrics


async def test_the_verify_request_and_a_configurable_path(start: Start) -> None:
    bridge = await start(path="/hooks/line")
    body = b'{"destination":"Ub1f2d1e5f6e7a8b9c0d1e2f3a4b5c6d7","events":[]}'
    assert await post(bridge, body, path="/hooks/line") == (200, {"ok": True, "results": []})
    assert (await bridge.client.post(PATH, data=body, headers=sign(body))).status == 404


async def test_a_quoted_message_is_the_livedesk_reply_to_it(start: Start) -> None:
    bridge = await start()
    await post(bridge, body_of(text("My order is late", "468789577898262530", "01Q1")))
    quoting = text("Any news?", "468789577898262531", "01Q2")
    quoting["message"]["quotedMessageId"] = "468789577898262530"
    await post(bridge, body_of(quoting))
    first, second = await delivered(bridge, 2)
    assert second["content_attributes"] == {"in_reply_to": first["id"]}


async def test_a_failed_profile_lookup_is_not_remembered(start: Start, line: FakeLine) -> None:
    line.add_profile(USER, "LINE taro")
    line.fail_profile = 500
    bridge = await start()
    await post(bridge, body_of(text("one", "1", "01P1", src=source(USER, group=GROUP))))
    line.fail_profile = None
    line.add_profile(USER, "LINE taro", chat=GROUP)
    await post(bridge, body_of(text("two", "2", "01P2", src=source(USER, group=GROUP))))
    assert [m["content"] for m in await delivered(bridge, 2)] == [
        f"{USER}: one", "LINE taro: two"]


async def test_a_streamed_file_is_read_up_to_the_cap_only(start: Start, line: FakeLine) -> None:
    line.chunked_content = True
    line.add_content("5001", b"y" * 300_000, "video/mp4")
    line.add_content("5002", b"z" * 1000, "audio/m4a")
    bridge = await start(max_file_bytes=100_000)
    video = event("message", "01V1", message={"id": "5001", "type": "video", "duration": 60000,
                                              "contentProvider": {"type": "line"}})
    audio = event("message", "01V2", message={"id": "5002", "type": "audio", "duration": 1000,
                                              "contentProvider": {"type": "line"}})
    await post(bridge, body_of(video, audio))
    over, within = await delivered(bridge, 2)
    assert over["content"] == "[attachment] video-5001.mp4 (video/mp4): (file not forwarded)"
    assert [a["name"] for a in within["attachments"]] == ["audio-5002.m4a"]
    assert bridge.emulator.state.attachments == [b"z" * 1000]


async def test_a_message_a_hook_drops_is_answered_and_counted_once(start: Start) -> None:
    bridge = await start(plugins=(DropAll(),))
    status, answer = await post(bridge, body_of(text("spam", "1", "01D1")))
    assert (status, answer["results"]) == (200, [{"result": "dropped", "reason": None}])
    assert dropped(bridge, "line") == {"hook": 1.0}
