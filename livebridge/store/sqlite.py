"""The SQLite store: one file in WAL mode, owned by one daemon, with group commit.

Every operation runs on one connection in one worker thread. Operations that arrive while a
transaction is being written wait and then share the next transaction, so many concurrent
accepts cost one commit (one fsync) instead of one each.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from livebridge.exceptions import LivebridgeError, StoreUnavailable
from livebridge.store.base import DeadLetter, OutboxItem, OutboxStats, Store

__all__ = ["SQLiteStore"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, source TEXT NOT NULL, thread TEXT NOT NULL, payload TEXT NOT NULL,
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_thread ON outbox (thread, id);
CREATE TABLE IF NOT EXISTS threads (
    thread TEXT PRIMARY KEY, due_at REAL NOT NULL, leased_until REAL NOT NULL DEFAULT 0
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS threads_due ON threads (due_at);
CREATE TABLE IF NOT EXISTS seen (
    source TEXT NOT NULL, key TEXT NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (source, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    ns TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, source TEXT NOT NULL, thread TEXT NOT NULL, payload TEXT NOT NULL,
    created_at REAL NOT NULL, failed_at REAL NOT NULL, attempts INTEGER NOT NULL,
    reason TEXT NOT NULL, response TEXT
);
"""

_Op = Callable[[sqlite3.Connection], Any]


class SQLiteStore(Store):
    """A ``Store`` in one SQLite file (``sqlite:///path/to/file.db``)."""

    kind = "sqlite"

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "full",
                 exclusive: bool = True) -> None:
        self.path = Path(path)
        self.exclusive = exclusive
        self._synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livebridge-sqlite")
        self._pending: list[tuple[_Op, asyncio.Future[Any]]] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._work = asyncio.Event()
        self._depth = 0
        self._locks: dict[str, asyncio.Lock] = {}
        self._lock_users: defaultdict[str, int] = defaultdict(int)

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.exclusive:
            self._lock_fd = os.open(f"{self.path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(self._lock_fd)
                self._lock_fd = None
                raise LivebridgeError(
                    f"{self.path} is in use by another livebridge daemon; an SQLite store "
                    "serves one daemon (use a Redis store for several)"
                ) from None
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, self._connect)
        self._writer = asyncio.create_task(self._write_loop(), name="livebridge-sqlite-writer")
        self._depth = await self._run(
            lambda c: int(c.execute("SELECT count(*) FROM outbox").fetchone()[0])
        )

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.execute("PRAGMA busy_timeout=5000")
        conn.executescript(_SCHEMA)
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            await self._run(lambda c: None)  # flush what is queued
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        if self._conn is not None:
            conn, self._conn = self._conn, None
            await asyncio.get_running_loop().run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    async def ping(self) -> None:
        if self._conn is None or self._writer is None or self._writer.done():
            raise StoreUnavailable("the SQLite store is not open")

    # --- the group-commit writer ----------------------------------------------------------

    async def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        if self._writer is None:
            raise StoreUnavailable("the SQLite store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append((op, future))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            try:
                results = await loop.run_in_executor(self._executor, self._transaction, batch)
            except Exception as exc:  # the commit itself failed: nobody's write happened
                error = StoreUnavailable(f"SQLite commit failed: {exc}")
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), (ok, value) in zip(batch, results, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)

    def _transaction(self, batch: list[tuple[_Op, asyncio.Future[Any]]]) -> list[tuple[bool, Any]]:
        conn = self._conn
        assert conn is not None
        results: list[tuple[bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for op, _ in batch:
                conn.execute("SAVEPOINT op")
                try:
                    results.append((True, op(conn)))
                    conn.execute("RELEASE op")
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((False, exc))
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    # --- accepting ------------------------------------------------------------------------

    async def enqueue(
        self, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
        dedupe_ttl: float,
    ) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            now = time.time()
            row = c.execute(
                "SELECT expires_at FROM seen WHERE source=? AND key=?", (source, dedupe_key)
            ).fetchone()
            if row is not None and row[0] > now:
                return False
            c.execute(
                "INSERT OR REPLACE INTO seen (source, key, expires_at) VALUES (?, ?, ?)",
                (source, dedupe_key, now + dedupe_ttl),
            )
            _insert_item(c, kind, source, thread, payload, now)
            return True

        stored = await self._run(op)
        if stored:
            self._depth += 1
            self._work.set()
        return stored

    async def seen(self, source: str, dedupe_key: str) -> bool:
        row = await self._run(
            lambda c: c.execute(
                "SELECT 1 FROM seen WHERE source=? AND key=? AND expires_at>?",
                (source, dedupe_key, time.time()),
            ).fetchone()
        )
        return row is not None

    async def depth(self) -> int:
        return self._depth

    async def wait_for_work(self, timeout: float) -> None:
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            return
        self._work.clear()

    # --- delivering -----------------------------------------------------------------------

    async def claim(self, limit: int, lease: float) -> list[OutboxItem]:
        def op(c: sqlite3.Connection) -> list[OutboxItem]:
            now = time.time()
            threads = [
                row[0]
                for row in c.execute(
                    "SELECT thread FROM threads WHERE due_at<=? AND leased_until<=? "
                    "ORDER BY due_at LIMIT ?",
                    (now, now, limit),
                )
            ]
            items = []
            for thread in threads:
                row = c.execute(
                    "SELECT id, kind, source, thread, payload, created_at, attempts, last_error "
                    "FROM outbox WHERE thread=? ORDER BY id LIMIT 1",
                    (thread,),
                ).fetchone()
                if row is None:  # cannot happen while threads and outbox agree; heal it
                    c.execute("DELETE FROM threads WHERE thread=?", (thread,))
                    continue
                c.execute("UPDATE threads SET leased_until=? WHERE thread=?", (now + lease, thread))
                items.append(OutboxItem(str(row[0]), *row[1:]))
            return items

        return await self._run(op)

    async def complete(self, item: OutboxItem) -> None:
        if await self._run(lambda c: _remove_head(c, item)):
            self._depth -= 1
            self._work.set()

    async def retry(self, item: OutboxItem, delay: float, error: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            c.execute(
                "UPDATE outbox SET attempts=attempts+1, last_error=? WHERE id=?",
                (error, int(item.id)),
            )
            c.execute(
                "UPDATE threads SET due_at=?, leased_until=0 WHERE thread=?",
                (time.time() + delay, item.thread),
            )

        await self._run(op)

    async def dead_letter(self, item: OutboxItem, reason: str, response: str | None) -> None:
        def op(c: sqlite3.Connection) -> bool:
            if not _remove_head(c, item):
                return False
            c.execute(
                "INSERT INTO dead_letters (kind, source, thread, payload, created_at, failed_at,"
                " attempts, reason, response) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item.kind, item.source, item.thread, item.payload, item.created_at, time.time(),
                 item.attempts + 1, reason, response),
            )
            return True

        if await self._run(op):
            self._depth -= 1
            self._work.set()

    async def release_all(self) -> None:
        if self.exclusive:  # this daemon owns the file: every lease is a dead process's
            await self._run(lambda c: c.execute("UPDATE threads SET leased_until=0"))

    async def stats(self) -> OutboxStats:
        def op(c: sqlite3.Connection) -> OutboxStats:
            depth, oldest = c.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
            in_flight = c.execute(
                "SELECT count(*) FROM threads WHERE leased_until>?", (time.time(),)
            ).fetchone()[0]
            dead = c.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            return OutboxStats(depth, oldest, in_flight, dead)

        stats = await self._run(op)
        self._depth = stats.depth  # resync with what other processes (the CLI) changed
        return stats

    # --- dead letters ---------------------------------------------------------------------

    _DL_COLUMNS = (
        "id, kind, source, thread, payload, created_at, failed_at, attempts, reason, response"
    )

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        rows = await self._run(
            lambda c: c.execute(
                f"SELECT {self._DL_COLUMNS} FROM dead_letters ORDER BY id LIMIT ?",  # noqa: S608
                (limit,),
            ).fetchall()
        )
        return [DeadLetter(str(r[0]), *r[1:]) for r in rows]

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        row = await self._run(lambda c: _dead_letter_row(c, letter_id))
        return None if row is None else DeadLetter(str(row[0]), *row[1:])

    async def replay_dead_letter(self, letter_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            row = _dead_letter_row(c, letter_id)
            if row is None:
                return False
            _, kind, source, thread, payload, created_at = row[:6]
            _insert_item(c, kind, source, thread, payload, created_at)
            c.execute("DELETE FROM dead_letters WHERE id=?", (row[0],))
            return True

        replayed = await self._run(op)
        if replayed:
            self._depth += 1
            self._work.set()
        return replayed

    async def drop_dead_letter(self, letter_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            cur = c.execute("DELETE FROM dead_letters WHERE id=?", (_int_id(letter_id),))
            return cur.rowcount > 0

        return await self._run(op)

    # --- key-value ------------------------------------------------------------------------

    async def kv_get(self, namespace: str, key: str) -> str | None:
        row = await self._run(
            lambda c: c.execute(
                "SELECT value FROM kv WHERE ns=? AND key=? AND "
                "(expires_at IS NULL OR expires_at>?)",
                (namespace, key, time.time()),
            ).fetchone()
        )
        return None if row is None else str(row[0])

    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        expires = None if ttl is None else time.time() + ttl
        await self._run(
            lambda c: c.execute(
                "INSERT OR REPLACE INTO kv (ns, key, value, expires_at) VALUES (?, ?, ?, ?)",
                (namespace, key, value, expires),
            )
        )

    async def kv_delete(self, namespace: str, key: str) -> None:
        await self._run(
            lambda c: c.execute("DELETE FROM kv WHERE ns=? AND key=?", (namespace, key))
        )

    def lock(self, name: str, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        # One daemon owns an SQLite file (see open()), so an in-process lock is enough.
        return self._local_lock(name)

    @asynccontextmanager
    async def _local_lock(self, name: str) -> AsyncIterator[None]:
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._lock_users[name] += 1
        try:
            async with lock:
                yield
        finally:
            self._lock_users[name] -= 1
            if not self._lock_users[name]:
                del self._lock_users[name]
                del self._locks[name]

    async def purge_expired(self) -> int:
        def op(c: sqlite3.Connection) -> int:
            now = time.time()
            n = c.execute("DELETE FROM seen WHERE expires_at<=?", (now,)).rowcount
            n += c.execute("DELETE FROM kv WHERE expires_at<=?", (now,)).rowcount
            return int(n)

        return await self._run(op)


def _insert_item(
    c: sqlite3.Connection, kind: str, source: str, thread: str, payload: str, created_at: float
) -> None:
    c.execute(
        "INSERT INTO outbox (kind, source, thread, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (kind, source, thread, payload, created_at),
    )
    c.execute(
        "INSERT OR IGNORE INTO threads (thread, due_at) VALUES (?, ?)", (thread, time.time())
    )


def _remove_head(c: sqlite3.Connection, item: OutboxItem) -> bool:
    if not c.execute("DELETE FROM outbox WHERE id=?", (int(item.id),)).rowcount:
        return False  # already gone: a late answer after the lease ran out; leave the thread
    if c.execute("SELECT 1 FROM outbox WHERE thread=? LIMIT 1", (item.thread,)).fetchone():
        c.execute(
            "UPDATE threads SET due_at=?, leased_until=0 WHERE thread=?", (time.time(), item.thread)
        )
    else:
        c.execute("DELETE FROM threads WHERE thread=?", (item.thread,))
    return True


def _int_id(letter_id: str) -> int:
    try:
        return int(letter_id)
    except ValueError:
        return -1


def _dead_letter_row(c: sqlite3.Connection, letter_id: str) -> Any:
    return c.execute(
        f"SELECT {SQLiteStore._DL_COLUMNS} FROM dead_letters WHERE id=?",  # noqa: S608
        (_int_id(letter_id),),
    ).fetchone()
