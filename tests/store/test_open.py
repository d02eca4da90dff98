"""Which store the settings name: SQLite without RELAY_DATABASE_URL, PostgreSQL with it; the URL's
password is a secret for the log filter and never part of an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Settings, from_environment
from relay.store.base import StoreError
from relay.store.open import database_secrets, open_store
from relay.store.sqlite import SqliteStore


async def test_without_a_url_the_store_is_the_sqlite_file(tmp_path: Path) -> None:
    store = await open_store(Settings(data_dir=tmp_path))
    try:
        assert isinstance(store, SqliteStore) and store.path == tmp_path / "relay.sqlite3"
    finally:
        await store.close()
    assert database_secrets(Settings(data_dir=tmp_path)) == ()


async def test_a_url_that_is_not_postgresql_is_refused_without_echoing_it(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url="mysql://relay:hunter2-secret@db/relay")
    with pytest.raises(StoreError) as refused:
        await open_store(settings)
    assert "hunter2" not in str(refused.value) and "RELAY_DATABASE_URL" in str(refused.value)


def test_the_url_comes_from_the_environment_and_its_password_is_a_secret() -> None:
    settings = from_environment(
        {"RELAY_DATABASE_URL": "postgresql://relay:hunter2-secret@db:5432/relay", "RELAY_DATABASE_RESYNC_SECONDS": "5"}
    )
    assert settings.database_resync_seconds == 5.0
    assert database_secrets(settings) == ("hunter2-secret",)
    assert "hunter2" not in repr(settings)
