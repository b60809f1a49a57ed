"""What only the SQLite store promises: the CLI opens the daemon's file, never a new one,
and files written by older versions open."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from livebridge._config import StoreConfig
from livebridge._store import create_store
from livebridge._store.sqlite import SQLiteStore
from livebridge.exceptions import LivebridgeError, StoreUnavailable

from .test_contract import FAR, claim_one, put


async def test_cli_open_of_a_missing_store_fails_and_creates_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_store(StoreConfig(url="sqlite:///var/missing.db"), exclusive=False)
    with pytest.raises(LivebridgeError) as caught:
        await store.open()
    assert f"no livebridge store exists at {tmp_path / 'var' / 'missing.db'}" in str(caught.value)
    assert not (tmp_path / "var").exists()
    await store.close()


async def test_cli_opens_the_daemons_store(tmp_path: Path) -> None:
    daemon = SQLiteStore(tmp_path / "store.db")
    await daemon.open()  # the daemon creates the file
    cli = SQLiteStore(tmp_path / "store.db", exclusive=False)
    try:
        await put(daemon, "a")
        await cli.open()
        assert (await cli.stats()).depth == 1
    finally:
        await cli.close()
        await daemon.close()


async def test_store_of_an_older_version_opens(tmp_path: Path) -> None:
    """A ``threads`` table without the ``claim`` column (written before claim tokens)."""
    path = tmp_path / "store.db"
    store = SQLiteStore(path)
    await store.open()
    await put(store, "a")
    await put(store, "b")
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "CREATE TABLE old (thread TEXT PRIMARY KEY, due_at REAL NOT NULL,"
            " leased_until REAL NOT NULL DEFAULT 0) WITHOUT ROWID;"
            "INSERT INTO old SELECT thread, due_at, leased_until FROM threads;"
            "DROP TABLE threads; ALTER TABLE old RENAME TO threads;"
        )
    store = SQLiteStore(path)
    await store.open()
    try:
        a = await claim_one(store)
        assert a.payload == "a" and a.claim is not None
        await store.complete(a)
        assert (await claim_one(store, lease=FAR)).payload == "b"
    finally:
        await store.close()


async def test_a_write_lock_held_by_another_process_is_waited_for_off_the_loop(
    tmp_path: Path,
) -> None:
    """While the CLI holds the write lock, the daemon's writes wait (in the worker thread,
    the event loop keeps running) and go through once it is released."""
    daemon = SQLiteStore(tmp_path / "store.db")
    await daemon.open()
    other = sqlite3.connect(tmp_path / "store.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.ensure_future(put(daemon, "a"))
        started = time.monotonic()
        for _ in range(20):  # the loop keeps turning while the write waits for the lock
            await asyncio.sleep(0)
        # A busy wait on the loop would have stopped it for SQLite's busy timeout (seconds).
        assert time.monotonic() - started < 0.5
        assert not write.done()
        other.execute("COMMIT")
        await asyncio.wait_for(write, 5)
        assert (await daemon.stats()).depth == 1
    finally:
        other.close()
        await daemon.close()


async def test_close_commits_what_is_queued_and_refuses_what_comes_after(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    queued = [asyncio.ensure_future(put(store, f"t{i}")) for i in range(20)]
    await asyncio.sleep(0)  # each put has queued its operation
    await store.close()
    await asyncio.gather(*queued)  # none failed
    with pytest.raises(StoreUnavailable):
        await put(store, "late")
    reopened = SQLiteStore(tmp_path / "store.db")
    await reopened.open()
    try:
        assert (await reopened.stats()).depth == 20
    finally:
        await reopened.close()


async def test_a_failing_commit_keeps_what_was_committed_before_it(tmp_path: Path) -> None:
    """One operation of a batch raises, so each runs on its own; then one commit fails. What
    was committed before it reports success; it and what had not run yet fail at once (the
    store failed: they are not each tried again)."""
    store = SQLiteStore(tmp_path / "store.db")
    await store.open()
    batches: list[int] = []
    commit = store._commit

    async def counted(batch: list[Any]) -> list[Any]:
        batches.append(len(batch))
        return await commit(batch)

    def raises(conn: sqlite3.Connection) -> None:
        raise ValueError("a broken operation")

    def spoils_its_commit(conn: sqlite3.Connection) -> None:
        conn.execute("COMMIT")  # the writer's COMMIT then finds no transaction: it fails

    store._commit = counted  # type: ignore[method-assign]
    try:
        outcomes = await asyncio.gather(
            put(store, "a"), store._run(raises), store._run(spoils_its_commit), put(store, "b"),
            return_exceptions=True)
        assert batches == [4, 1, 1, 1]  # one batch, then each on its own until the failure
        assert outcomes[0] is True
        assert isinstance(outcomes[1], ValueError)
        assert isinstance(outcomes[2], StoreUnavailable)
        assert isinstance(outcomes[3], StoreUnavailable)
        assert (await store.stats()).depth == 1
    finally:
        await store.close()
