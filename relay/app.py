"""A relay node: the store, the engine and the ingest listeners, started in order, stopped in reverse.

The HTTP control API is added by the caller (api/cli.py), since the engine never imports the API.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

from relay.config import Settings
from relay.engine import Relay
from relay.store.sqlite import SqliteStore

log = logging.getLogger("relay.app")

ADMIN_CLIENT_ID = 1
ADMIN_KEY_FILE = "admin-api-key"


class RelayNode:
    """Owns one relay's parts and their lifecycle; `start()` then `close()` (idempotent)."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.store: SqliteStore | None = None
        self.relay: Relay | None = None
        self.admin_key: str | None = None
        self._closed = False

    async def start(self) -> Relay:
        settings = self.settings
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = SqliteStore(settings.database_path)
        self.admin_key = await bootstrap_admin_key(self.store, settings)
        self.relay = Relay(settings, self.store, clock=self.clock)
        await self.relay.start()
        return self.relay

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.relay is not None:
            await self.relay.close()
        if self.store is not None:
            await self.store.close()


async def bootstrap_admin_key(store: SqliteStore, settings: Settings) -> str | None:
    """Make sure the operator has a key: RELAY_API_KEY when given, else one generated on first start.

    A generated key is kept in `<data dir>/admin-api-key` (mode 0600) so that `make run` can show it
    again; the database itself only holds its hash.
    """
    key_file = settings.data_dir / ADMIN_KEY_FILE
    if settings.api_key:
        await store.create_api_key(ADMIN_CLIENT_ID, "RELAY_API_KEY", key=settings.api_key)
        return settings.api_key
    if key_file.exists():
        key = key_file.read_text().strip()
        if key and await store.client_for_key(key) is not None:
            return key
    if await store.list_api_keys():
        return None  # keys exist and the operator manages them with `restream-relay keys`
    key, _ = await store.create_api_key(ADMIN_CLIENT_ID, "generated on first start")
    _write_private(key_file, key + "\n")
    log.info("generated an API key for client %d, kept in %s", ADMIN_CLIENT_ID, key_file)
    return key


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)

