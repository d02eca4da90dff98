"""The SQLite store when the disk fails it, on real files: a full disk (SQLite's max_page_count on the
writer connection makes writes fail with SQLITE_FULL, deterministically), a COMMIT that fails and leaves
the transaction open, and files that are not a usable database."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from relay.store.base import StoreError, StoreUnavailable
from relay.store.migrations import MIGRATIONS
from relay.store.sqlite import SqliteStore

BIG = "x" * 20_000
"""A name that needs several new pages: it cannot fit in the pages the database already has."""


async def pragma(store: SqliteStore, statement: str) -> Any:
    """Run a PRAGMA on the store's own writer connection (max_page_count is per connection)."""
    row = await store._run(lambda conn: conn.execute(statement).fetchone())
    return None if row is None else row[0]


async def test_a_full_disk_fails_writes_then_recovers_and_loses_nothing_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    store = SqliteStore(path)
    try:
        kept = [await store.create_stream(1, {"name": f"kept {n}"}) for n in range(3)]
        pages = await pragma(store, "PRAGMA page_count")
        await pragma(store, f"PRAGMA max_page_count = {pages}")  # the disk is full

        with pytest.raises(StoreUnavailable, match="full"):
            await store.create_stream(1, {"name": BIG})
        assert not store.healthy and not await store.check_health()  # the probe needs a page too
        assert [s.name for s in (await store.list_streams(1, 0, 10)).items] == ["kept 2", "kept 1", "kept 0"]

        await pragma(store, f"PRAGMA max_page_count = {pages + 1000}")  # space again
        assert await store.check_health() and store.healthy  # without any client's write
        late = await store.create_stream(1, {"name": BIG})
    finally:
        await store.close()
    reopened = SqliteStore(path)
    try:
        names = [s.name for s in (await reopened.list_streams(1, 0, 10)).items]
        # nothing of the failed write was kept, not even the id it had taken
        assert names == [BIG] + [s.name for s in reversed(kept)] and late.id == kept[-1].id + 1
    finally:
        await reopened.close()


async def test_a_failed_commit_is_rolled_back_and_later_writes_work(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.sqlite3")
    try:
        # A deferred constraint fails at COMMIT itself and SQLite keeps the transaction open, as it may after
        # a COMMIT that ran out of disk: every later BEGIN would fail.
        await pragma(store, "PRAGMA defer_foreign_keys = ON")
        with pytest.raises(StoreError):
            await store.create_restream(1, {"stream_id": 999, "uri": "rtmp://h/app/k"})
        assert not await store._run(lambda conn: conn.in_transaction)
        stream = await store.create_stream(1, {"name": "after"})
        assert await store.get_restream(1) is None and (await store.get_stream(stream.id)) == stream
        assert store.healthy  # the request's fault, not the disk's
    finally:
        await store.close()


def test_a_file_that_is_not_a_database_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    path.write_bytes(b"this is not SQLite\n" * 500)
    with pytest.raises(StoreError) as refused:
        SqliteStore(path)
    assert str(refused.value) == (
        f"the database {path} cannot be used (file is not a database):"
        " restore it from a backup, or move it away to start empty"
    )


def test_a_newer_schema_is_refused_with_the_versions(tmp_path: Path) -> None:
    path = tmp_path / "relay.sqlite3"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(StoreError, match=f"schema {len(MIGRATIONS) + 1} is newer than this relay"):
        SqliteStore(path)
