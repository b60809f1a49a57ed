"""The SQLite store: one file in WAL mode, owned by one daemon, with group commit.

One task owns the connection. Operations that arrive while a transaction is being committed
wait and then share the next transaction, so many concurrent accepts cost one commit (one
fsync) instead of one each. The statements of a transaction are short B-tree edits in the
page cache and run on the event loop's thread; what waits on the disk (the COMMIT with its
fsync, and the few operations that scan a whole table) runs in a worker thread, so the loop
never blocks on I/O and the two threads do not take turns at the GIL for every statement.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from livebridge.exceptions import LivebridgeError, StoreUnavailable
from livebridge.store.base import DeadLetter, OutboxItem, OutboxStats, Store, item_route, route_of

__all__ = ["SQLiteStore", "enqueue_op"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL, source TEXT NOT NULL, thread TEXT NOT NULL, payload TEXT NOT NULL,
    created_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT
);
CREATE INDEX IF NOT EXISTS outbox_thread ON outbox (thread, id);
CREATE TABLE IF NOT EXISTS threads (
    thread TEXT PRIMARY KEY, due_at REAL NOT NULL, leased_until REAL NOT NULL DEFAULT 0,
    claim TEXT, route TEXT NOT NULL DEFAULT ''
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
    reason TEXT NOT NULL, response TEXT, route TEXT NOT NULL DEFAULT ''
);
"""

_Op = Callable[[sqlite3.Connection], Any]
#: How long to wait for the write lock that another process (the CLI) holds.
_BUSY_TIMEOUT = 5.0


@dataclass(slots=True)
class _Queued:
    op: _Op
    future: asyncio.Future[Any]
    #: Run in the worker thread: the operation scans a table (counts, purges).
    offload: bool


class _OpFailed(Exception):
    """An operation of a batch raised (its exception is the ``__cause__``)."""


class SQLiteStore(Store):
    """A ``Store`` in one SQLite file (``sqlite:///path/to/file.db``)."""

    kind = "sqlite"

    #: How old (s) the cached outbox depth may get before ``depth()`` counts again, so
    #: that changes by other processes (``livebridge dlq replay``) are seen.
    depth_resync = 5.0
    #: How long ``ping``'s health record lives (s; ``purge_expired`` deletes it).
    health_ttl = 10.0

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "full",
                 exclusive: bool = True) -> None:
        super().__init__()
        self.path = Path(path)
        self.exclusive = exclusive
        self._synchronous = synchronous.upper()
        self._conn: sqlite3.Connection | None = None
        self._lock_fd: int | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="livebridge-sqlite")
        self._pending: list[_Queued] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._depth = 0
        self._depth_at = 0.0  # time.monotonic() of the last count

    # --- lifecycle ------------------------------------------------------------------------

    async def open(self) -> None:
        """Open (the daemon: create and lock) the file; ``exclusive=False`` (the CLI) opens
        an existing store beside its daemon and raises ``LivebridgeError`` if there is none."""
        if not self.exclusive and not self.path.is_file():
            raise LivebridgeError(
                f"no livebridge store exists at {self.path.resolve()} (check store.url; "
                "the daemon creates the store when it first starts)"
            )
        if self.exclusive:
            self.path.parent.mkdir(parents=True, exist_ok=True)
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
        await self._count_depth()

    def _connect(self) -> sqlite3.Connection:
        if self.exclusive:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        else:  # never create the file: a CLI pointed at the wrong path must not make one
            try:
                conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=rw", uri=True,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise LivebridgeError(
                    f"no livebridge store exists at {self.path.resolve()} ({exc})"
                ) from None
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self._synchronous}")
        conn.executescript(_SCHEMA)
        # The daemon's statements run on the event loop, which must not sleep in SQLite's
        # busy handler: it waits for the CLI's locks in the worker thread (_begin).
        busy_ms = 0 if self.exclusive else int(_BUSY_TIMEOUT * 1000)
        conn.execute(f"PRAGMA busy_timeout={busy_ms}")
        _migrate(conn)
        return conn

    async def close(self) -> None:
        if self._writer is not None:
            # Not cancelled: a COMMIT may be running in the worker thread. The writer
            # finishes what is queued and returns.
            self._closing = True
            self._wakeup.set()
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
        """Raise ``StoreUnavailable`` unless a write commits: a short-lived health record,
        through the writer (a lock held elsewhere, a read-only file or a full disk fail it)."""
        if self._conn is None or self._writer is None or self._writer.done():
            raise StoreUnavailable("the SQLite store is not open")
        try:
            await self.kv_set("health", "ping", str(time.time()), self.health_ttl)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite cannot write: {exc}") from exc

    # --- the group-commit writer ----------------------------------------------------------

    async def _run(self, op: Callable[[sqlite3.Connection], T], *, offload: bool = False) -> T:
        """Run ``op`` in the next transaction; ``offload`` runs it in the worker thread."""
        if self._writer is None or self._closing:
            raise StoreUnavailable("the SQLite store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._pending.append(_Queued(op, future, offload))
        self._wakeup.set()
        return await future

    async def _write_loop(self) -> None:
        while self._pending or not self._closing:
            if not self._pending:
                await self._wakeup.wait()
                self._wakeup.clear()
                continue
            batch, self._pending = self._pending, []
            await self._transaction(batch)

    async def _transaction(self, batch: list[_Queued]) -> None:
        """Run the batch and settle its futures; if the store itself fails (BEGIN or
        COMMIT), every operation not settled yet fails with ``StoreUnavailable``."""
        try:
            await self._settle(batch)
        except Exception as exc:  # nothing unsettled was written
            error = StoreUnavailable(f"SQLite commit failed: {exc}")
            for queued in batch:
                if not queued.future.done():
                    queued.future.set_exception(error)

    async def _settle(self, batch: list[_Queued]) -> None:
        """Run the batch in one transaction (one commit) and settle its futures. If an
        operation raises, each runs in a transaction of its own, so that one failing
        operation does not undo the others. Raises if BEGIN or COMMIT fails."""
        try:
            values = await self._commit(batch)
        except _OpFailed as failed:
            if len(batch) > 1:
                for queued in batch:
                    await self._settle([queued])
            elif not batch[0].future.done():
                batch[0].future.set_exception(failed.__cause__ or failed)
            return
        for queued, value in zip(batch, values, strict=True):
            if not queued.future.done():  # done: its caller was cancelled
                queued.future.set_result(value)

    async def _commit(self, batch: list[_Queued]) -> list[Any]:
        conn = self._conn
        assert conn is not None
        loop = asyncio.get_running_loop()
        await self._begin(conn)
        try:
            values = []
            for queued in batch:
                try:
                    if queued.offload:
                        values.append(await loop.run_in_executor(self._executor, queued.op, conn))
                    else:
                        values.append(queued.op(conn))
                except Exception as exc:
                    raise _OpFailed from exc
            await loop.run_in_executor(self._executor, conn.execute, "COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return values

    async def _begin(self, conn: sqlite3.Connection) -> None:
        """Take the write lock; if another process (the CLI) holds it, wait for it in the
        worker thread, up to ``_BUSY_TIMEOUT``."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise

        def wait() -> None:
            deadline = time.monotonic() + _BUSY_TIMEOUT
            while True:
                time.sleep(0.005)
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if not _busy(exc) or time.monotonic() > deadline:
                        raise

        await asyncio.get_running_loop().run_in_executor(self._executor, wait)

    # --- accepting ------------------------------------------------------------------------

    async def enqueue(
        self, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
        dedupe_ttl: float, *, route: str | None = None,
    ) -> bool:
        stored = await self._run(
            lambda c: enqueue_op(c, kind, source, dedupe_key, thread, payload, dedupe_ttl,
                                 route)
        )
        if stored:
            self._depth += 1
            self._signal_work()
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
        """The cached count, counted again when older than ``depth_resync`` seconds."""
        if time.monotonic() - self._depth_at >= self.depth_resync:
            await self._count_depth()
        return self._depth

    async def _count_depth(self) -> None:
        self._depth_at = time.monotonic()  # before the await: concurrent callers count once
        self._depth = await self._run(
            lambda c: int(c.execute("SELECT count(*) FROM outbox").fetchone()[0]), offload=True
        )

    # --- delivering -----------------------------------------------------------------------

    async def claim(self, limit: int, lease: float, *, route: str | None = None
                    ) -> list[OutboxItem]:
        token = self._claim_token()
        where = "" if route is None else "route=? AND "

        def op(c: sqlite3.Connection) -> list[OutboxItem]:
            now = time.time()
            threads = c.execute(
                f"SELECT thread, route FROM threads WHERE {where}due_at<=? AND "  # noqa: S608
                "leased_until<=? ORDER BY due_at LIMIT ?",
                (*([] if route is None else [route]), now, now, limit),
            ).fetchall()
            items = []
            for thread, thread_route in threads:
                row = c.execute(
                    "SELECT id, kind, source, thread, payload, created_at, attempts, last_error "
                    "FROM outbox WHERE thread=? ORDER BY id LIMIT 1",
                    (thread,),
                ).fetchone()
                if row is None:  # cannot happen while threads and outbox agree; heal it
                    c.execute("DELETE FROM threads WHERE thread=?", (thread,))
                    continue
                c.execute("UPDATE threads SET leased_until=?, claim=? WHERE thread=?",
                          (now + lease, token, thread))
                id_, kind, source, _, payload, created, attempts, error = row
                items.append(OutboxItem(str(id_), kind, source, thread, payload, created,
                                        attempts, error, claim=token, route=thread_route))
            return items

        return await self._run(op)

    async def complete(self, item: OutboxItem) -> None:
        def op(c: sqlite3.Connection) -> bool:
            holds = _holds(c, item)
            removed = _remove(c, item)
            if holds if item.claim is not None else removed:
                _hand_on(c, item.thread)
            return removed

        if await self._run(op):
            self._depth -= 1
        self._signal_work()

    async def retry(self, item: OutboxItem, delay: float, error: str, *,
                    count: bool = True) -> None:
        def op(c: sqlite3.Connection) -> None:
            if item.claim is not None and not _holds(c, item):
                return  # the lease ran out and another claim holds the thread now
            changed = c.execute(
                "UPDATE outbox SET attempts=attempts+?, last_error=coalesce(?, last_error) "
                "WHERE id=?",
                (int(count), error if count else None, int(item.id)),
            ).rowcount
            if not changed:  # gone (a late complete of an earlier claim): hand on if ours
                if item.claim is not None:
                    _hand_on(c, item.thread)
                return
            c.execute(
                "UPDATE threads SET due_at=?, leased_until=0, claim=NULL WHERE thread=?",
                (time.time() + delay, item.thread),
            )

        await self._run(op)

    async def dead_letter(self, item: OutboxItem, reason: str, response: str | None) -> None:
        def op(c: sqlite3.Connection) -> bool:
            if item.claim is not None and not _holds(c, item):
                return False  # the lease ran out and another claim holds the thread now
            removed = _remove(c, item)
            if removed or item.claim is not None:
                _hand_on(c, item.thread)
            if not removed:
                return False
            c.execute(
                "INSERT INTO dead_letters (kind, source, thread, payload, created_at, failed_at,"
                " attempts, reason, response, route) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (item.kind, item.source, item.thread, item.payload, item.created_at, time.time(),
                 item.attempts + 1, reason, response, item_route(item)),
            )
            return True

        if await self._run(op):
            self._depth -= 1
        self._signal_work()

    async def release_all(self) -> None:
        if self.exclusive:  # this daemon owns the file: every lease is a dead process's
            await self._run(lambda c: c.execute("UPDATE threads SET leased_until=0, claim=NULL"),
                            offload=True)

    async def stats(self) -> OutboxStats:
        def op(c: sqlite3.Connection) -> OutboxStats:
            depth, oldest = c.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
            in_flight = c.execute(
                "SELECT count(*) FROM threads WHERE leased_until>?", (time.time(),)
            ).fetchone()[0]
            dead = c.execute("SELECT count(*) FROM dead_letters").fetchone()[0]
            return OutboxStats(depth, oldest, in_flight, dead)

        stats = await self._run(op, offload=True)
        self._depth = stats.depth  # resync with what other processes (the CLI) changed
        self._depth_at = time.monotonic()
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

    async def last_dead_letter(self) -> DeadLetter | None:
        row = await self._run(
            lambda c: c.execute(
                f"SELECT {self._DL_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT 1"  # noqa: S608
            ).fetchone()
        )
        return None if row is None else DeadLetter(str(row[0]), *row[1:])

    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        row = await self._run(lambda c: _dead_letter_row(c, letter_id))
        return None if row is None else DeadLetter(str(row[0]), *row[1:])

    async def replay_dead_letter(self, letter_id: str) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            row = _dead_letter_row(c, letter_id)
            if row is None:
                return False
            _, kind, source, thread, payload = row[:5]
            route = c.execute("SELECT route FROM dead_letters WHERE id=?", (row[0],)).fetchone()
            # A new item: its age and attempts count from now, or an item dead-lettered for
            # its age would be given up again on its first failure.
            _insert_item(c, kind, source, thread, payload, time.time(),
                         route[0] or route_of(thread))
            c.execute("DELETE FROM dead_letters WHERE id=?", (row[0],))
            return True

        replayed = await self._run(op)
        if replayed:
            self._depth += 1
            self._signal_work()
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
        return self._local_locks.hold(name)

    async def purge_expired(self) -> int:
        def op(c: sqlite3.Connection) -> int:
            now = time.time()
            n = c.execute("DELETE FROM seen WHERE expires_at<=?", (now,)).rowcount
            n += c.execute("DELETE FROM kv WHERE expires_at<=?", (now,)).rowcount
            return int(n)

        return await self._run(op, offload=True)


def enqueue_op(
    c: sqlite3.Connection, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
    dedupe_ttl: float, route: str | None = None,
) -> bool:
    """``SQLiteStore.enqueue``'s statements, in the caller's transaction (the benchmarks run
    them with a commit each, as a store without group commit would)."""
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
    _insert_item(c, kind, source, thread, payload, now, route or route_of(thread))
    return True


def _insert_item(
    c: sqlite3.Connection, kind: str, source: str, thread: str, payload: str, created_at: float,
    route: str,
) -> None:
    c.execute(
        "INSERT INTO outbox (kind, source, thread, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        (kind, source, thread, payload, created_at),
    )
    c.execute("INSERT OR IGNORE INTO threads (thread, due_at, route) VALUES (?, ?, ?)",
              (thread, time.time(), route))


def _holds(c: sqlite3.Connection, item: OutboxItem) -> bool:
    """Whether the claim that handed out ``item`` still holds its thread."""
    row = c.execute("SELECT claim FROM threads WHERE thread=?", (item.thread,)).fetchone()
    return row is not None and item.claim is not None and row[0] == item.claim


def _remove(c: sqlite3.Connection, item: OutboxItem) -> bool:
    """Delete the item; False if it was gone already (a late answer after its lease ran out)."""
    return bool(c.execute("DELETE FROM outbox WHERE id=?", (int(item.id),)).rowcount)


def _hand_on(c: sqlite3.Connection, thread: str) -> None:
    """Release the thread's lease: its head is due now (or the thread is done)."""
    if c.execute("SELECT 1 FROM outbox WHERE thread=? LIMIT 1", (thread,)).fetchone():
        c.execute(
            "UPDATE threads SET due_at=?, leased_until=0, claim=NULL WHERE thread=?",
            (time.time(), thread),
        )
    else:
        c.execute("DELETE FROM threads WHERE thread=?", (thread,))


def _migrate(conn: sqlite3.Connection) -> None:
    """Bring a store written by an older livebridge up to date: the ``claim`` column, and
    the ``route`` columns (filled in from the thread keys, ``route_of``)."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(threads)")}
    if "claim" not in columns:
        conn.execute("ALTER TABLE threads ADD COLUMN claim TEXT")
    for table in ("threads", "dead_letters"):
        if "route" in {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
            continue
        with conn:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(f"ALTER TABLE {table} ADD COLUMN route TEXT NOT NULL DEFAULT ''")
            threads = [row[0] for row in conn.execute(f"SELECT DISTINCT thread FROM {table}")]  # noqa: S608
            conn.executemany(f"UPDATE {table} SET route=? WHERE thread=?",  # noqa: S608
                             [(route_of(thread), thread) for thread in threads])
    conn.execute("CREATE INDEX IF NOT EXISTS threads_route_due ON threads (route, due_at)")


def _busy(exc: sqlite3.OperationalError) -> bool:
    """Whether SQLite refused because another connection holds a lock."""
    return "locked" in str(exc) or "busy" in str(exc)


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
