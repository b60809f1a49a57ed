"""The store interface: durable outbox, dedupe records, key-value maps, locks, dead letters.

Outbox items are grouped by ``thread``. A claim hands out only the oldest item of a thread,
and only while no other item of that thread is leased, so each thread is delivered one at a
time in accept order while different threads go in parallel. A lease that is not completed,
retried or dead-lettered in time (the daemon died) expires and the item is claimed again.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

__all__ = ["DeadLetter", "OutboxItem", "OutboxStats", "Store"]


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


@dataclass(slots=True)
class OutboxStats:
    """What ``livebridge status`` and ``/metrics`` show of the store."""

    depth: int
    oldest_created_at: float | None
    in_flight: int
    dead_letters: int


class Store(ABC):
    """Where everything the bridge must not forget lives (SQLite or Redis)."""

    #: The store's scheme, for logs and ``/readyz`` (``sqlite``, ``redis``).
    kind: str

    # --- lifecycle ------------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None:
        """Connect and create what is missing."""

    @abstractmethod
    async def close(self) -> None:
        """Flush pending writes and disconnect."""

    @abstractmethod
    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    # --- accepting ------------------------------------------------------------------------

    @abstractmethod
    async def enqueue(
        self, kind: str, source: str, dedupe_key: str, thread: str, payload: str,
        dedupe_ttl: float,
    ) -> bool:
        """Durably add an item unless ``(source, dedupe_key)`` was seen within ``dedupe_ttl``.

        Returns True if stored, False for a duplicate. Returns only after the commit.
        """

    @abstractmethod
    async def seen(self, source: str, dedupe_key: str) -> bool:
        """Whether ``(source, dedupe_key)`` is recorded (not expired)."""

    @abstractmethod
    async def depth(self) -> int:
        """How many items are in the outbox (cheap; used for backpressure)."""

    # --- delivering -----------------------------------------------------------------------

    @abstractmethod
    async def claim(self, limit: int, lease: float) -> list[OutboxItem]:
        """Lease up to ``limit`` thread heads that are due, for ``lease`` seconds."""

    @abstractmethod
    async def complete(self, item: OutboxItem) -> None:
        """Remove a delivered item; its thread's next item becomes due."""

    @abstractmethod
    async def retry(self, item: OutboxItem, delay: float, error: str) -> None:
        """Keep the item at its thread's head and make it due again after ``delay`` s."""

    @abstractmethod
    async def dead_letter(self, item: OutboxItem, reason: str, response: str | None) -> None:
        """Move the item to the dead letters; its thread's next item becomes due."""

    @abstractmethod
    async def release_all(self) -> None:
        """Drop this process's leases (called at start-up after an unclean stop)."""

    @abstractmethod
    async def stats(self) -> OutboxStats:
        """Depth, oldest item, leased threads, dead letters."""

    @abstractmethod
    async def wait_for_work(self, timeout: float) -> None:
        """Return when new work may be due (an enqueue here or elsewhere), or after timeout."""

    # --- dead letters ---------------------------------------------------------------------

    @abstractmethod
    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The oldest dead letters."""

    @abstractmethod
    async def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        """One dead letter by id."""

    @abstractmethod
    async def replay_dead_letter(self, letter_id: str) -> bool:
        """Put a dead letter back at the end of its thread's queue (False if unknown)."""

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
