"""A real daemon under load is SIGKILLed mid-stream and restarted: nothing acknowledged is lost,
per-thread order holds, and duplicates are limited to what was in flight at the kill."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from livebridge.testing import daemon_process, emulator_process

pytestmark = pytest.mark.slow

SENDERS = 40
PER_SENDER = 25
CONCURRENCY = 16
TOKEN = re.compile(r"s(\d+)#(\d+)")


async def emulator_messages(session: aiohttp.ClientSession, url: str) -> list[dict[str, Any]]:
    async with session.get(f"{url}/_emulator/state") as resp:
        state = await resp.json()
    messages: list[dict[str, Any]] = state["messages"]
    return messages


async def send_all(session: aiohttp.ClientSession, url: str, acked: list[tuple[int, int]],
                   kill_after: int, killed: asyncio.Event) -> None:
    """Each sender posts its messages in order, each until acknowledged (like a provider)."""

    async def sender(s: int) -> None:
        for seq in range(PER_SENDER):
            body = {"name": f"Sender {s}", "email": f"s{s}@example.com",
                    "message": f"s{s}#{seq}"}
            headers = {"Accept": "application/json", "Idempotency-Key": f"s{s}-{seq}"}
            while True:
                try:
                    async with session.post(f"{url}/form", json=body, headers=headers) as resp:
                        if resp.status == 200:
                            break
                except (aiohttp.ClientError, OSError):
                    pass
                await asyncio.sleep(0.05)  # the daemon is down: retry like a provider would
            acked.append((s, seq))
            if len(acked) == kill_after:
                killed.set()

    await asyncio.gather(*(sender(s) for s in range(SENDERS)))


async def test_sigkill_mid_stream_loses_nothing(tmp_path: Path) -> None:
    emulator = emulator_process(tmp_path, latency=0.01).start()
    config = {
        "livedesk": {"base_url": emulator.url, "api_key": "emulator",
                     "api_secret": "emulator", "inbox_id": 1},
        "store": {"url": f"sqlite:///{tmp_path / 'crash.db'}"},
        "delivery": {"concurrency": CONCURRENCY, "lease": 5, "initial_backoff": 0.05,
                     "max_backoff": 0.5, "rate_limit": 0},
        "sources": [{"type": "form", "rate_limit": 0}],
    }
    daemon = daemon_process(config, tmp_path).start()
    acked: list[tuple[int, int]] = []
    killed = asyncio.Event()
    try:
        async with aiohttp.ClientSession() as session:
            load = asyncio.create_task(send_all(session, daemon.url, acked, 400, killed))
            await killed.wait()
            daemon.kill()
            killed_at = len(acked)
            await asyncio.to_thread(daemon.start)
            await asyncio.wait_for(load, 120)
            assert killed_at < SENDERS * PER_SENDER, "the kill came after the load"

            deadline = time.monotonic() + 60
            while True:
                messages = await emulator_messages(session, emulator.url)
                delivered = {TOKEN.search(m["content"]).groups() for m in messages}  # type: ignore[union-attr]
                if all((str(s), str(q)) in delivered for s, q in acked):
                    break
                assert time.monotonic() < deadline, "acknowledged messages missing"
                await asyncio.sleep(0.2)  # polling another process's state
            state = await (await session.get(f"{emulator.url}/_emulator/state")).json()
    finally:
        daemon.stop()
        emulator.stop()

    per_thread: dict[int, list[int]] = defaultdict(list)
    for m in sorted(messages, key=lambda m: m["id"]):
        seq = int(TOKEN.search(m["content"]).group(2))  # type: ignore[union-attr]
        per_thread[m["conversation_id"]].append(seq)
    for seqs in per_thread.values():
        unique = [q for i, q in enumerate(seqs) if i == 0 or q != seqs[i - 1]]
        assert unique == sorted(unique), f"out of order: {seqs}"
    copies = Counter((m["conversation_id"], m["content"]) for m in messages)
    duplicates = sum(n - 1 for n in copies.values())
    assert duplicates <= CONCURRENCY, f"{duplicates} duplicates > {CONCURRENCY} in flight"
    assert len(state["contacts"]) == SENDERS
    assert len(state["conversations"]) == SENDERS
    assert len(acked) == SENDERS * PER_SENDER
    print(json.dumps({"acked": len(acked), "killed_after": killed_at,
                      "delivered": len(messages), "duplicates": duplicates}))
