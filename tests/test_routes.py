"""Routes with their own flow control, over real sockets against the emulator's faults: rate
limits, outages, one breaker per direction, replies under backpressure, start-up order,
readiness per route, and the demo-mode webhook secret. Then the breaker and the rate limiter
on an injected clock, and a poison item on a route of its own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import time
from collections.abc import Callable
from typing import Any, ClassVar

import pytest

from livebridge import InboundMessage, OutboundReply, Sender, Source, Unavailable, hookimpl
from livebridge._config import DeliveryConfig
from livebridge._livedesk.emulator import Faults
from livebridge._outbox import Breaker, Dispatcher, Flow, RateLimiter, Route
from livebridge._replies import sign_webhook
from livebridge._store import OutboxItem
from livebridge._store.sqlite import SQLiteStore
from livebridge.metrics import Metrics

Post = Callable[..., dict[str, Any]]
FAULTS = "/emulator/_emulator/faults"
#: Today's defaults for backoff and Retry-After (the test defaults are much shorter), so that
#: a design that lets items or routes sleep in backoff shows it.
REAL_BACKOFF = {"initial_backoff": 1, "max_backoff": 300, "retry_after_cap": 300}
FAST_PROBES = {"probe_interval": "100ms", "probe_cap": "200ms"}


def event(conversation_id: int, message_id: int, content: str = "Hello from Ann"
          ) -> dict[str, Any]:
    return {"event": "message_created", "id": message_id, "content": content,
            "message_type": "outgoing", "private": False,
            "sender": {"id": 1, "name": "Ann Agent", "type": "user"},
            "conversation": {"id": conversation_id}}


async def conversation_for(bridge: Any, echo_post: Post, thread: str = "t1") -> int:
    """Deliver one customer message in ``thread``; return its Livedesk conversation id."""
    state = bridge.emulator.state
    before = len(state.messages)
    await bridge.client.post("/echo", json=echo_post(1000 + before, thread=thread))
    await bridge.wait_for(lambda: len(state.messages) == before + 1)
    return int(list(state.messages.values())[-1]["conversation_id"])


async def outage(bridge: Any, seconds: float) -> None:
    """Start (or, with 0, end) a Livedesk outage through the emulator's admin API."""
    resp = await bridge.client.post(FAULTS, json={"outage_seconds": seconds})
    assert resp.status == 200


def statuses(bridge: Any) -> list[int]:
    return [c.status for c in bridge.emulator.state.calls]


async def test_a_burst_of_429s_slows_delivery_down_but_never_stalls_it(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    """200 new customers (600 calls) against a Livedesk that allows 100 calls/s: everything
    is delivered, and no 429 counts as an attempt of its item."""
    # A throttled conversation create was refused, so its retry does not wait out the sink's
    # settle time (20 s here) as it would for an unanswered one.
    bridge = await make_bridge({"sources": [{"type": "echo"}], "delivery": REAL_BACKOFF},
                               plugins=[echo])
    bridge.emulator.faults = Faults(rate_limit=100, rate_limit_burst=10, retry_after=1)
    store = bridge.daemon.store
    retries: list[tuple[bool, str]] = []
    retry = store.retry

    async def spy(item: OutboxItem, delay: float, error: str, *, count: bool = True) -> None:
        retries.append((count, error))
        await retry(item, delay, error, count=count)

    store.retry = spy
    for i in range(200):
        assert (await bridge.client.post("/echo", json=echo_post(
            i, user=f"u{i}", thread=f"t{i}"))).status == 200
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 200, timeout=15)
    assert 429 in statuses(bridge)
    throttled = [counted for counted, error in retries if "HTTP 429" in error]
    assert throttled and not any(throttled)
    assert await store.dead_letters() == []
    assert len(bridge.emulator.state.contacts) == 200


async def test_a_probe_answered_429_does_not_leave_the_route_half_open(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    """Livedesk comes back from an outage throttling: the probe gets a 429, which neither
    closes nor reopens the breaker; the route probes again and delivers everything."""
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "delivery": {**REAL_BACKOFF, **FAST_PROBES}}, plugins=[echo])
    await outage(bridge, 3600)
    for i in range(4):
        await bridge.client.post("/echo", json=echo_post(i, user=f"u{i}", thread=f"t{i}"))
    route = bridge.daemon.routes["livedesk"]
    await bridge.wait_for(lambda: route.breaker.state != "closed")
    await outage(bridge, 0)
    bridge.emulator.faults = Faults(rate_limit_rate=1.0, retry_after=0.1)  # back, but 429 first
    await bridge.wait_for(lambda: 429 in statuses(bridge))
    bridge.emulator.faults = Faults()
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 4)
    assert route.breaker.state == "closed"


async def test_a_throttled_conversation_create_is_tried_again_without_waiting_to_settle(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    """A 429 on ``POST /conversations`` means nothing was created: the next attempt creates
    the conversation at once instead of waiting out the sink's settle time (60 s here) as it
    must for a create whose answer was lost."""
    bridge = await make_bridge({"sources": [{"type": "echo"}], "livedesk": {"timeout": "30s"}},
                               plugins=[echo])
    await conversation_for(bridge, echo_post, thread="t1")  # the contact exists now
    state = bridge.emulator.state
    bridge.emulator.faults = Faults(rate_limit_rate=1.0, retry_after=1)
    await bridge.client.post("/echo", json=echo_post(1, thread="t2"))
    await bridge.wait_for(lambda: any(
        c.method == "POST" and c.path.endswith("/conversations") and c.status == 429
        for c in state.calls))
    bridge.emulator.faults = Faults()
    await bridge.wait_for(lambda: len(state.messages) == 2, timeout=15)
    assert len(state.conversations) == 2
    assert await bridge.daemon.store.dead_letters() == []


async def test_after_an_outage_waiting_items_go_out_at_once(make_bridge: Any, echo: Any,
                                                           echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "delivery": {**REAL_BACKOFF, **FAST_PROBES}}, plugins=[echo])
    await outage(bridge, 3600)
    for i in range(40):
        await bridge.client.post("/echo", json=echo_post(
            i, user=f"u{i % 4}", thread=f"t{i % 4}", text=f"t{i % 4}/{i}"))
    await bridge.wait_for(lambda: 503 in statuses(bridge))
    failed = statuses(bridge).count(503)
    await bridge.wait_for(lambda: statuses(bridge).count(503) >= failed + 2)  # it keeps probing
    await outage(bridge, 0)
    await bridge.wait_for(lambda: len(bridge.emulator.state.messages) == 40, timeout=10)
    for thread in range(4):
        numbers = [int(m["content"].split("/")[1]) for m in bridge.emulator.state.messages.values()
                   if m["content"].startswith(f"hi: t{thread}/")]
        assert numbers == sorted(numbers) and len(numbers) == 10
    assert await bridge.daemon.store.dead_letters() == []


async def test_replies_go_out_while_livedesk_is_down(make_bridge: Any, echo: Any,
                                                    echo_post: Post) -> None:
    """One breaker per direction: Livedesk failing does not hold back replies to a healthy
    source."""
    bridge = await make_bridge({"sources": [{"type": "echo"}], "delivery": REAL_BACKOFF},
                               plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    await outage(bridge, 3600)
    for i in range(10):
        await bridge.client.post("/echo", json=echo_post(i, user=f"u{i}", thread=f"t{i}"))
    await bridge.wait_for(lambda: 503 in statuses(bridge))
    for i in range(5):
        assert (await bridge.post_webhook(event(conversation, 100 + i, f"r{i}"))).status == 200
    await bridge.wait_for(lambda: len(echo.sent) == 5)
    assert [r.text for r in echo.sent] == [f"r{i}" for i in range(5)]
    assert len(bridge.emulator.state.messages) == 1  # Livedesk is still down


async def test_readyz_reports_each_route(make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}],
                                "delivery": {**REAL_BACKOFF, **FAST_PROBES, "rate_limit": 50}},
                               plugins=[echo])
    ready = await (await bridge.client.get("/readyz")).json()
    assert ready["routes"]["livedesk"] == {"breaker": "closed", "paused_for": 0, "rate": 50,
                                           "in_flight": 0, "throttles": 0}
    assert ready["routes"]["reply:echo"]["breaker"] == "closed"
    assert ready["routes"]["reply:echo"]["rate"] is None and ready["store_ok"] is True
    await outage(bridge, 3600)
    for i in range(6):
        await bridge.client.post("/echo", json=echo_post(i, user=f"u{i}", thread=f"t{i}"))
    route = bridge.daemon.routes["livedesk"]
    await bridge.wait_for(lambda: route.breaker.state != "closed")
    resp = await bridge.client.get("/readyz")
    assert resp.status == 200  # a failing Livedesk does not make the daemon unready
    routes = (await resp.json())["routes"]
    assert routes["livedesk"]["breaker"] in ("open", "half-open")
    assert routes["reply:echo"]["breaker"] == "closed"
    metrics = await (await bridge.client.get("/metrics")).text()
    assert 'livebridge_route_breaker_state{route="reply:echo"} 0.0' in metrics
    assert 'livebridge_route_rate{route="livedesk"}' in metrics


async def test_too_many_messages_in_one_conversation_is_retried_not_dead_lettered(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    for i in range(199):  # the conversation's 200 messages a minute are used up
        await bridge.emulator.agent_reply(conversation, f"agent {i}")

    def refused() -> int:
        return sum(1 for c in bridge.emulator.state.calls
                   if c.status == 422 and c.path.endswith("/messages"))

    await bridge.client.post("/echo", json=echo_post(1))
    await bridge.wait_for(lambda: refused() >= 2)
    assert await bridge.daemon.store.dead_letters() == []
    assert (await bridge.daemon.store.stats()).depth == 1


async def test_replies_are_taken_while_the_outbox_is_full_for_inbound(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}], "delivery": {"max_outbox": 1}},
                               plugins=[echo])
    conversation = await conversation_for(bridge, echo_post)
    await outage(bridge, 3600)
    assert (await bridge.client.post("/echo", json=echo_post(1))).status == 200
    assert (await bridge.client.post("/echo", json=echo_post(2))).status == 503
    resp = await bridge.post_webhook(event(conversation, 77, "still here"))
    assert resp.status == 200 and (await resp.json())["queued"] is True
    await bridge.wait_for(lambda: [r.text for r in echo.sent] == ["still here"])


class OrderedSource(Source):
    """A source that records when it starts and sends replies."""

    type_name = "ordered"
    events: ClassVar[list[str]] = []

    async def start(self) -> None:
        self.events.append("source started")

    async def send_reply(self, reply: OutboundReply) -> None:
        self.events.append("reply sent")


class SlowStart:
    """Provides ``OrderedSource``; its start-up hook queues a message and a reply, then
    waits (a second at most) for either to be delivered."""

    def __init__(self) -> None:
        self.delivered = asyncio.Event()

    @hookimpl
    def livebridge_source_types(self) -> list[type[Source]]:
        return [OrderedSource]

    @hookimpl
    async def livebridge_startup(self, bridge: Any) -> None:
        events = OrderedSource.events
        events.append("startup hook")
        source = bridge.sources["ordered"]
        await bridge.accept(InboundMessage(source="ordered", event_id="e1", thread_key="t",
                                           sender=Sender(external_id="u"), text="queued"),
                            source)
        await bridge.queue_reply(OutboundReply(source="ordered", thread_key="t",
                                               livedesk_message_id=5, conversation_id=5,
                                               text="hi"))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.delivered.wait(), 1.0)
        events.append("startup hook done")

    @hookimpl
    def livebridge_message_delivered(self, message: InboundMessage) -> None:
        OrderedSource.events.append("delivered")
        self.delivered.set()

    @hookimpl
    def livebridge_reply_sent(self, reply: OutboundReply) -> None:
        self.delivered.set()


async def test_nothing_is_delivered_before_start_up_hooks_and_sources_are_done(
        make_bridge: Any) -> None:
    OrderedSource.events.clear()
    bridge = await make_bridge({"sources": [{"type": "ordered"}]},
                               plugins=[SlowStart()])
    events = OrderedSource.events
    await bridge.wait_for(lambda: "delivered" in events and "reply sent" in events)
    assert events[:3] == ["startup hook", "startup hook done", "source started"]


async def test_demo_mode_webhook_takes_only_what_the_emulator_signed(
        make_bridge: Any, echo: Any, echo_post: Post) -> None:
    bridge = await make_bridge({"sources": [{"type": "echo"}]}, plugins=[echo])
    assert bridge.daemon.config.livedesk.webhook_secret is None
    conversation = await conversation_for(bridge, echo_post)
    raw = json.dumps(event(conversation, 1)).encode()
    unsigned = await bridge.client.post("/livedesk/webhook", data=raw)
    stamp = str(int(time.time()))
    forged = await bridge.client.post("/livedesk/webhook", data=raw, headers={
        "X-Chatwoot-Timestamp": stamp,
        "X-Chatwoot-Signature": sign_webhook("guessed", stamp, raw)})
    assert (unsigned.status, forged.status) == (401, 401)
    assert (await bridge.daemon.store.stats()).depth == 0
    bridge.emulator.webhook_url = bridge.url("/livedesk/webhook")
    await bridge.emulator.agent_reply(conversation, "typed on the emulator's page")
    await bridge.wait_for(lambda: [r.text for r in echo.sent] == ["typed on the emulator's page"])


# --- the breaker and the rate limiter, on an injected clock -----------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_probes_and_closes() -> None:
    clock = Clock()
    breaker = Breaker(threshold=3, probe_interval=2, probe_cap=5, clock=clock)
    breaker.failure()
    breaker.failure()
    breaker.success()  # not consecutive
    for _ in range(3):
        assert breaker.allow() == -1
        breaker.failure()
    assert (breaker.state, breaker.allow(), breaker.wait) == ("open", 0, 2)
    clock.now += 2
    assert (breaker.allow(), breaker.state, breaker.allow()) == (1, "half-open", 0)
    breaker.failure()  # the probe failed: the next one waits twice as long
    assert (breaker.state, breaker.wait) == ("open", 4)
    clock.now += 4
    assert breaker.allow() == 1
    breaker.failure()
    assert breaker.wait == 5  # capped
    clock.now += 5
    assert breaker.allow() == 1
    breaker.unclaimed()  # nothing to probe with: the next claim may probe
    assert breaker.allow() == 1
    breaker.success()
    assert (breaker.state, breaker.allow(), breaker.wait) == ("closed", -1, 0)


async def test_rate_limiter_backs_off_on_a_throttle_and_climbs_back() -> None:
    clock = Clock()
    limiter = RateLimiter(ceiling=0, burst=100, clock=clock)
    assert limiter.rate == math.inf
    for _ in range(60):  # 60 calls within the last second
        await limiter.acquire()
    limiter.throttled()
    assert limiter.rate == pytest.approx(42)  # beta (0.7) times what was sent
    window = (60 * 0.3 / 0.4) ** (1 / 3)
    clock.now += window / 2
    assert 42 < limiter.rate < 60  # concave: quickly back towards the throttled rate
    clock.now += window / 2
    assert limiter.rate == pytest.approx(60)  # flat around it
    clock.now += 2
    assert limiter.rate > 60  # then probing beyond it
    capped = RateLimiter(ceiling=50, burst=10, clock=clock)
    assert capped.rate == 50
    for _ in range(10):
        await capped.acquire()
    capped.throttled()
    clock.now += 100
    assert capped.rate == 50  # the configured rate stays a ceiling


def test_one_burst_of_throttles_pauses_a_route_once() -> None:
    class Nowhere(Route):
        async def deliver(self, item: OutboxItem) -> None:
            raise NotImplementedError

    clock = Clock()
    route = Nowhere("x", Flow(4, Breaker(5, 1, 1, clock), RateLimiter(clock=clock), 10), clock)
    started = clock.now
    clock.now += 0.1
    assert route.pause(started, 3) and route.paused_for == 3
    assert route.capacity() == 0
    assert not route.pause(started, 30)  # a concurrent answer of the same burst
    clock.now += 3
    assert route.capacity() == 4
    assert route.pause(clock.now, 60) and route.paused_for == 10  # capped


async def test_a_poison_item_does_not_keep_its_route_stopped(tmp_path: Any) -> None:
    """An item its receiver always fails on opens the breaker; the next probe takes another
    item, so the route goes on while the poison item waits."""

    class Picky(Route):
        def __init__(self) -> None:
            super().__init__("picky", Flow(4, Breaker(2, 0.05, 0.05), RateLimiter(), 1))
            self.delivered: list[str] = []

        async def deliver(self, item: OutboxItem) -> None:
            if item.payload == "poison":
                raise Unavailable("HTTP 500")
            self.delivered.append(item.payload)

    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    route = Picky()
    config = DeliveryConfig(initial_backoff=0.01, max_backoff=0.05)
    dispatcher = Dispatcher(store, [route], config, Metrics())

    async def until(predicate: Callable[[], bool]) -> None:
        async with dispatcher.changed:
            await asyncio.wait_for(dispatcher.changed.wait_for(predicate), 10)

    dispatcher.start()
    try:
        await store.enqueue("inbound", "s", "p", "poison-thread", "poison", 60, route="picky")
        await until(lambda: route.breaker.state != "closed")
        for i in range(3):
            await store.enqueue("inbound", "s", f"g{i}", f"t{i}", f"good{i}", 60, route="picky")
        await until(lambda: len(route.delivered) == 3)
        assert sorted(route.delivered) == ["good0", "good1", "good2"]
        assert (await store.stats()).depth == 1  # the poison item, still retried
    finally:
        await dispatcher.stop(1)
        await store.close()
