"""Fixtures of the engine's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store.sqlite import SqliteStore


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """An empty SQLite store of the test's own (the engine's tests build their Engine on it)."""
    sqlite = SqliteStore(tmp_path / "relay.sqlite3")
    yield sqlite
    await sqlite.close()
