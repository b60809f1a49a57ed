"""Files both ways through Slack, and agents' edits and deletions: signed Events API requests
to the running daemon, the fake Slack (files.info, the bot-token download, the
getUploadURLExternal / completeUploadExternal upload flow, chat.update, chat.delete) and the
Livedesk emulator sending its webhooks to the daemon."""

from __future__ import annotations

import base64
from typing import Any

import aiohttp
import pytest
from livebridge_slack.fake import FakeSlack
from slack_helpers import CHANNEL, SECRET, USER, body_of, delivered, envelope, message, sign

from livebridge.testing import BridgeHarness

PATH = "/slack/events"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
ROOT_TS = "1355517523.000005"
Start = Any


async def post(bridge: BridgeHarness, payload: dict[str, Any]) -> dict[str, Any]:
    body = body_of(payload)
    resp = await bridge.client.post(PATH, data=body, headers=sign(body))
    assert resp.status == 200
    answer: dict[str, Any] = await resp.json()
    return answer


def shared(text: str, ts: str, *files: dict[str, Any]) -> dict[str, Any]:
    """A ``file_share`` message in the channel with ``files``."""
    return message(text, ts, channel=CHANNEL, subtype="file_share", upload=False,
                   display_as_bot=False, files=list(files))


async def test_a_slack_file_reaches_livedesk_as_a_file_with_the_same_bytes(
        start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    pdf = slack.add_file("invoice-42.pdf", PDF, "application/pdf")
    stub = slack.add_file("photo.png", PNG, "image/png")  # shared over Slack Connect:
    stub = {"id": stub["id"], "file_access": "check_file_info", "created": stub["created"],
            "timestamp": stub["timestamp"], "user": USER}  # only a stub in the event
    answer = await post(bridge, envelope(shared("Here you go", ROOT_TS, pdf, stub), "EvF1"))
    assert answer["result"] == "accepted"
    [delivered_message] = await delivered(bridge, 1)
    assert delivered_message["content"] == "Here you go"
    assert [(a["name"], a["content_type"], a["file_size"])
            for a in delivered_message["attachments"]] == [
        ("invoice-42.pdf", "application/pdf", len(PDF)), ("photo.png", "image/png", len(PNG))]
    assert bridge.emulator.state.attachments == [PDF, PNG]
    assert [c[0] for c in slack.calls].count("files.info") == 2


async def test_files_over_the_caps_or_unreadable_become_lines(start: Start,
                                                              slack: FakeSlack) -> None:
    bridge = await start(max_file_bytes=1000, max_message_file_bytes=len(PDF) + 10)
    pdf = slack.add_file("invoice-42.pdf", PDF, "application/pdf")
    second = slack.add_file("copy.pdf", PDF, "application/pdf")  # over the message's cap
    big = slack.add_file("scan.png", PNG * 5, "image/png")  # over the file cap
    gone = {**slack.add_file("gone.txt", b"x", "text/plain"), "id": "F0DELETED"}
    await post(bridge, envelope(shared("Files", ROOT_TS, pdf, second, big, gone), "EvF2"))
    [got] = await delivered(bridge, 1)
    assert bridge.emulator.state.attachments == [PDF]
    assert got["content"] == "\n\n".join([
        "Files",
        f"[attachment] copy.pdf (application/pdf, {len(PDF)} bytes): {second['permalink']}",
        f"[attachment] scan.png (image/png, {len(PNG) * 5} bytes): {big['permalink']}",
        f"[attachment] gone.txt (text/plain, 1 bytes): {gone['permalink']}",
    ])


async def conversation(bridge: BridgeHarness) -> int:
    """The customer wrote in a channel thread; the emulator sends its webhooks to the bridge.
    Returns the Livedesk conversation id."""
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await post(bridge, envelope(message("Where is my invoice?", ROOT_TS, channel=CHANNEL),
                                "EvQ"))
    [question] = await delivered(bridge, 1)
    return int(question["conversation_id"])


async def admin(bridge: BridgeHarness, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST to the emulator's agent endpoints, as its page does."""
    resp = await bridge.client.post(f"/emulator/_emulator/{path}", json=body)
    assert resp.status == 200, await resp.text()
    answer: dict[str, Any] = await resp.json()
    return answer


def source_settings(server: Any) -> dict[str, Any]:
    """The slack source's settings against the fake Slack ``server``."""
    return {"type": "slack", "signing_secret": SECRET, "bot_token": "xoxb-test",
            "api_url": str(server.make_url("/api/"))}


def pdf_file(name: str = "invoice-42.pdf", data: bytes = PDF) -> dict[str, str]:
    return {"name": name, "content_type": "application/pdf",
            "data": base64.b64encode(data).decode()}


async def test_an_agent_reply_with_a_pdf_reaches_the_thread_as_a_file(
        start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    cid = await conversation(bridge)
    await admin(bridge, f"conversations/{cid}/reply",
                {"content": "Here is your **invoice**", "attachments": [pdf_file()]})
    await bridge.wait_for(lambda: len(slack.uploaded) == 1)
    [uploaded] = slack.uploaded
    assert (uploaded["filename"], uploaded["data"]) == ("invoice-42.pdf", PDF)
    assert (uploaded["channel"], uploaded["thread_ts"]) == (CHANNEL, ROOT_TS)
    [posted] = slack.posted
    assert (posted["text"], posted["thread_ts"]) == ("Here is your *invoice*", ROOT_TS)


async def test_a_file_only_reply_reaches_slack(start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    cid = await conversation(bridge)
    # Through the API, as an agent's client posts it: multipart, outgoing, no content.
    form = aiohttp.FormData({"message_type": "outgoing"})
    form.add_field("attachments[]", PNG, filename="photo.png", content_type="image/png")
    resp = await bridge.client.post(
        f"/emulator/api/v2/accounts/conversations/{cid}/messages", data=form,
        headers={"Authorization": "Basic " + base64.b64encode(b"emulator:emulator").decode()})
    assert resp.status == 200, await resp.text()
    await bridge.wait_for(lambda: len(slack.uploaded) == 1)
    await bridge.wait_idle()
    assert slack.uploaded[0]["data"] == PNG
    assert slack.posted == []  # no text, no chat.postMessage (Slack would answer no_text)
    assert (await bridge.daemon.store.stats()).dead_letters == 0


async def test_a_reply_file_over_the_cap_is_a_line_in_the_text(
        make_bridge: Any, server: Any, slack: FakeSlack) -> None:
    bridge = await make_bridge({"sources": [source_settings(server)],
                                "livedesk": {"max_reply_file_bytes": 10}})
    cid = await conversation(bridge)
    reply = await admin(bridge, f"conversations/{cid}/reply", {"attachments": [pdf_file()]})
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    [attachment] = reply["attachments"]
    assert slack.posted[0]["text"] == \
        f"[attachment] invoice-42.pdf (application/pdf, {len(PDF)} bytes): " \
        f"{attachment['data_url']}"
    assert slack.uploaded == []


async def test_an_agents_edit_and_delete_reach_slack(start: Start, slack: FakeSlack) -> None:
    bridge = await start()
    cid = await conversation(bridge)
    reply = await admin(bridge, f"conversations/{cid}/reply", {"content": "It ships today."})
    await bridge.wait_for(lambda: len(slack.posted) == 1)
    await admin(bridge, f"messages/{reply['id']}/edit", {"content": "It ships **tomorrow**."})
    await bridge.wait_for(lambda: slack.posted[0].get("edited") is True)
    assert slack.posted[0]["text"] == "It ships *tomorrow*."
    await admin(bridge, f"messages/{reply['id']}/delete", {})
    await bridge.wait_for(lambda: slack.posted[0].get("deleted") is True)
    await bridge.wait_idle()
    assert [c[0] for c in slack.calls if c[0].startswith("chat.")] == [
        "chat.postMessage", "chat.update", "chat.delete"]


@pytest.mark.parametrize("forward", [True, False])
async def test_template_messages_are_forwarded_unless_turned_off(
        make_bridge: Any, server: Any, slack: FakeSlack, forward: bool) -> None:
    livedesk = {} if forward else {"forward_templates": False}  # forwarded by default
    bridge = await make_bridge({"sources": [source_settings(server)], "livedesk": livedesk})
    cid = await conversation(bridge)
    # The emulator returns once its webhook was answered, so the reply is queued by then.
    await admin(bridge, f"conversations/{cid}/template", {"content": "We are away."})
    await bridge.wait_idle()
    assert [p["text"] for p in slack.posted] == (["We are away."] if forward else [])
