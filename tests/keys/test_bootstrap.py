"""The operator's key from RELAY_API_KEY (relay/keys.py): adopted once, never brought back once revoked."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import Settings
from relay.keys import ADMIN_CLIENT_ID, AdminKeyError, bootstrap_admin_key
from relay.store.sqlite import SqliteStore
from tests.support import ADMIN_KEY


async def test_a_revoked_relay_api_key_stays_revoked(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, api_key=ADMIN_KEY)
    store = SqliteStore(settings.database_path)
    try:
        assert await bootstrap_admin_key(store, settings) == ADMIN_KEY
        assert await bootstrap_admin_key(store, settings) == ADMIN_KEY  # a restart: the same key, still good
        [record] = await store.list_api_keys()
        assert record.client_id == ADMIN_CLIENT_ID
        await store.revoke_api_key(str(record.id))

        with pytest.raises(AdminKeyError) as refused:
            await bootstrap_admin_key(store, settings)
        assert "revoked" in str(refused.value) and ADMIN_KEY not in str(refused.value)
        assert await store.client_for_key(ADMIN_KEY) is None
    finally:
        await store.close()


async def test_a_short_or_foreign_relay_api_key_is_refused(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.sqlite3")
    try:
        with pytest.raises(AdminKeyError, match="at least 32 characters"):
            await bootstrap_admin_key(store, Settings(data_dir=tmp_path, api_key="1$short"))
        tenant_key, _ = await store.create_api_key(5)
        with pytest.raises(AdminKeyError, match="belongs to client 5") as refused:
            await bootstrap_admin_key(store, Settings(data_dir=tmp_path, api_key=tenant_key))
        assert tenant_key not in str(refused.value)
        assert await store.list_api_keys(ADMIN_CLIENT_ID) == []
    finally:
        await store.close()
