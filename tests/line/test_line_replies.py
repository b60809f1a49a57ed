"""Agent replies to LINE: played in the emulator, sent by the push API of the fake LINE."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
from bridge_helpers import delivered
from line_helpers import GROUP, OTHER, USER, body_of, post, source, text
from livebridge_line.fake import FakeLine
from livebridge_line.source import retry_key

from livebridge import Attachment, OutboundReply, Permanent, Throttled, Unavailable

Start = Any
PUSH = ("POST", "/v2/bot/message/push")


def reply(text: str = "hi", *, attachments: list[Attachment] | None = None) -> OutboundReply:
    return OutboundReply(source="line", thread_key=USER, livedesk_message_id=77,
                         conversation_id=5, text=text, attachments=attachments or [],
                         reply_context={"to": USER})


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


async def test_the_agents_markdown_reaches_line_as_readable_text(start: Start,
                                                                 line: FakeLine) -> None:
    bridge = await start()
    await post(bridge, body_of(text("Where is my order?", "1", "01M1")))
    [question] = await delivered(bridge, 1)
    await bridge.emulator.agent_reply(
        question["conversation_id"], "**Next step:** see [the invoice](https://x.example/i)")
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    assert line.pushed[0]["messages"] == [
        {"type": "text", "text": "Next step: see the invoice (https://x.example/i)"}]


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
    (429, Throttled, 7.0),
    (500, Unavailable, None),
    (503, Unavailable, None),
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
    with pytest.raises(Unavailable, match="no answer"):
        await bridge.daemon.sources["line"].send_reply(reply())


# -- files ------------------------------------------------------------------------------------

CDN = "https://livedesk.example/rails/active_storage"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(64))


def livedesk_file(name: str, file_type: str, size: int, *, thumb: bool = False,
                  url: str | None = None) -> dict[str, Any]:
    """An attachment as Livedesk (Chatwoot's ``push_event_data``) puts it in a webhook, at an
    HTTPS URL (a real Livedesk's ``data_url``; the emulator serves plain HTTP)."""
    data_url = url or f"{CDN}/blobs/redirect/eyJfcmFpbHMi/{name}"
    return {"id": 1, "message_id": None, "file_type": file_type, "account_id": 1,
            "extension": name.rsplit(".", 1)[-1], "data_url": data_url,
            "thumb_url": f"{CDN}/representations/redirect/eyJfcmFpbHMi/{name}.jpg"
            if thumb else "",
            "file_size": size, "width": None, "height": None}


async def conversation(start: Start) -> tuple[Any, int]:
    """A bridge whose user wrote once; the Livedesk conversation id."""
    bridge = await start()
    await post(bridge, body_of(text("Can you send the manual?", "1", "01F1")))
    [question] = await delivered(bridge, 1)
    return bridge, int(question["conversation_id"])


async def test_reply_files_are_pushed_as_images_videos_and_lines(start: Start,
                                                               line: FakeLine) -> None:
    bridge, cid = await conversation(start)
    photo = livedesk_file("photo.jpg", "image", 2048, thumb=True)
    shot = livedesk_file("screen.png", "image", 1024)  # no thumbnail: the image previews
    video = livedesk_file("howto.mp4", "video", 5_000_000, thumb=True)
    clip = livedesk_file("clip.mp4", "video", 9000)  # no preview image: a line
    voice = livedesk_file("note.m4a", "audio", 4000)  # no duration from Livedesk: a line
    manual = livedesk_file("manual.pdf", "file", 48)
    plain = livedesk_file("plain.png", "image", 10, url="http://livedesk.example/plain.png")
    await bridge.emulator.agent_reply(cid, "Here you go.", attachments=[
        photo, shot, video, clip, voice, manual, plain])
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    [pushed] = line.pushed
    assert pushed["to"] == USER
    assert pushed["messages"] == [
        {"type": "text", "text": "\n\n".join([
            "Here you go.",
            f"[attachment] clip.mp4 (video/mp4, 9000 bytes): {clip['data_url']}",
            f"[attachment] note.m4a (audio/mp4, 4000 bytes): {voice['data_url']}",
            f"[attachment] manual.pdf (application/pdf, 48 bytes): {manual['data_url']}",
            f"[attachment] plain.png (image/png, 10 bytes): {plain['data_url']}"])},
        {"type": "image", "originalContentUrl": photo["data_url"],
         "previewImageUrl": photo["thumb_url"]},
        {"type": "image", "originalContentUrl": shot["data_url"],
         "previewImageUrl": shot["data_url"]},
        {"type": "video", "originalContentUrl": video["data_url"],
         "previewImageUrl": video["thumb_url"]},
    ]


async def test_a_file_only_reply_is_pushed(start: Start, line: FakeLine) -> None:
    bridge, cid = await conversation(start)
    photo = livedesk_file("photo.jpg", "image", 2048, thumb=True)
    await bridge.emulator.agent_reply(cid, None, attachments=[photo])
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    await bridge.wait_idle()
    assert line.pushed[0]["messages"] == [{"type": "image", "originalContentUrl": photo[
        "data_url"], "previewImageUrl": photo["thumb_url"]}]
    assert (await bridge.daemon.store.stats()).dead_letters == 0


async def test_a_file_uploaded_on_the_emulators_page_reaches_line_as_a_link(
        start: Start, line: FakeLine) -> None:
    """The emulator serves its files over plain HTTP, which LINE does not fetch: the file
    reaches the chat as a line with its link."""
    bridge, cid = await conversation(start)
    png = {"name": "shot.png", "content_type": "image/png",
           "data": base64.b64encode(PNG).decode()}
    resp = await bridge.client.post(f"/emulator/_emulator/conversations/{cid}/reply",
                                    json={"content": "", "attachments": [png]})
    assert resp.status == 200, await resp.text()
    [attachment] = (await resp.json())["attachments"]
    await bridge.wait_for(lambda: len(line.pushed) == 1)
    assert line.pushed[0]["messages"] == [{"type": "text", "text": (
        f"[attachment] shot.png (image/png, {len(PNG)} bytes): {attachment['data_url']}")}]


async def test_many_files_go_in_pushes_of_five_text_first(start: Start,
                                                         line: FakeLine) -> None:
    bridge = await start()
    photos = [Attachment(name=f"p{i}.jpg", content_type="image/jpeg", size=100,
                         url=f"{CDN}/p{i}.jpg") for i in range(6)]
    await bridge.daemon.sources["line"].send_reply(reply("Photos", attachments=photos))
    first, second = line.pushed
    assert [m["type"] for m in first["messages"]] == ["text"] + ["image"] * 4
    assert [m["originalContentUrl"] for m in second["messages"]] == [
        f"{CDN}/p4.jpg", f"{CDN}/p5.jpg"]
    assert first["retry_key"] != second["retry_key"]


@pytest.mark.parametrize("file", [
    Attachment(name="huge.jpg", content_type="image/jpeg", size=10 * 1024 * 1024 + 1,
               url=f"{CDN}/huge.jpg"),
    Attachment(name="anim.gif", content_type="image/gif", size=100, url=f"{CDN}/anim.gif"),
    Attachment(name="long.png", content_type="image/png", size=100,
               url=f"{CDN}/{'x' * 2000}.png"),
    Attachment(name="clip.mp4", content_type="video/mp4", size=100, url=f"{CDN}/clip.mp4",
               thumb_url="http://livedesk.example/clip.jpg"),
])
async def test_files_line_cannot_show_are_lines(start: Start, line: FakeLine,
                                                file: Attachment) -> None:
    bridge = await start()
    await bridge.daemon.sources["line"].send_reply(reply("", attachments=[file]))
    assert line.pushed[0]["messages"] == [{"type": "text", "text": file.line()}]


async def test_a_reply_with_neither_text_nor_files_is_permanent(start: Start) -> None:
    bridge = await start()
    with pytest.raises(Permanent, match="neither text nor files"):
        await bridge.daemon.sources["line"].send_reply(reply(" "))
