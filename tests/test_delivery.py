"""The sink and the delivery workers over real sockets, against the emulator's faults."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from livebridge import hookimpl
from livebridge._livedesk.client import parse_retry_after
from livebridge._livedesk.emulator import Emulator, Faults
from livebridge._livedesk.sink import MAX_CONTENT, render_content
from livebridge.exceptions import ConfigError
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


class Gate:
    """Holds the first ``times`` emulator calls of ``method`` whose path ends with ``suffix``:
    ``arrived`` is set when one comes in; it goes on once ``opened`` is set (after ``delay``
    seconds with ``opened`` never set, if a delay is given)."""

    def __init__(self, method: str, suffix: str, times: int = 1, delay: float | None = None):
        self.method, self.suffix, self.left, self.delay = method, suffix, times, delay
        self.arrived = asyncio.Event()
        self.opened = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method == self.method and request.path.endswith(self.suffix) and self.left:
            self.left -= 1
            self.arrived.set()
            if self.delay is None:
                await self.opened.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.opened.wait(), self.delay)
        return await handler(request)


async def external_emulator(aiohttp_server: Any, gate: Gate | Crowd | None = None,
                            **kwargs: Any) -> tuple[Emulator, str]:
    emulator = Emulator(api_key="real-key", api_secret="real-secret", inbox_id=407, **kwargs)
    app = emulator.app()
    if gate is not None:
        app.middlewares.insert(0, gate.middleware)
    server = await aiohttp_server(app)
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
                                                       echo_post: Post,
                                                       aiohttp_server: Any) -> None:
    gate = Gate("POST", "/messages", delay=0.3)
    emulator, url = await external_emulator(aiohttp_server, gate)
    bridge = await make_bridge({"sources": [{"type": "echo"}], "livedesk": livedesk_at(url)},
                               plugins=[echo], emulator=emulator)
    await bridge.client.post("/echo", json=echo_post(1))
    await gate.arrived.wait()  # the message's POST is at Livedesk, unanswered
    assert emulator.state.messages == {}
    await bridge.client.close()  # SIGTERM does the same: aiohttp runs the cleanup
    assert len(emulator.state.messages) == 1


async def test_shutdown_timeout_bounds_a_stuck_delivery(make_bridge: Any, echo: Any,
                                                        echo_post: Post, aiohttp_server: Any,
                                                        tmp_path: Path) -> None:
    gate = Gate("POST", "/messages")  # Livedesk never answers the first message
    emulator, url = await external_emulator(aiohttp_server, gate)
    config = {"sources": [{"type": "echo"}], "livedesk": livedesk_at(url),
              "store": {"url": f"sqlite:///{tmp_path / 'stuck.db'}"},
              "delivery": {"concurrency": 1, "shutdown_timeout": 0.5}}
    first = await make_bridge(config, plugins=[echo], emulator=emulator)
    for i in range(3):
        await first.client.post("/echo", json=echo_post(i, text=f"m{i}"))
    await gate.arrived.wait()
    started = time.monotonic()
    await first.client.close()
    assert time.monotonic() - started < 3  # not held by the stuck call
    gate.opened.set()
    second = await make_bridge(config, plugins=[echo], emulator=emulator)
    await second.wait_for(lambda: len(emulator.state.messages) >= 3)
    contents = [m["content"] for m in emulator.state.messages.values()]
    assert contents[-3:] == ["hi: m0", "hi: m1", "hi: m2"]  # the rest was kept, in order


class Crowd:
    """Holds every ``POST …/messages`` until ``size`` of them are at Livedesk at once
    (``gathered``), or for ``patience`` seconds."""

    def __init__(self, size: int, patience: float) -> None:
        self.size, self.patience = size, patience
        self.at_once = self.peak = 0
        self.gathered = asyncio.Event()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "POST" or not request.path.endswith("/messages"):
            return await handler(request)
        self.at_once += 1
        self.peak = max(self.peak, self.at_once)
        if self.at_once >= self.size:
            self.gathered.set()
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gathered.wait(), self.patience)
            return await handler(request)
        finally:
            self.at_once -= 1


async def test_concurrency_above_a_hundred_has_that_many_calls_in_flight(
        make_bridge: Any, echo: Any, echo_post: Post, aiohttp_server: Any) -> None:
    # aiohttp's default connector stops at 100 connections, whatever delivery.concurrency says.
    threads = 120
    crowd = Crowd(threads, patience=30.0)
    emulator, url = await external_emulator(aiohttp_server, crowd)
    bridge = await make_bridge({"sources": [{"type": "echo"}], "livedesk": livedesk_at(url),
                                "delivery": {"concurrency": threads}},
                               plugins=[echo], emulator=emulator)
    for i in range(threads):
        resp = await bridge.client.post("/echo", json=echo_post(i, user=f"u{i}",
                                                                thread=f"t{i}"))
        assert resp.status == 200
    await bridge.wait_for(lambda: len(emulator.state.messages) == threads, timeout=30)
    assert crowd.peak == threads


async def test_unanswered_conversation_create_is_not_repeated(make_bridge: Any, echo: Any,
                                                              echo_post: Post,
                                                              aiohttp_server: Any) -> None:
    gate = Gate("POST", "/conversations", delay=0.5)  # answered after the bridge gave up
    emulator, url = await external_emulator(aiohttp_server, gate)
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "livedesk": {**livedesk_at(url), "timeout": 0.3}},
                               plugins=[echo], emulator=emulator)
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: len(emulator.state.messages) == 1, timeout=15)
    assert len(emulator.state.conversations) == 1
    [conversation] = emulator.state.conversations.values()
    assert conversation["custom_attributes"] == {"livebridge_thread": "echo|t1"}
    assert emulator.state.count_calls("GET", "/api/v2/accounts/contacts/") >= 1  # looked first


async def test_a_failing_delivered_hook_does_not_resend(make_bridge: Any, echo: Any,
                                                        echo_post: Post) -> None:
    calls: list[int] = []

    class Broken:
        @hookimpl
        def livebridge_message_delivered(self, livedesk_message_id: int) -> None:
            calls.append(livedesk_message_id)
            raise ConnectionResetError("the plugin's own backend is down")

    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo, Broken()])
    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: calls != [])
    await bridge.wait_idle()
    assert len(bridge.emulator.state.messages) == 1 and len(calls) == 1
    assert await bridge.daemon.store.dead_letters() == []


async def test_attachment_bytes_are_uploaded(make_bridge: Any, echo: Any,
                                             echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    files = {"notes.txt": "line one", "log.txt": "boom"}
    await bridge.client.post("/echo", json=echo_post(1, files=files))
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 1)
    [message] = bridge.emulator.state.messages.values()
    assert message["content"] == "hi: hello"
    assert [(a["name"], a["file_size"]) for a in message["attachments"]] == [
        ("notes.txt", 8), ("log.txt", 4)]
    assert bridge.emulator.state.attachments == [b"line one", b"boom"]


async def test_two_sources_on_one_path_are_refused(make_bridge: Any, echo: Any) -> None:
    with pytest.raises(ConfigError, match="'b' and 'a' both serve POST /echo"):
        await make_bridge({"sources": [{"type": "echo", "name": "a"},
                                       {"type": "echo", "name": "b"}]}, plugins=[echo])


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
