"""Three daemons share one Redis; 10,000 form posts from 500 senders go to all three at once
and one daemon is SIGKILLed midway. Afterwards Livedesk holds one contact per sender, one
conversation per thread, every acknowledged message, in order per thread; the only
duplicates are deliveries the killed daemon had in flight (taken over after its lease)."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from livebridge.testing import Process, daemon_process, emulator_process

pytestmark = [pytest.mark.slow, pytest.mark.redis]

DAEMONS = 3
SENDERS = 500
PER_SENDER = 20
IN_FLIGHT = 48  # posts on the wire at once
KILL_AFTER = SENDERS * PER_SENDER // 2  # acknowledgements before the SIGKILL
CONCURRENCY = 32  # deliveries per daemon
LEASE = 5.0
TOKEN = re.compile(r"^s(\d+)#(\d+)$")


REDIS = "redis://127.0.0.1:6379/0"  # .ci/run starts a server there when none answers


@pytest.fixture
async def redis_url() -> AsyncIterator[str]:
    """The shared Redis with a key prefix of this run's own, deleted afterwards."""
    raw = aioredis.Redis.from_url(REDIS, socket_connect_timeout=1)
    try:
        await raw.ping()
    except (aioredis.RedisError, OSError):
        await raw.aclose()
        pytest.skip(f"no Redis answers at {REDIS}")
    prefix = f"lbmulti:{uuid.uuid4().hex}:"
    try:
        yield f"{REDIS}?prefix={prefix}"
    finally:
        keys = [key async for key in raw.scan_iter(match=f"{prefix}*", count=1000)]
        for i in range(0, len(keys), 500):
            await raw.delete(*keys[i:i + 500])
        await raw.aclose()


class Load:
    """Posts every sender's messages in order, each until a daemon acknowledges it."""

    def __init__(self, session: aiohttp.ClientSession, daemons: list[Process]) -> None:
        self.session = session
        self.daemons = daemons
        self.acked: list[tuple[int, int]] = []
        self.resent = 0  # posts repeated on another daemon after a failure
        self.kill_now = asyncio.Event()
        self._slots = asyncio.Semaphore(IN_FLIGHT)
        self._turn = itertools.count()

    async def run(self) -> None:
        await asyncio.gather(*(self._sender(s) for s in range(SENDERS)))

    async def _sender(self, s: int) -> None:
        for seq in range(PER_SENDER):
            await self._post(s, seq)
            self.acked.append((s, seq))
            if len(self.acked) == KILL_AFTER:
                self.kill_now.set()

    async def _post(self, s: int, seq: int) -> None:
        body = {"name": f"Sender {s}", "email": f"s{s}@example.com", "message": f"s{s}#{seq}"}
        # The form dedupes a repeated key, so a post repeated after a lost answer is one item.
        headers = {"Accept": "application/json", "Idempotency-Key": f"s{s}-{seq}"}
        turn = next(self._turn)
        for attempt in range(100):
            daemon = self.daemons[(turn + attempt) % len(self.daemons)]
            async with self._slots:
                try:
                    async with self.session.post(f"{daemon.url}/form", json=body,
                                                 headers=headers) as resp:
                        if resp.status == 200:
                            return
                except (aiohttp.ClientError, OSError):
                    pass  # the daemon is gone: try the next one
            self.resent += 1
            await asyncio.sleep(0.01 * min(attempt, 10))
        raise AssertionError(f"s{s}#{seq} was never acknowledged")


async def emulator_state(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/_emulator/state") as resp:
        state: dict[str, Any] = await resp.json()
    return state


async def test_three_daemons_one_redis_one_killed(tmp_path: Path, redis_url: str) -> None:
    started = time.monotonic()
    emulator = await asyncio.to_thread(emulator_process(tmp_path, latency=0.005).start)
    config = {
        "livedesk": {"base_url": emulator.url, "api_key": "emulator", "api_secret": "emulator",
                     "inbox_id": 1},
        "store": {"url": redis_url},
        "delivery": {"concurrency": CONCURRENCY, "lease": LEASE, "initial_backoff": 0.05,
                     "max_backoff": 0.5, "rate_limit": 0},
        "sources": [{"type": "form", "rate_limit": 0}],
    }
    daemons = [daemon_process(config, tmp_path, name=f"daemon{i}") for i in range(DAEMONS)]
    victim = daemons[1]
    url, _, prefix = redis_url.partition("?prefix=")
    raw = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        await asyncio.gather(*(asyncio.to_thread(d.start) for d in daemons))
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            load = Load(session, daemons)
            sending = asyncio.create_task(load.run())
            await load.kill_now.wait()
            victim.kill()
            killed_at = time.monotonic()
            acked_at_kill = len(load.acked)
            leases_at_kill = await raw.hgetall(f"{prefix}leases")
            await asyncio.wait_for(sending, 180)
            sent = time.monotonic()
            assert acked_at_kill < SENDERS * PER_SENDER, "the kill came after the load"

            # Poll (another process's state) until all is delivered and the outbox is empty.
            wanted = set(load.acked)
            deadline = time.monotonic() + 120
            while True:
                idle = (await raw.zcard(f"{prefix}items")) == 0
                state = await emulator_state(session, emulator.url)
                found = {_token(m) for m in state["messages"]}
                if idle and wanted <= found:
                    break
                assert time.monotonic() < deadline, (
                    f"{len(wanted - found)} acknowledged messages missing after 120 s")
                await asyncio.sleep(0.25)
        done = time.monotonic()

        contacts, conversations = state["contacts"], state["conversations"]
        assert len(contacts) == SENDERS
        assert sorted(c["email"] for c in contacts) == sorted(
            f"s{s}@example.com" for s in range(SENDERS))
        assert len(conversations) == SENDERS
        assert len({c["account_info"]["contact_id"] for c in conversations}) == SENDERS

        per_thread: dict[int, list[int]] = defaultdict(list)
        conversation_of: dict[int, set[int]] = defaultdict(set)
        for message in sorted(state["messages"], key=lambda m: m["id"]):
            s, seq = _token(message)
            per_thread[s].append(seq)
            conversation_of[s].add(message["conversation_id"])
        assert all(len(ids) == 1 for ids in conversation_of.values())
        duplicates = 0
        for s, seqs in per_thread.items():
            first = list(dict.fromkeys(seqs))
            assert first == sorted(first), f"sender {s} out of order: {seqs}"
            acked = [seq for (t, seq) in load.acked if t == s]
            assert set(acked) <= set(first)
            if len(seqs) > len(first):  # redelivered: only what was leased at the kill
                assert f"form\x1fs{s}@example.com" in leases_at_kill, seqs
                duplicates += len(seqs) - len(first)
        assert duplicates <= CONCURRENCY  # at most what the killed daemon had in flight
        contact_posts = _calls(state, "POST", "/contacts")
        print(
            f"\nmulti-daemon: {len(load.acked)} acknowledged ({acked_at_kill} before the "
            f"SIGKILL), {load.resent} posts repeated on another daemon, "
            f"{len(leases_at_kill)} threads leased at the kill, {duplicates} duplicate "
            f"deliveries, contact creations by status {contact_posts}; "
            f"start {killed_at - started:.1f} s to kill, sending done "
            f"{sent - started:.1f} s, all delivered {done - started:.1f} s")
        assert "422" not in contact_posts  # no two daemons raced to create one contact
    finally:
        await raw.aclose()
        for daemon in daemons:
            if daemon is not victim:
                daemon.stop()
        emulator.stop()


def _token(message: dict[str, Any]) -> tuple[int, int]:
    match = TOKEN.match(message["content"])
    assert match, message["content"]
    return int(match[1]), int(match[2])


def _calls(state: dict[str, Any], method: str, suffix: str) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for route, by_status in state["calls"].items():
        if route.startswith(method) and route.endswith(suffix):
            counts.update(by_status)
    return dict(counts)
