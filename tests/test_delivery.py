"""The sink and the delivery workers over real sockets, against the emulator's faults."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from livebridge.livedesk.client import parse_retry_after
from livebridge.livedesk.emulator import Emulator, Faults
from livebridge.livedesk.sink import MAX_CONTENT, render_content
from livebridge.model import Attachment, InboundMessage, Sender

Post = Callable[..., dict[str, Any]]


def texts(emulator: Emulator, conversation_id: int) -> list[str]:
    return [m["content"] for m in emulator.state.messages_in(conversation_id)]


def by_thread(emulator: Emulator) -> dict[str, list[str]]:
    """Message texts per conversation, keyed by the thread named in the text."""
    out: dict[str, list[str]] = {}
    for conversation_id in emulator.state.conversations:
        contents = texts(emulator, conversation_id)
        if contents:
            out[contents[0].split("/")[0]] = contents
    return out


async def external_emulator(aiohttp_server: Any, **kwargs: Any) -> tuple[Emulator, str]:
    emulator = Emulator(api_key="real-key", api_secret="real-secret", inbox_id=407, **kwargs)
    server = await aiohttp_server(emulator.app())
    return emulator, str(server.make_url("")).rstrip("/")


def livedesk_at(url: str, secret: str = "real-secret") -> dict[str, Any]:
    return {"base_url": url, "api_key": "real-key", "api_secret": secret, "inbox_id": 407}


async def test_outage_loses_nothing_and_keeps_order(make_bridge: Any, echo: Any,
                                                    echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    emulator = bridge.emulator
    emulator.faults = Faults(outage_until=time.time() + 3600)
    for i in range(30):
        thread = f"t{i % 3}"
        resp = await bridge.client.post("/echo", json=echo_post(
            i, user=f"u{i % 3}", thread=thread, text=f"{thread}/{i}"))
        assert resp.status == 200
    metrics = bridge.daemon.metrics
    await bridge.wait_for(lambda: metrics.retried.labels(source="echo", kind="inbound")
                          ._value.get() >= 3)
    assert emulator.state.messages == {}
    emulator.faults = Faults()
    await bridge.wait_for(lambda: len(emulator.state.messages) == 30, timeout=30)
    threads = by_thread(emulator)
    assert sorted(threads) == ["hi: t0", "hi: t1", "hi: t2"]
    for contents in threads.values():
        numbers = [int(c.rsplit("/", 1)[1]) for c in contents]
        assert numbers == sorted(numbers) and len(numbers) == 10
    assert len(emulator.state.contacts) == 3


async def test_429_storm_honours_retry_after(make_bridge: Any, echo: Any,
                                             echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    emulator = bridge.emulator
    emulator.faults = Faults(rate_limit_rate=1.0, retry_after=1)
    started = time.monotonic()
    for i in range(5):
        await bridge.client.post("/echo", json=echo_post(i, user=f"u{i}", thread=f"t{i}"))
    await bridge.wait_for(lambda: emulator.state.count_calls() >= 1)
    first_429 = time.monotonic()
    emulator.faults = Faults()
    await bridge.wait_for(lambda: len(emulator.state.messages) == 5)
    # test backoff is capped at 0.2 s: only Retry-After can hold delivery back this long
    assert time.monotonic() - first_429 >= 0.9
    statuses = [c.status for c in emulator.state.calls]
    assert statuses.count(429) <= 5, "the storm was hammered instead of waited out"
    assert time.monotonic() - started < 10


async def test_permanent_error_is_dead_lettered_and_replayable(make_bridge: Any, echo: Any,
                                                               echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    emulator, store = bridge.emulator, bridge.daemon.store
    emulator.faults = Faults(reject_messages=True)
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: bridge.daemon.metrics.dead_lettered.labels(
        source="echo", kind="inbound")._value.get() == 1)
    [letter] = await store.dead_letters()
    assert "HTTP 422" in letter.reason and letter.attempts == 1
    assert letter.response is not None and "could not be processed" in letter.response
    assert (await store.stats()).depth == 0
    emulator.faults = Faults()  # the cause is fixed
    assert await store.replay_dead_letter(letter.id)
    await bridge.wait_for(lambda: len(emulator.state.messages) == 1)
    assert await store.dead_letters() == []
    # the contact and conversation made before the 422 were reused, not made again
    assert len(emulator.state.contacts) == 1 and len(emulator.state.conversations) == 1


async def test_backpressure_answers_503_with_retry_after(make_bridge: Any, echo: Any,
                                                         echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}], "delivery": {"max_outbox": 3}},
                               plugins=[echo])
    bridge.emulator.faults = Faults(outage_until=time.time() + 3600)
    for i in range(3):
        assert (await bridge.client.post("/echo", json=echo_post(i))).status == 200
    resp = await bridge.client.post("/echo", json=echo_post(99))
    assert resp.status == 503 and int(resp.headers["Retry-After"]) > 0
    assert (await bridge.daemon.store.stats()).depth == 3
    bridge.emulator.faults = Faults()
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 3)
    assert (await bridge.client.post("/echo", json=echo_post(99))).status == 200


async def test_deleted_conversation_is_recreated(make_bridge: Any, echo: Any,
                                                 echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    state = bridge.emulator.state
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: len(state.messages) == 1)
    [old] = list(state.conversations)
    del state.conversations[old]  # an admin deleted it in Livedesk
    await bridge.client.post("/echo", json=echo_post(2))
    await bridge.wait_for(lambda: len(state.conversations) == 1 and len(state.messages) == 2)
    [new] = list(state.conversations)
    assert new != old
    calls = len(state.calls)
    await bridge.client.post("/echo", json=echo_post(3))
    await bridge.wait_for(lambda: len(state.messages) == 3)
    assert len(state.calls) - calls == 1  # the map points at the new one
    assert texts(bridge.emulator, new) == ["hi: hello", "hi: hello"]


async def test_existing_contact_is_reused_not_duplicated(make_bridge: Any, echo: Any,
                                                         echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    emulator = bridge.emulator
    session = bridge.daemon.http
    resp = await session.post(f"{bridge.daemon.livedesk_url}/api/v2/accounts/contacts",
                              json={"inbox_id": 1, "name": "Ann", "email": "ann@example.com"},
                              headers={"Authorization": "Basic ZW11bGF0b3I6ZW11bGF0b3I="})
    existing = (await resp.json())["payload"]["contact"]["id"]
    await bridge.client.post("/echo", json=echo_post(1, user="ann", email="Ann@Example.com"))
    await bridge.wait_for(lambda: len(emulator.state.messages) == 1)
    assert list(emulator.state.contacts) == [existing]
    [conversation] = emulator.state.conversations.values()
    assert conversation["meta"]["sender"]["id"] == existing
    statuses = [(c.method, c.status) for c in emulator.state.calls]
    assert ("POST", 422) in statuses and ("GET", 200) in statuses


async def test_restart_keeps_the_maps(make_bridge: Any, echo: Any, echo_post: Post,
                                      aiohttp_server: Any, tmp_path: Path) -> None:
    emulator, url = await external_emulator(aiohttp_server)
    config = {"sources": [{"type": "echo"}], "livedesk": livedesk_at(url),
              "store": {"url": f"sqlite:///{tmp_path / 'kept.db'}"}}
    first = await make_bridge(config, plugins=[echo], emulator=emulator)
    await first.client.post("/echo", json=echo_post(1))
    await first.wait_for(lambda: len(emulator.state.messages) == 1)
    await first.client.close()
    calls = len(emulator.state.calls)
    second = await make_bridge(config, plugins=[echo], emulator=emulator)
    await second.client.post("/echo", json=echo_post(2))
    await second.wait_for(lambda: len(emulator.state.messages) == 2)
    assert len(emulator.state.calls) - calls == 1
    assert len(emulator.state.contacts) == 1 and len(emulator.state.conversations) == 1


async def test_real_credentials_reach_another_livedesk(make_bridge: Any, echo: Any,
                                                       echo_post: Post,
                                                       aiohttp_server: Any) -> None:
    seen: list[str] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization", ""))
        return await handler(request)

    emulator = Emulator(api_key="real-key", api_secret="real-secret", inbox_id=407)
    app = emulator.app()
    app.middlewares.insert(0, record)
    server = await aiohttp_server(app)
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": livedesk_at(str(server.make_url("")).rstrip("/"))},
                               plugins=[echo], emulator=emulator)
    assert bridge.daemon.emulator is None
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: len(emulator.state.messages) == 1)
    assert set(seen) == {"Basic cmVhbC1rZXk6cmVhbC1zZWNyZXQ="}  # base64("real-key:real-secret")
    [contact] = emulator.state.contacts.values()
    [conversation] = emulator.state.conversations.values()
    assert conversation["inbox_id"] == 407 and conversation["meta"]["sender"]["id"] == contact["id"]
    ready = await (await bridge.client.get("/readyz")).json()
    assert ready["livedesk"] == "livedesk" and "warning" not in ready


async def test_wrong_credentials_are_dead_lettered_with_the_answer(
        make_bridge: Any, echo: Any, echo_post: Post, aiohttp_server: Any) -> None:
    emulator, url = await external_emulator(aiohttp_server)
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": livedesk_at(url, secret="wrong")},
                               plugins=[echo], emulator=emulator)
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: bridge.daemon.dispatcher.last_error is not None)
    await bridge.wait_idle()
    [letter] = await bridge.daemon.store.dead_letters()
    assert "HTTP 401" in letter.reason and "Invalid Access Token" in (letter.response or "")
    assert emulator.state.contacts == {}


async def test_metrics_and_readiness(make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    ready = await bridge.client.get("/readyz")
    body = await ready.json()
    assert ready.status == 200 and body["livedesk"] == "emulator"
    assert "nothing reaches the real Livedesk" in body["warning"]
    assert (await bridge.client.get("/healthz")).status == 200
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    await bridge.wait_idle()
    text = await (await bridge.client.get("/metrics")).text()
    for line in ('livebridge_messages_received_total{source="echo"} 2.0',
                 'livebridge_messages_accepted_total{source="echo"} 1.0',
                 'livebridge_messages_deduplicated_total{source="echo"} 1.0',
                 'livebridge_messages_delivered_total{kind="inbound",source="echo"} 1.0',
                 'livebridge_livedesk_calls_total{endpoint="create_contact",status="200"} 1.0',
                 "livebridge_outbox_depth 0.0",
                 'livebridge_delivery_latency_seconds_count{source="echo"} 1.0'):
        assert line in text, line


async def test_clean_shutdown_finishes_in_flight_calls(make_bridge: Any, echo: Any,
                                                       echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    emulator = bridge.emulator
    emulator.faults = Faults(latency=0.3)
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: bridge.daemon.dispatcher.in_flight == 1)
    await bridge.client.close()  # SIGTERM does the same: aiohttp runs the cleanup
    assert len(emulator.state.messages) == 1


def test_retry_after_forms() -> None:
    assert parse_retry_after("7") == 7
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470) == 10
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_content_lists_attachments_and_truncates_visibly() -> None:
    message = InboundMessage(
        source="s", event_id="e", thread_key="t", sender=Sender(external_id="x"),
        text="x" * (MAX_CONTENT + 10),
        attachments=[Attachment(name="a.png", content_type="image/png", size=3,
                                url="https://files/a.png")],
    )
    content = render_content(message)
    assert len(content) == MAX_CONTENT
    assert content.endswith("more characters not shown]")
    short = render_content(message.model_copy(update={"text": "hi"}))
    assert short == "hi\n\n[attachment] a.png (image/png, 3 bytes): https://files/a.png"
