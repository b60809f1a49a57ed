"""Agent replies: the Livedesk webhook in, verified and queued; send_reply of the owning
source out."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from livebridge import OutboundReply, hookimpl
from livebridge._livedesk.emulator import Emulator
from livebridge._replies import sign_webhook

Post = Callable[..., dict[str, Any]]
SECRET = "whsec-test-0123"


async def conversation_for(bridge: Any, echo_post: Post, thread: str = "t1") -> int:
    """Deliver one customer message in ``thread``; return its Livedesk conversation id."""
    state = bridge.emulator.state
    before = len(state.messages)
    await bridge.client.post("/echo", json=echo_post(before + 1, thread=thread))
    await bridge.wait_for(lambda: len(state.messages) == before + 1)
    return int(list(state.messages.values())[-1]["conversation_id"])


def event(conversation_id: int, message_id: int = 9001, **changes: Any) -> dict[str, Any]:
    body = {"event": "message_created", "id": message_id, "content": "Hello from Ann",
            "message_type": "outgoing", "private": False, "content_type": "text",
            "sender": {"id": 1, "name": "Ann Agent", "type": "user"},
            "conversation": {"id": conversation_id}}
    body.update(changes)
    return body


def signed(body: dict[str, Any], secret: str = SECRET, ts: int | None = None
           ) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()) if ts is None else ts)
    return raw, {"X-Chatwoot-Timestamp": stamp, "X-Chatwoot-Signature":
                 sign_webhook(secret, stamp, raw), "Content-Type": "application/json"}


async def test_emulator_agent_reply_reaches_the_source(make_bridge: Any, echo: Any,
                                                       echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": {"webhook_secret": SECRET}}, plugins=[echo])
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    bridge.emulator.webhook_secret = SECRET
    conversation = await conversation_for(bridge, echo_post)
    reply = await bridge.emulator.agent_reply(conversation, "We are on it")
    await bridge.wait_for(lambda: len(echo.sent) == 1)
    [sent] = echo.sent
    assert (sent.text, sent.thread_key) == ("We are on it", "t1") and sent.agent_name
    assert sent.livedesk_message_id == reply["id"] and sent.conversation_id == conversation
    assert sent.reply_context == {"thread": "t1"}
    # the bridge's own incoming message also came back as a webhook: it was ignored
    await bridge.wait_idle()
    assert len(echo.sent) == 1


async def test_forged_stale_and_unsigned_webhooks_change_nothing(make_bridge: Any, echo: Any,
                                                                 echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": {"webhook_secret": SECRET}}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    body = event(conversation)
    forged = signed(body, secret="not-the-secret")
    stale = signed(body, ts=int(time.time()) - 3600)
    unsigned = (json.dumps(body).encode(), {"Content-Type": "application/json"})
    for (raw, headers), reason in ((forged, "bad signature"), (stale, "stale timestamp"),
                                   (unsigned, "unsigned")):
        resp = await bridge.client.post("/livedesk/webhook", data=raw, headers=headers)
        assert resp.status == 401 and (await resp.json())["error"] == reason
    assert (await bridge.daemon.store.stats()).depth == 0
    raw, headers = signed(body)
    resp = await bridge.client.post("/livedesk/webhook", data=raw, headers=headers)
    assert resp.status == 200 and (await resp.json()) == {"queued": True, "duplicate": False}
    again = await bridge.client.post("/livedesk/webhook", data=raw, headers=headers)
    assert (await again.json()) == {"queued": False, "duplicate": True}
    await bridge.wait_for(lambda: len(echo.sent) == 1)
    await bridge.wait_idle()
    assert len(echo.sent) == 1


async def test_only_public_agent_replies_to_known_conversations(make_bridge: Any, echo: Any,
                                                                echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    ignored = [event(conversation, private=True), event(conversation, message_type="incoming"),
               event(conversation, message_type=0),
               event(conversation, event="conversation_created"),
               event(424242)]
    for body in ignored:
        resp = await bridge.post_webhook(body)
        assert resp.status == 200 and "ignored" in await resp.json()
    bad = await bridge.post_webhook(b"{nope")
    assert bad.status == 400
    big = await bridge.client.post("/livedesk/webhook", data=b"x" * (2 * 1024 * 1024))
    assert big.status == 413
    no_id = await bridge.post_webhook(event(conversation, id=None))
    assert no_id.status == 422
    assert (await bridge.daemon.store.stats()).depth == 0 and echo.sent == []


async def test_reply_retries_and_dead_letters_like_inbound(make_bridge: Any, echo: Any,
                                                           echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    flaky = await conversation_for(bridge, echo_post, thread="flaky")
    gone = await conversation_for(bridge, echo_post, thread="gone")
    await bridge.post_webhook(event(flaky, 1))
    await bridge.post_webhook(event(gone, 2))
    await bridge.wait_for(lambda: [r.text for r in echo.sent] ==
                          ["(failed attempt)", "Hello from Ann"])
    await bridge.wait_idle()
    [letter] = await bridge.daemon.store.dead_letters()
    assert letter.kind == "reply" and "the customer's channel is gone" in letter.reason


async def test_reply_hooks_can_drop_and_observe(make_bridge: Any, echo: Any,
                                                echo_post: Post) -> None:
    seen: list[str] = []

    class Moderation:
        @hookimpl
        def livebridge_outbound_reply(self, reply: OutboundReply) -> Any:
            return False if "password" in reply.text else None

        @hookimpl
        async def livebridge_reply_sent(self, reply: OutboundReply) -> None:
            seen.append(reply.text)

    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo, Moderation()])
    conversation = await conversation_for(bridge, echo_post)
    dropped = await bridge.post_webhook(event(conversation, 1,
                                              content="your password is hunter2"))
    assert (await dropped.json()) == {"ignored": "dropped by a plugin hook"}
    await bridge.post_webhook(event(conversation, 2, content="ok"))
    await bridge.wait_for(lambda: seen == ["ok"])
    assert [r.text for r in echo.sent] == ["ok"]


async def test_real_livedesk_without_a_secret_serves_no_webhook(make_bridge: Any, echo: Any,
                                                                aiohttp_server: Any) -> None:
    emulator = Emulator(api_key="k", api_secret="s", inbox_id=5)
    server = await aiohttp_server(emulator.app())
    livedesk = {"base_url": str(server.make_url("")).rstrip("/"), "api_key": "k",
                "api_secret": "s", "inbox_id": 5}
    closed = await make_bridge({"sources": [{"type": "echo"}], "livedesk": livedesk},
                               plugins=[echo], emulator=emulator)
    resp = await closed.client.post("/livedesk/webhook", json=event(40))
    assert resp.status == 404  # anyone could otherwise make the bridge write to customers
    opened = await make_bridge({"sources": [{"type": "echo"}], "livedesk": {
        **livedesk, "allow_unsigned_webhooks": True}}, plugins=[echo], emulator=emulator)
    resp = await opened.client.post("/livedesk/webhook", json=event(40))
    assert resp.status == 200


async def test_odd_webhook_values_get_a_4xx(make_bridge: Any, echo: Any,
                                            echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": {"webhook_secret": SECRET}}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    raw, headers = signed(event(conversation))
    odd_signature = {**headers, "X-Chatwoot-Signature": "sha256=é" + "0" * 63}
    resp = await bridge.client.post("/livedesk/webhook", data=raw, headers={
        k: v.encode("utf-8").decode("latin-1") for k, v in odd_signature.items()})
    assert resp.status == 401
    for body in (event(conversation, id=float("inf")), event(conversation, id=True),
                 event(conversation, id=-1), event(conversation, conversation="x"),
                 event(conversation, conversation={"id": [1]})):
        raw, headers = signed(body)
        resp = await bridge.client.post("/livedesk/webhook", data=raw, headers=headers)
        assert resp.status == 422, body
    raw, headers = signed(event(conversation, sender="bob", content=["not", "text"]))
    resp = await bridge.client.post("/livedesk/webhook", data=raw, headers=headers)
    assert resp.status == 200  # odd optional fields are tolerated
    await bridge.wait_for(lambda: len(echo.sent) == 1)
    assert (echo.sent[0].text, echo.sent[0].agent_name) == ("", None)


async def test_a_hung_reply_attempt_is_cut_off_at_its_timeout(make_bridge: Any, echo: Any,
                                                              echo_post: Post) -> None:
    """The hung attempt keeps its lease (renewed, lease 1 s) until attempt_timeout cuts it
    off; only then is the reply tried again, once."""
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "delivery": {"lease": 1, "attempt_timeout": 2}}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post, thread="hang")
    started = time.monotonic()
    await bridge.post_webhook(event(conversation))
    await bridge.wait_for(lambda: len(echo.sent) == 1)
    assert len(echo.hung) == 1 and time.monotonic() - started >= 1.9
    await bridge.wait_idle()
    assert [r.text for r in echo.sent] == ["Hello from Ann"]


async def test_a_malformed_attachment_url_is_skipped_not_a_500(make_bridge: Any, echo: Any,
                                                               echo_post: Post) -> None:
    """Livedesk sends a webhook once: one bad ``data_url`` must not lose the reply."""
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    resp = await bridge.post_webhook(event(conversation, attachments=[
        {"id": 1, "file_type": "image", "data_url": "http://[oops/x.png", "file_size": 3}]))
    assert resp.status == 200 and (await resp.json())["queued"] is True
    await bridge.wait_for(lambda: len(echo.sent) == 1)
    assert (echo.sent[0].text, echo.sent[0].attachments) == ("Hello from Ann", [])
