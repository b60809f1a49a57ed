"""Stores: where the outbox, dedupe records, identity maps and dead letters live."""

from __future__ import annotations

from livebridge._config import StoreConfig
from livebridge._store.base import DeadLetter, OutboxItem, OutboxStats, Store
from livebridge._store.redis import RedisStore
from livebridge._store.sqlite import SQLiteStore

__all__ = ["DeadLetter", "OutboxItem", "OutboxStats", "Store", "create_store"]


def create_store(config: StoreConfig, *, exclusive: bool = True) -> Store:
    """The store selected by ``config.url`` (not yet opened).

    ``exclusive=False`` opens an SQLite store beside the daemon that owns it (for the CLI).
    """
    if config.url.startswith("sqlite:///"):
        return SQLiteStore(config.url.removeprefix("sqlite:///"),
                           synchronous=config.sqlite_synchronous, exclusive=exclusive)
    return RedisStore(config.url, max_connections=config.max_connections)
