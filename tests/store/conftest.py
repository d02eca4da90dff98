"""The store contract runs against both stores: SQLite (a file of the test's own) and PostgreSQL (a fresh
database on the run's server; `integration`, since that server is a process)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.store.base import Store
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore


class Stores:
    """Opens stores on one database (as nodes, or a restart, would) and closes them all at the end."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind = kind
        self.where = where
        """The SQLite file's path or the PostgreSQL URL."""
        self._opened: list[Store] = []

    async def open(self) -> Store:
        store: Store
        if self.kind == "sqlite":
            store = SqliteStore(Path(self.where))
        else:
            store = await PostgresStore.open(self.where)
        self._opened.append(store)
        return store

    async def close(self) -> None:
        for store in reversed(self._opened):
            await store.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    if request.param == "sqlite":
        made = Stores("sqlite", str(tmp_path / "relay.sqlite3"))
    else:
        made = Stores("postgres", request.getfixturevalue("postgres_dsn"))
    try:
        yield made
    finally:
        await made.close()


@pytest.fixture
async def store(stores: Stores) -> Store:
    """One store of each kind, empty."""
    return await stores.open()
