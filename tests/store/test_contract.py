"""The Store contract (livebridge/store/base.py), run against every store.

Expiry tests use short TTLs and poll until the deadline instead of sleeping a fixed time.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import pytest
import redis.asyncio as aioredis

from livebridge.store import OutboxItem, Store
from livebridge.store.sqlite import SQLiteStore

from .conftest import Backend

T = TypeVar("T")
FAR = 60.0  # a lease or TTL that does not run out during a test


async def eventually(probe: Callable[[], Awaitable[T]], done: Callable[[T], bool],
                     timeout: float = 5.0) -> T:
    """Poll ``probe()`` until ``done(result)``; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"still {result!r} after {timeout} s")
        await asyncio.sleep(0.02)


async def put(store: Store, key: str, thread: str = "t", payload: str | None = None,
              ttl: float = FAR) -> bool:
    """Enqueue an inbound item from source ``src`` with dedupe key ``key``."""
    return await store.enqueue("inbound", "src", key, thread, payload or key, ttl)


async def claim_one(store: Store, lease: float = FAR) -> OutboxItem:
    items = await store.claim(10, lease)
    assert len(items) == 1, items
    return items[0]


async def subscribed(url: str, prefix: str, count: int) -> None:
    """Wait until ``count`` Redis store instances listen for work announcements."""
    raw = aioredis.Redis.from_url(url)
    try:
        await eventually(lambda: raw.pubsub_numsub(f"{prefix}work"),
                         lambda found: found[0][1] >= count)
    finally:
        await raw.aclose()


async def quiet(backend: Backend, store: Store) -> None:
    """Let ``store`` settle and take any signal of work given so far (Redis: the one given
    when it subscribed to work announcements)."""
    if backend.kind == "redis":
        assert backend.redis_url is not None
        await subscribed(backend.redis_url, backend.prefix, 1)
    await store.wait_for_work(0.05)


async def taken_over(store: Store) -> tuple[OutboxItem, OutboxItem]:
    """Claim the head of thread ``t`` with a short lease, let the lease run out and claim
    it again: (the first claim, the second), as a slow attempt and its takeover."""
    slow = await claim_one(store, lease=0.2)
    [taken] = await eventually(lambda: store.claim(10, FAR), bool)
    assert taken.id == slow.id
    assert slow.claim is not None and taken.claim is not None and taken.claim != slow.claim
    return slow, taken


# --- accepting ----------------------------------------------------------------------------


async def test_enqueue_dedupes_per_source_and_key(store: Store) -> None:
    assert await put(store, "k1")
    assert not await put(store, "k1")
    assert await store.enqueue("inbound", "other", "k1", "t", "p", FAR)
    assert await store.seen("src", "k1")
    assert not await store.seen("src", "k2")
    assert await store.depth() == 2


async def test_dedupe_record_expires(store: Store) -> None:
    assert await put(store, "k1", ttl=0.2)
    assert not await put(store, "k1", ttl=0.2)
    await eventually(lambda: store.seen("src", "k1"), lambda seen: not seen)
    assert await put(store, "k1", ttl=0.2)
    assert await store.depth() == 2


async def test_item_round_trips(store: Store) -> None:
    payload = '{"text": "héllo\\nwörld ✓", "n": 1}'
    before = time.time()
    await store.enqueue("reply", "slack", "ev1", "slack\x1fC1:123.4", payload, FAR)
    item = await claim_one(store)
    assert (item.kind, item.source, item.thread, item.payload) == (
        "reply", "slack", "slack\x1fC1:123.4", payload)
    assert isinstance(item.id, str)
    assert before - 1 <= item.created_at <= time.time() + 1
    assert (item.attempts, item.last_error) == (0, None)


# --- claiming -----------------------------------------------------------------------------


async def test_claim_hands_out_only_thread_heads(store: Store) -> None:
    for key, thread in [("a", "t1"), ("b", "t1"), ("c", "t1"), ("d", "t2"), ("e", "t3")]:
        await put(store, key, thread)
    items = await store.claim(10, FAR)
    assert sorted(i.payload for i in items) == ["a", "d", "e"]
    assert await store.claim(10, FAR) == []  # every thread is leased


async def test_claim_respects_limit_and_order(store: Store) -> None:
    for n in range(5):
        await put(store, f"k{n}", f"t{n}")
    first = await store.claim(2, FAR)
    rest = await store.claim(10, FAR)
    assert [i.payload for i in first] == ["k0", "k1"]  # the longest-waiting threads first
    assert sorted(i.payload for i in rest) == ["k2", "k3", "k4"]


async def test_concurrent_claims_never_share_a_thread(backend: Backend) -> None:
    stores = [await backend.open()]
    if backend.kind == "redis":  # as several daemons would
        stores += [await backend.open(), await backend.open()]
    for t in range(20):
        for n in range(3):
            await put(stores[0], f"{t}.{n}", f"t{t}")
    batches = await asyncio.gather(*(stores[i % len(stores)].claim(3, FAR) for i in range(12)))
    threads = [item.thread for batch in batches for item in batch]
    assert len(threads) == len(set(threads)) == 20
    assert all(item.payload.endswith(".0") for batch in batches for item in batch)


async def test_expired_lease_is_claimed_again(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    first = await claim_one(store, lease=0.2)
    assert await store.claim(10, FAR) == []
    again = await eventually(lambda: store.claim(10, FAR), bool)
    assert [(i.id, i.payload, i.attempts) for i in again] == [(first.id, "a", 0)]


async def test_retry_delays_the_head_and_records_the_error(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    item = await claim_one(store)
    await store.retry(item, 0.3, "HTTP 503")
    assert await store.claim(10, FAR) == []  # neither the head nor the item behind it
    again = await eventually(lambda: store.claim(10, FAR), bool)
    assert [(i.id, i.attempts, i.last_error) for i in again] == [(item.id, 1, "HTTP 503")]
    await store.retry(again[0], 0, "HTTP 502")
    third = await claim_one(store)
    assert (third.id, third.attempts, third.last_error) == (item.id, 2, "HTTP 502")


async def test_complete_makes_the_next_item_due(store: Store) -> None:
    for key in "abc":
        await put(store, key)
    seen = []
    for _ in range(3):
        item = await claim_one(store)
        assert await store.claim(10, FAR) == []
        seen.append(item.payload)
        await store.complete(item)
    assert seen == ["a", "b", "c"]
    assert await store.claim(10, FAR) == []
    assert await store.depth() == 0


async def test_late_complete_after_takeover_keeps_the_new_lease(store: Store) -> None:
    """A worker whose lease ran out completes late: the item goes once, and the lease
    another worker holds on the thread's next item stays (never two of one thread)."""
    await put(store, "a")
    await put(store, "b")
    slow = await claim_one(store, lease=0.2)
    taken = (await eventually(lambda: store.claim(10, FAR), bool))[0]
    assert taken.id == slow.id
    await store.complete(taken)
    following = await claim_one(store)
    assert following.payload == "b"
    await store.complete(slow)  # the slow worker finally finishes
    assert await store.claim(10, FAR) == []
    assert await store.depth() == 1
    await store.complete(following)
    assert await store.depth() == 0


async def test_late_complete_before_the_takeover_ends_keeps_its_lease(store: Store) -> None:
    """The first attempt completes while the second (same item, same process) still runs:
    the item is done, but the thread stays leased to the second attempt."""
    await put(store, "a")
    await put(store, "b")
    slow, taken = await taken_over(store)
    await store.complete(slow)
    assert await store.depth() == 1
    assert await store.claim(10, FAR) == []  # "b" waits for the second attempt to end
    await store.complete(taken)
    assert (await claim_one(store)).payload == "b"
    assert await store.depth() == 1


async def test_late_retry_during_the_takeover_is_ignored(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    slow, taken = await taken_over(store)
    await store.retry(slow, 0, "timed out")
    assert await store.claim(10, FAR) == []  # neither "a" again nor "b"
    await store.retry(taken, 0, "HTTP 503")
    again = await claim_one(store)
    assert (again.id, again.attempts, again.last_error) == (slow.id, 1, "HTTP 503")


async def test_late_retry_after_the_item_is_done_keeps_the_next_claim(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    slow, taken = await taken_over(store)
    await store.complete(taken)
    following = await claim_one(store)
    assert following.payload == "b"
    await store.retry(slow, 0, "timed out")
    await store.retry(dataclasses.replace(slow, claim=None), 0, "timed out")  # tokenless too
    assert await store.claim(10, FAR) == []  # "b" is still leased
    assert (await store.stats()).in_flight == 1
    await store.complete(following)
    assert await store.depth() == 0


async def test_late_dead_letter_during_the_takeover_is_ignored(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    slow, taken = await taken_over(store)
    await store.dead_letter(slow, "gave up", None)
    assert await store.claim(10, FAR) == []
    assert await store.dead_letters() == []  # the second attempt decides
    assert await store.depth() == 2
    await store.complete(taken)
    assert (await claim_one(store)).payload == "b"


async def test_retry_of_an_item_completed_late_hands_the_thread_on(store: Store) -> None:
    """The second attempt fails after the first one's late complete removed the item: the
    thread is released at once (not when the second attempt's lease runs out)."""
    await put(store, "a")
    await put(store, "b")
    slow, taken = await taken_over(store)
    await store.complete(slow)
    await store.retry(taken, FAR, "HTTP 503")
    assert (await claim_one(store)).payload == "b"


async def test_items_without_a_claim_token_still_complete(store: Store) -> None:
    """An ``OutboxItem`` built without ``claim`` (older callers) acts as before."""
    await put(store, "a")
    await put(store, "b")
    a = await claim_one(store)
    await store.complete(dataclasses.replace(a, claim=None))
    b = await claim_one(store)
    assert b.payload == "b"
    await store.retry(dataclasses.replace(b, claim=None), 0, "HTTP 503")
    b = await claim_one(store)
    assert (b.payload, b.attempts) == ("b", 1)
    await store.dead_letter(dataclasses.replace(b, claim=None), "bad", None)
    assert await store.depth() == 0
    assert [d.payload for d in await store.dead_letters()] == ["b"]


# --- dead letters -------------------------------------------------------------------------


async def test_dead_letter_keeps_the_item_and_the_thread_moves_on(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    item = await claim_one(store)
    await store.retry(item, 0, "HTTP 500")
    item = await claim_one(store)
    before = time.time()
    await store.dead_letter(item, "HTTP 422: invalid", '{"error": "invalid"}')
    assert (await claim_one(store)).payload == "b"
    assert await store.depth() == 1
    [letter] = await store.dead_letters()
    assert (letter.kind, letter.source, letter.thread, letter.payload) == (
        "inbound", "src", "t", "a")
    assert letter.created_at == pytest.approx(item.created_at, abs=1e-3)
    assert before - 1 <= letter.failed_at <= time.time() + 1
    assert letter.attempts == 2
    assert (letter.reason, letter.response) == ("HTTP 422: invalid", '{"error": "invalid"}')
    assert await store.get_dead_letter(letter.id) == letter
    assert (await store.stats()).dead_letters == 1


async def test_dead_letter_without_response(store: Store) -> None:
    await put(store, "a")
    await store.dead_letter(await claim_one(store), "internal error", None)
    [letter] = await store.dead_letters()
    assert letter.response is None
    assert await store.depth() == 0
    assert await store.claim(10, FAR) == []


async def test_dead_letters_oldest_first_with_limit(store: Store) -> None:
    for n in range(3):
        await put(store, f"k{n}", f"t{n}")
    for item in sorted(await store.claim(10, FAR), key=lambda i: i.payload):
        await store.dead_letter(item, f"bad {item.payload}", None)
    assert [d.payload for d in await store.dead_letters()] == ["k0", "k1", "k2"]
    assert [d.payload for d in await store.dead_letters(limit=2)] == ["k0", "k1"]


async def test_replay_puts_the_letter_at_the_end_of_its_thread(store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    a = await claim_one(store)
    await store.retry(a, 0, "HTTP 503")
    a = await claim_one(store)
    await store.dead_letter(a, "bad", None)
    [letter] = await store.dead_letters()
    assert letter.created_at == pytest.approx(a.created_at, abs=1e-3)
    await asyncio.sleep(0.3)
    before = time.time()
    assert await store.replay_dead_letter(letter.id)
    assert await store.dead_letters() == []
    assert await store.get_dead_letter(letter.id) is None
    assert await store.depth() == 2
    b = await claim_one(store)
    assert b.payload == "b"
    await store.complete(b)
    again = await claim_one(store)
    assert (again.payload, again.attempts, again.last_error, again.thread) == (
        "a", 0, None, "t")
    # A new item: its age counts from the replay (the retry policy's max age, latency).
    assert before - 0.05 <= again.created_at <= time.time() + 0.05
    assert (await store.stats()).oldest_created_at == pytest.approx(again.created_at,
                                                                    abs=1e-3)
    assert not await store.replay_dead_letter(letter.id)


async def test_last_dead_letter(store: Store) -> None:
    assert await store.last_dead_letter() is None
    for n in range(3):
        await put(store, f"k{n}", f"t{n}")
    for item in sorted(await store.claim(10, FAR), key=lambda i: i.payload):
        await store.dead_letter(item, f"bad {item.payload}", '{"n": 1}' if item.payload == "k2"
                                else None)
    last = await store.last_dead_letter()
    assert last is not None
    assert (last.payload, last.reason, last.response) == ("k2", "bad k2", '{"n": 1}')
    assert last == (await store.dead_letters())[-1] == await store.get_dead_letter(last.id)
    assert await store.drop_dead_letter(last.id)
    last = await store.last_dead_letter()
    assert last is not None and (last.payload, last.response) == ("k1", None)
    assert await store.replay_dead_letter(last.id)
    assert (await store.last_dead_letter()) == (await store.dead_letters())[-1]
    assert [d.payload for d in await store.dead_letters()] == ["k0"]
    for letter in await store.dead_letters():
        await store.drop_dead_letter(letter.id)
    assert await store.last_dead_letter() is None


async def test_drop_dead_letter(store: Store) -> None:
    await put(store, "a")
    await store.dead_letter(await claim_one(store), "bad", None)
    [letter] = await store.dead_letters()
    assert await store.drop_dead_letter(letter.id)
    assert await store.get_dead_letter(letter.id) is None
    assert not await store.drop_dead_letter(letter.id)
    assert (await store.stats()).dead_letters == 0
    assert await store.depth() == 0


@pytest.mark.parametrize("letter_id", ["999999", "nope", ""])
async def test_unknown_dead_letters(store: Store, letter_id: str) -> None:
    assert await store.get_dead_letter(letter_id) is None
    assert not await store.replay_dead_letter(letter_id)
    assert not await store.drop_dead_letter(letter_id)


# --- key-value ----------------------------------------------------------------------------


async def test_kv_set_get_delete(store: Store) -> None:
    assert await store.kv_get("contact", "1|form|a@example.com") is None
    await store.kv_set("contact", "1|form|a@example.com", "42")
    assert await store.kv_get("contact", "1|form|a@example.com") == "42"
    await store.kv_set("contact", "1|form|a@example.com", "43")
    assert await store.kv_get("contact", "1|form|a@example.com") == "43"
    assert await store.kv_get("conversation", "1|form|a@example.com") is None
    await store.kv_delete("contact", "1|form|a@example.com")
    assert await store.kv_get("contact", "1|form|a@example.com") is None
    await store.kv_delete("contact", "never set")


async def test_kv_namespaces_do_not_run_into_keys(store: Store) -> None:
    await store.kv_set("a", "b:c", "1")
    await store.kv_set("a:b", "c", "2")
    assert await store.kv_get("a", "b:c") == "1"
    assert await store.kv_get("a:b", "c") == "2"


async def test_kv_ttl(store: Store) -> None:
    await store.kv_set("plugin:x", "short", "v", ttl=0.2)
    await store.kv_set("plugin:x", "long", "v", ttl=FAR)
    await store.kv_set("plugin:x", "kept", "v", ttl=0.2)
    await store.kv_set("plugin:x", "kept", "w")  # set again without a ttl: kept for good
    assert await store.kv_get("plugin:x", "short") == "v"
    await eventually(lambda: store.kv_get("plugin:x", "short"), lambda v: v is None)
    assert await store.kv_get("plugin:x", "long") == "v"
    assert await store.kv_get("plugin:x", "kept") == "w"


# --- locks --------------------------------------------------------------------------------


async def hammer(stores: list[Store], name: str, tasks: int = 8, rounds: int = 5) -> int:
    """Run ``tasks`` tasks that take the lock ``rounds`` times; the most ever inside."""
    inside = most = 0

    async def worker(store: Store) -> None:
        nonlocal inside, most
        for _ in range(rounds):
            async with store.lock(name, timeout=10):
                inside += 1
                most = max(most, inside)
                await asyncio.sleep(0.002)  # hold it across a suspension point
                inside -= 1

    await asyncio.gather(*(worker(stores[i % len(stores)]) for i in range(tasks)))
    return most


async def test_lock_mutual_exclusion(store: Store) -> None:
    assert await hammer([store], "contact:1|form|a") == 1


async def test_locks_with_different_names_do_not_block(store: Store) -> None:
    async with store.lock("contact:a", timeout=1):
        await asyncio.wait_for(_enter(store, "contact:b"), 2)


async def _enter(store: Store, name: str) -> None:
    async with store.lock(name, timeout=1):
        pass


async def test_lock_is_released_on_error(store: Store) -> None:
    with pytest.raises(RuntimeError):
        async with store.lock("x", timeout=1):
            raise RuntimeError("boom")
    await asyncio.wait_for(_enter(store, "x"), 2)


# --- figures and lifecycle ----------------------------------------------------------------


async def test_depth_and_stats(store: Store) -> None:
    stats = await store.stats()
    assert (stats.depth, stats.oldest_created_at, stats.in_flight, stats.dead_letters) == (
        0, None, 0, 0)
    await put(store, "a", "t1")
    await put(store, "b", "t1")
    await put(store, "c", "t2")
    await put(store, "d", "t3")
    assert await store.depth() == 4
    items = {i.payload: i for i in await store.claim(10, FAR)}
    stats = await store.stats()
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (4, 3, 0)
    assert stats.oldest_created_at == pytest.approx(items["a"].created_at, abs=1e-3)
    await store.retry(items["c"], FAR, "later")
    await store.complete(items["a"])
    await store.dead_letter(items["d"], "bad", None)
    stats = await store.stats()
    assert (stats.depth, stats.in_flight, stats.dead_letters) == (2, 0, 1)
    assert await store.depth() == 2
    b = await claim_one(store)
    assert (await store.stats()).oldest_created_at == pytest.approx(b.created_at, abs=1e-3)


async def test_depth_follows_changes_by_other_processes(backend: Backend) -> None:
    """The daemon's depth (its outbox-full check) sees what the CLI (``dlq replay``, another
    store instance) changed, without waiting for ``stats()``."""
    daemon = await backend.open()
    if isinstance(daemon, SQLiteStore):
        assert daemon.depth_resync <= 5.0
        daemon.depth_resync = 0.2
    await put(daemon, "a")
    await daemon.dead_letter(await claim_one(daemon), "bad", None)
    assert await daemon.depth() == 0
    cli = await backend.open()
    [letter] = await cli.dead_letters()
    assert await cli.replay_dead_letter(letter.id)
    await eventually(daemon.depth, lambda n: n == 1, timeout=3)


async def test_release_all_loses_nothing(store: Store) -> None:
    await put(store, "a")
    await claim_one(store, lease=0.3)
    await store.release_all()
    assert await store.depth() == 1
    # SQLite: one daemon owns the file, so its leases are released at once. Redis: other
    # daemons may hold them, so they are left to run out.
    expected_now = 1 if store.kind == "sqlite" else 0
    assert len(await store.claim(10, FAR)) == expected_now
    if not expected_now:
        await eventually(lambda: store.claim(10, FAR), bool)


async def test_wait_for_work_wakes_on_enqueue(backend: Backend, store: Store) -> None:
    await quiet(backend, store)
    waiter = asyncio.create_task(store.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiter.done()  # it waits for work...
    await put(store, "a")
    await asyncio.wait_for(waiter, 5)  # ...and the enqueue wakes it


async def test_wait_for_work_wakes_when_a_thread_moves_on(backend: Backend,
                                                         store: Store) -> None:
    await put(store, "a")
    await put(store, "b")
    item = await claim_one(store)
    await quiet(backend, store)
    waiter = asyncio.create_task(store.wait_for_work(30))
    await asyncio.sleep(0.1)
    assert not waiter.done()
    await store.complete(item)  # "b" is due now
    await asyncio.wait_for(waiter, 5)


async def test_wait_for_work_returns_after_timeout(backend: Backend, store: Store) -> None:
    await quiet(backend, store)
    started = time.monotonic()
    await store.wait_for_work(0.1)
    await store.wait_for_work(0.1)
    assert 0.19 <= time.monotonic() - started < 2


async def test_purge_expired_keeps_live_data(store: Store) -> None:
    await put(store, "old", ttl=0.1)
    await put(store, "live")
    await store.kv_set("ns", "old", "v", ttl=0.1)
    await store.kv_set("ns", "live", "v")
    await eventually(lambda: store.kv_get("ns", "old"), lambda v: v is None)
    await eventually(lambda: store.seen("src", "old"), lambda seen: not seen)
    purged = await store.purge_expired()
    # SQLite deletes the expired dedupe record and key; Redis expires them by itself.
    assert purged == (2 if store.kind == "sqlite" else 0)
    assert await store.purge_expired() == 0
    assert await store.depth() == 2  # purging forgets dedupe records, never items
    assert await store.seen("src", "live")
    assert await store.kv_get("ns", "live") == "v"
    assert await store.kv_get("ns", "old") is None


async def test_everything_survives_reopening(backend: Backend) -> None:
    store = await backend.open()
    await put(store, "a")
    await put(store, "b")
    await store.kv_set("contact", "k", "7")
    await store.dead_letter(await claim_one(store, lease=0.1), "bad", None)
    await backend.close(store)
    store = await backend.open()
    assert await store.depth() == 1
    assert await store.seen("src", "a")
    assert await store.kv_get("contact", "k") == "7"
    assert [d.payload for d in await store.dead_letters()] == ["a"]
    assert (await claim_one(store)).payload == "b"
    assert not await put(store, "b")


async def test_ping_answers_when_open(store: Store) -> None:
    await store.ping()


# --- routes ----------------------------------------------------------------------------------


async def put_on(store: Store, key: str, thread: str, route: str) -> bool:
    return await store.enqueue("inbound", "src", key, thread, key, FAR, route=route)


async def test_claim_hands_out_only_the_routes_items(store: Store) -> None:
    await put_on(store, "in1", "t1", "livedesk")
    await put_on(store, "r1", "t2", "reply:slack")
    await put_on(store, "in2", "t3", "livedesk")
    replies = await store.claim(10, FAR, route="reply:slack")
    assert [(i.payload, i.route) for i in replies] == [("r1", "reply:slack")]
    assert await store.claim(10, FAR, route="reply:mail") == []
    inbound = await store.claim(1, FAR, route="livedesk")
    assert [(i.payload, i.route) for i in inbound] == [("in1", "livedesk")]
    assert [i.payload for i in await store.claim(10, FAR)] == ["in2"]  # any route
    await store.complete(replies[0])
    await put_on(store, "r2", "t2", "reply:slack")
    assert [i.payload for i in await store.claim(10, FAR, route="reply:slack")] == ["r2"]


async def test_a_thread_keeps_its_route_through_retries_and_replays(store: Store) -> None:
    await put_on(store, "a", "t", "reply:slack")
    await put_on(store, "b", "t", "reply:slack")
    [a] = await store.claim(10, FAR, route="reply:slack")
    await store.retry(a, 0, "HTTP 503")
    [a] = await store.claim(10, FAR, route="reply:slack")
    await store.dead_letter(a, "gone", None)
    [b] = await store.claim(10, FAR, route="reply:slack")
    await store.complete(b)
    [letter] = await store.dead_letters()
    assert await store.replay_dead_letter(letter.id)
    assert await store.claim(10, FAR, route="livedesk") == []
    [again] = await store.claim(10, FAR, route="reply:slack")
    assert again.payload == "a"


async def test_retry_without_counting_keeps_attempts_and_error(store: Store) -> None:
    await put(store, "a")
    item = await claim_one(store)
    await store.retry(item, 0, "HTTP 503")
    item = await claim_one(store)
    await store.retry(item, 0.3, "HTTP 429", count=False)
    assert await store.claim(10, FAR) == []  # still delayed
    again = await eventually(lambda: store.claim(10, FAR), bool)
    assert [(i.id, i.attempts, i.last_error) for i in again] == [(item.id, 1, "HTTP 503")]


async def test_a_store_written_before_routes_opens_with_its_routes(backend: Backend) -> None:
    """Threads written without routes get them from their keys: ``reply\\x1f<source>\\x1f...``
    is ``reply:<source>``, anything else ``livedesk``."""
    store = await backend.open()
    await store.enqueue("inbound", "slack", "e1", "slack\x1fC1", "in", FAR)
    await store.enqueue("reply", "slack", "r1", "reply\x1fslack\x1fC1", "out", FAR)
    await backend.close(store)
    await _forget_routes(backend)
    store = await backend.open()
    [reply] = await store.claim(10, FAR, route="reply:slack")
    [inbound] = await store.claim(10, FAR, route="livedesk")
    assert (reply.payload, inbound.payload) == ("out", "in")
    await store.complete(reply)
    await store.complete(inbound)
    assert (await store.stats()).depth == 0


async def _forget_routes(backend: Backend) -> None:
    """Rewrite the storage as a livebridge without routes left it."""
    if backend.kind == "sqlite":
        with sqlite3.connect(backend.path) as conn:
            conn.executescript(
                "DROP INDEX threads_route_due;"
                "CREATE TABLE old (thread TEXT PRIMARY KEY, due_at REAL NOT NULL,"
                " leased_until REAL NOT NULL DEFAULT 0, claim TEXT) WITHOUT ROWID;"
                "INSERT INTO old SELECT thread, due_at, leased_until, claim FROM threads;"
                "DROP TABLE threads; ALTER TABLE old RENAME TO threads;"
                "ALTER TABLE dead_letters DROP COLUMN route;"
            )
        return
    assert backend.redis_url is not None
    raw = aioredis.Redis.from_url(backend.redis_url, decode_responses=True)
    try:
        p = backend.prefix
        for route in await raw.smembers(p + "routes"):
            scored = dict(await raw.zrange(f"{p}due:{route}", 0, -1, withscores=True))
            await raw.zadd(p + "due", scored)
            await raw.delete(f"{p}due:{route}")
        await raw.delete(p + "routes")
    finally:
        await raw.aclose()
