"""The ``commit`` scenario: durable enqueues per second with group commit, against one commit
per enqueue.

Each side is its own process (``python -m benchmarks.group_commit --side ...``) that makes a
fresh SQLite file (WAL, ``synchronous=FULL``) and enqueues N items from 32 concurrent tasks,
customers spread over 1,000 threads, then prints its rate and CPU per enqueue. ``livebridge``
is ``SQLiteStore.enqueue`` as the daemon uses it; the reference runs the same statements on
one connection in one worker thread and commits each enqueue on its own (what a store without
group commit does). Both make an enqueue durable before it returns.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.run import Bench, Check, Report, Table, log, scenario
from livebridge._store.sqlite import SQLiteStore, enqueue_op

__all__ = ["commit"]

TASKS = 32
PAYLOAD = "x" * 400  # about the size of a form message's JSON
SIDES = {"livebridge": "livebridge (group commit)",
         "single": "one commit per enqueue (reference)"}


def _enqueue_alone(conn: sqlite3.Connection, i: int) -> None:
    """``SQLiteStore.enqueue``'s statements in a transaction of their own."""
    conn.execute("BEGIN IMMEDIATE")
    enqueue_op(conn, "inbound", "form", f"e{i}", f"c{i % 1000}", PAYLOAD, 86400)
    conn.execute("COMMIT")


async def _side(side: str, total: int, path: Path) -> dict[str, float]:
    store = SQLiteStore(path, synchronous="full")  # creates the schema (both sides use it)
    await store.open()
    conn: sqlite3.Connection | None = None
    executor = ThreadPoolExecutor(max_workers=1)
    if side == "single":
        await store.close()
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA synchronous=FULL")
    loop = asyncio.get_running_loop()
    counter = iter(range(total))

    async def worker() -> None:
        for i in counter:
            if conn is None:
                await store.enqueue("inbound", "form", f"e{i}", f"c{i % 1000}", PAYLOAD, 86400)
            else:
                await loop.run_in_executor(executor, _enqueue_alone, conn, i)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(TASKS)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if conn is not None:
        stored = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
        conn.close()
    else:
        stored = (await store.stats()).depth
        await store.close()
    executor.shutdown()
    if stored != total:
        raise RuntimeError(f"{side}: {stored} items stored, {total} enqueued")
    return {"rate": total / elapsed, "cpu_us": cpu / total * 1e6}


@scenario("commit")
async def commit(b: Bench) -> Report:
    """Durable enqueues per second: group commit against one commit per enqueue."""
    total, rounds = (2000, 1) if b.quick else (20_000, 3)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for i in range(rounds):
        for side, label in SIDES.items():
            log(f"commit round {i + 1}/{rounds}: {label}")
            await b.quiet()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "benchmarks.group_commit", "--side", side,
                "--total", str(total), "--dir", str(b.workdir),
                stdout=asyncio.subprocess.PIPE)
            out, _ = await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"the {side} side failed (exit {proc.returncode})")
            runs[side].append(json.loads(out))
    median = {side: statistics.median(r["rate"] for r in rs) for side, rs in runs.items()}
    rows = [[SIDES[side], str(j + 1), f"{r['rate']:,.0f}", f"{r['cpu_us']:.0f}"]
            for side, rs in runs.items() for j, r in enumerate(rs)]
    ratio = median["livebridge"] / median["single"]
    return Report(
        "commit", f"Group commit: {total:,} durable enqueues from {TASKS} tasks",
        tables=[Table(["side", "run", "enqueues/s", "CPU µs/enqueue"], rows)],
        checks=[Check("group commit vs one commit per enqueue (medians)", "faster",
                      f"{ratio:.1f}x ({median['livebridge']:,.0f} / {median['single']:,.0f} "
                      "enqueues/s)", ratio > 1)],
        notes=[f"Each side in its own process on a fresh file (WAL, synchronous=FULL); "
               f"{rounds} alternating round(s); items spread over 1,000 threads, a 400-byte "
               "payload each. The reference runs SQLiteStore.enqueue's statements on one "
               "connection in one worker thread, one transaction (one fsync) per enqueue."],
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.group_commit")
    parser.add_argument("--side", choices=list(SIDES), required=True)
    parser.add_argument("--total", type=int, default=20_000)
    parser.add_argument("--dir", default=None, help="where the SQLite file goes")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        result = asyncio.run(_side(args.side, args.total, Path(tmp) / "store.db"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
