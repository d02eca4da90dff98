"""Which store a node uses: PostgreSQL when `RELAY_DATABASE_URL` names one, else the SQLite file."""

from __future__ import annotations

import asyncio
import logging
import time
from urllib.parse import urlsplit

from relay.config import Settings
from relay.store.base import Store, StoreError
from relay.store.postgres import DatabaseUnreachable, PostgresStore, database_label
from relay.store.sqlite import SqliteStore

log = logging.getLogger("relay.store")

FIRST_PAUSE_SECONDS = 0.5
MAX_PAUSE_SECONDS = 5.0


async def open_store(settings: Settings) -> Store:
    """The store the settings name, opened (migrated, checked); raises StoreError with one line to log."""
    if settings.database_url:
        if not settings.database_url.startswith(("postgresql://", "postgres://")):
            raise StoreError("RELAY_DATABASE_URL must be a postgresql:// URL")
        store = await _open_postgres(settings.database_url, settings)
        log.info("definitions in PostgreSQL at %s", database_label(settings.database_url))
        return store
    return SqliteStore(settings.database_path)


async def _open_postgres(url: str, settings: Settings) -> PostgresStore:
    """PostgreSQL opened, tried again while it cannot be reached, for `database_wait_seconds`: a node and its
    database started together (docker compose, a reboot) need not race. One line per try; a refusal (a wrong
    password, a missing database) is not tried again."""
    deadline = time.monotonic() + settings.database_wait_seconds
    pause = FIRST_PAUSE_SECONDS
    while True:
        try:
            return await PostgresStore.open(url, resync_seconds=settings.database_resync_seconds)
        except DatabaseUnreachable as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise
            log.warning("%s; trying again for %.0f s more (RELAY_DATABASE_WAIT_SECONDS)", exc, left)
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 2, MAX_PAUSE_SECONDS)


def database_secrets(settings: Settings) -> tuple[str | None, ...]:
    """What the log filter must mask of the database settings: the URL's password."""
    return (urlsplit(settings.database_url).password,) if settings.database_url else ()
