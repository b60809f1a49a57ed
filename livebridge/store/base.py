"""The store interface: durable outbox, dedupe records, key-value maps, locks, dead letters.

Outbox items are grouped by ``thread``. A claim hands out only the oldest item of a thread,
and only while no other item of that thread is leased, so each thread is delivered one at a
time in accept order while different threads go in parallel. A lease that is not completed,
retried or dead-lettered in time (the daemon died) expires and the item is claimed again.

Every claim hands its items a token (``OutboxItem.claim``). ``complete``, ``retry`` and
``dead_letter`` only hand the thread on while that claim still holds it: once a lease ran
out and the item (or the thread's next one) was claimed again, a late answer from the first
attempt cannot release the newer claim's lease. A late ``complete`` still removes the item
(it was delivered); a late ``retry`` or ``dead_letter`` changes nothing, since the newer
claim now decides the item's fate.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass

__all__ = ["DeadLetter", "OutboxItem", "OutboxStats", "Store", "item_route", "route_of"]


@dataclass(slots=True)
class OutboxItem:
    """One queued unit of work: an inbound message or an agent reply (``kind``)."""

    id: str
    kind: str
    source: str
    thread: str
    payload: str
    created_at: float
    attempts: int = 0
    last_error: str | None = None
    #: The token of the claim that handed the item out (None: not from ``claim``). The
    #: store checks it on ``complete``/``retry``/``dead_letter``; keep it on copies.
    claim: str | None = None
    #: The route the item's thread belongs to ("": derived from the thread, ``route_of``).
    route: str = ""


@dataclass(slots=True)
class DeadLetter:
    """An item that will not be delivered without an operator: why, and what Livedesk said."""

    id: str
    kind: str
    source: str
    thread: str
    payload: str
    created_at: float
    failed_at: float
    attempts: int
    reason: str
    response: str | None


def route_of(thread: str) -> str:
    """The route of a thread key as livebridge writes them: reply threads are
    ``reply\x1f<source>\x1f<thread>`` (route ``reply:<source>``), inbound threads
    ``<source>\x1f<thread>`` (route ``livedesk``). Used for stores written before routes
    were recorded, and for items that do not name their route."""
    parts = thread.split("\x1f", 2)
    if len(parts) == 3 and parts[0] == "reply":
        return f"reply:{parts[1]}"
    return "livedesk"


def item_route(item: OutboxItem) -> str:
    """The route of ``item``: its own, or the one its thread key implies."""
    return item.route or route_of(item.thread)


@dataclass(slots=True)
class OutboxStats:
    """What ``livebridge status`` and ``/metrics`` show of the store."""

    depth: int
    oldest_created_at: float | None
    in_flight: int
    dead_letters: int


class _LocalLocks:
    """Named ``asyncio`` locks for the tasks of one process, created on first use and
    forgotten when nobody holds or waits for them (so the registry does not grow)."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._locks)

    @asynccontextmanager
    async def hold(self, name: str, timeout: float | None = None) -> AsyncIterator[None]:
        """Hold the lock ``name``; raise ``TimeoutError`` if not acquired within ``timeout``."""
        lock = self._locks.setdefault(name, asyncio.Lock())
        self._users[name] = self._users.get(name, 0) + 1
        try:
            try:
                async with asyncio.timeout(timeout):
                    await lock.acquire()
            except TimeoutError:
                raise TimeoutError(f"lock {name!r} not acquired within {timeout} s") from None
            try:
                yield
            finally:
                lock.release()
        finally:
            self._users[name] -= 1
            if not self._users[name]:
                del self._users[name]
                del self._locks[name]


class Store(ABC):
    """Where everything the bridge must not forget lives (SQLite or Redis).

    Subclasses call ``super().__init__()``; they call ``_signal_work()`` when work may
    have become due, which ``wait_for_work`` waits for.
    """

    #: The store's scheme, for logs and ``/readyz`` (``sqlite``, ``redis``).
    kind: str

    def __init__(self) -> None:
        self._work = asyncio.Event()
        self._local_locks = _LocalLocks()
        self._owner = uuid.uuid4().hex[:12]
        self._claims = itertools.count(1)

    def _signal_work(self) -> None:
        """Wake ``wait_for_work``: work may be due."""
        self._work.set()

    def _claim_token(self) -> str:
        """A token no other claim (of this or any other instance) carries."""
        return f"{self._owner}:{next(self._claims)}"

    # --- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create what is missing."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store takes a write (``/readyz``)."""

    # --- accepting ------------------------------------------------------------------------

    @abstractmethod
    async def enqueue(
        self, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
        dedupe_ttl: float, *, route: str | None = None,
    ) -> bool:
        """Durably add an item unless ``(source, dedupe_key)`` was seen within ``dedupe_ttl``.

        ``route`` is the thread's route (None: ``route_of(thread)``); a thread keeps the
        route of its first item. Returns True if stored, False for a duplicate. Returns only
        after the commit.
        """

    @abstractmethod
    async def seen(self, source: str, dedupe_key: str) -> bool:
        """Whether ``(source, dedupe_key)`` is recorded (not expired)."""

    @abstractmethod
    async def depth(self) -> int:
        """How many items are in the outbox (cheap; used for backpressure)."""

    # --- delivering -----------------------------------------------------------------------

    @abstractmethod
    async def claim(self, limit: int, lease: float, *, route: str | None = None
                    ) -> list[OutboxItem]:
        """Lease up to ``limit`` thread heads that are due, for ``lease`` seconds; only those
        of ``route`` if given. The oldest due first."""

    @abstractmethod
    async def complete(self, item: OutboxItem) -> None:
        """Remove a delivered item; its thread's next item becomes due (if ``item.claim``
        still holds the thread: see the module's docstring)."""

    @abstractmethod
    async def retry(self, item: OutboxItem, delay: float, error: str, *,
                    count: bool = True) -> None:
        """Keep the item at its thread's head and make it due again after ``delay`` s
        (nothing, if another claim holds the thread now). ``count=False`` puts it back
        without counting an attempt or recording ``error`` (it was throttled, or waited
        behind an open breaker: nothing was wrong with the item)."""

    @abstractmethod
    async def dead_letter(self, item: OutboxItem, reason: str, response: str | None) -> None:
        """Move the item to the dead letters; its thread's next item becomes due (nothing,
        if another claim holds the thread now)."""

    @abstractmethod
    async def release_all(self) -> None:
        """Drop this process's leases (called at start-up after an unclean stop)."""

    @abstractmethod
    async def stats(self) -> OutboxStats:
        """Depth, oldest item, leased threads, dead letters."""

    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be due (an enqueue here or elsewhere), or after timeout."""
        try:
            await asyncio.wait_for(self._work.wait(), timeout)
        except TimeoutError:
            return
        self._work.clear()

    # --- dead letters ---------------------------------------------------------------------

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""

    @abstractmethod
    async def last_dead_letter(self) -> DeadLetter | None:
        """The newest dead letter (the one ``dead_letters`` lists last), or None; cheap."""

    @abstractmethod
    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by id."""

    @abstractmethod
    async def replay_dead_letter(self, letter_id: str) -> bool:
        """Put a dead letter back at the end of its thread's queue as a new item: created
        now, no attempts yet (False if unknown)."""

    @abstractmethod
    async def drop_dead_letter(self, letter_id: str) -> bool:
        """Delete a dead letter for good (False if unknown)."""

    # --- key-value maps (identity, threads, plugin records) -------------------------------

    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> str | None:
        """The value, or None if missing or expired."""

    @abstractmethod
    async def kv_set(self, namespace: str, key: str, value: str, ttl: float | None = None) -> None:
        """Set the value (forever, or for ``ttl`` seconds)."""

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> None:
        """Forget the key."""

    @abstractmethod
    def lock(self, name: str, timeout: float = 30.0) -> AbstractAsyncContextManager[None]:
        """Mutual exclusion on ``name`` among all the daemons sharing this store."""

    @abstractmethod
    async def purge_expired(self) -> int:
        """Delete expired dedupe records and keys; return how many."""
