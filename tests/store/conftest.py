"""Fixtures for the store contract suite: the same tests over SQLite and Redis.

Redis tests use the server on 127.0.0.1:6379 (``LIVEBRIDGE_TEST_REDIS`` overrides it); if
none answers, a private ``redis-server`` is started for the session (skipped without one).
Each test gets its own key prefix, deleted afterwards, so runs can share one server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from livebridge._store import Store
from livebridge._store.redis import RedisStore
from livebridge._store.sqlite import SQLiteStore

from .redis_server import RedisServer, delete_prefix, redis_answers

DEFAULT_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis server URL for the session."""
    url = os.environ.get("LIVEBRIDGE_TEST_REDIS", DEFAULT_URL)
    if redis_answers(url):
        yield url
        return
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


class Backend:
    """Opens stores on one storage: an SQLite file, or a Redis key prefix."""

    def __init__(self, kind: str, tmp_path: Path, redis_url: str | None) -> None:
        self.kind = kind
        self.path = tmp_path / "store.db"
        self.redis_url = redis_url
        self.prefix = f"lbtest:{uuid.uuid4().hex}:"
        self.opened: list[Store] = []

    @property
    def url(self) -> str:
        """The store URL (Redis: with this test's prefix)."""
        assert self.redis_url is not None
        return f"{self.redis_url}?prefix={self.prefix}"

    async def open(self) -> Store:
        """A new, opened store instance on this storage (SQLite: the first owns the file)."""
        store: Store
        if self.kind == "sqlite":
            store = SQLiteStore(self.path, exclusive=not self.opened)
        else:
            store = RedisStore(self.url)
        await store.open()
        self.opened.append(store)
        return store

    async def close(self, store: Store) -> None:
        """Close one instance opened here."""
        self.opened.remove(store)
        await store.close()


async def _backend(kind: str, tmp_path: Path, url: str | None) -> AsyncIterator[Backend]:
    backend = Backend(kind, tmp_path, url)
    try:
        yield backend
    finally:
        for store in reversed(backend.opened):
            await store.close()
        if url is not None:
            delete_prefix(url, backend.prefix)


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """The storage under test (each kind in turn), cleaned up afterwards."""
    url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    async for b in _backend(request.param, tmp_path, url):
        yield b


@pytest.fixture
async def store(backend: Backend) -> Store:
    """An opened store on the backend under test."""
    return await backend.open()


@pytest.fixture
async def redis_backend(tmp_path: Path, redis_url: str) -> AsyncIterator[Backend]:
    """A Redis key prefix of its own, for the Redis-only tests."""
    async for b in _backend("redis", tmp_path, redis_url):
        yield b
