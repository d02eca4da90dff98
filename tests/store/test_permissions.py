"""The database's files are private (0700 directory, 0600 files) on real files: made so, or tightened."""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.store.sqlite import SqliteStore


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def side_files(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The loosest umask there is: what the store makes must not depend on the operator's."""
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


@pytest.mark.usefixtures("open_umask")
async def test_a_new_database_is_private_whatever_the_umask(tmp_path: Path) -> None:
    database = tmp_path / "data" / "relay.sqlite3"
    store = SqliteStore(database)
    try:
        await store.create_stream(1, {"name": "s"})
        assert all(p.exists() for p in side_files(database))  # WAL mode, connection open
        assert mode(database.parent) == 0o700
        assert [mode(p) for p in (database, *side_files(database))] == [0o600] * 3
    finally:
        await store.close()


async def test_loose_files_are_tightened_and_said_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    directory = tmp_path / "data"
    directory.mkdir(mode=0o755)
    directory.chmod(0o755)
    database = directory / "relay.sqlite3"
    other = sqlite3.connect(database, isolation_level=None)  # another version left it 0644, WAL files and all
    other.execute("PRAGMA journal_mode = WAL")
    other.execute("CREATE TABLE t (x)")
    other.execute("INSERT INTO t VALUES (1)")
    for path in (database, *side_files(database)):
        path.chmod(0o644)
    caplog.set_level(logging.INFO, logger="relay.store")
    store = SqliteStore(database)
    try:
        assert mode(directory) == 0o700
        assert [mode(p) for p in (database, *side_files(database))] == [0o600] * 3
        [line] = [r.getMessage() for r in caplog.records if "tightened" in r.getMessage()]
        assert f"{directory} 0755 -> 0700" in line and f"{database} 0644 -> 0600" in line and "-wal" in line
    finally:
        await store.close()
        other.close()
    caplog.clear()
    await SqliteStore(database).close()  # already private: nothing to say
    assert not [r for r in caplog.records if "tightened" in r.getMessage()]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
async def test_files_of_another_user_are_left_alone_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "relay.sqlite3"
    sqlite3.connect(database).close()
    database.chmod(0o644)
    os.chown(database, 65534, 65534)
    caplog.set_level(logging.INFO, logger="relay.store")
    store = SqliteStore(database)
    await store.close()
    assert mode(database) == 0o644
    [line] = [r.getMessage() for r in caplog.records if "another user" in r.getMessage()]
    assert f"{database} (mode 0644, owner uid 65534)" in line
