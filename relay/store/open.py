"""Which store a node uses: PostgreSQL when `RELAY_DATABASE_URL` names one, else the SQLite file."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

from relay.config import Settings
from relay.store.base import Store, StoreError
from relay.store.postgres import PostgresStore, database_label
from relay.store.sqlite import SqliteStore

log = logging.getLogger("relay.store")


async def open_store(settings: Settings) -> Store:
    """The store the settings name, opened (migrated, checked); raises StoreError with one line to log."""
    if settings.database_url:
        if not settings.database_url.startswith(("postgresql://", "postgres://")):
            raise StoreError("RELAY_DATABASE_URL must be a postgresql:// URL")
        store = await PostgresStore.open(settings.database_url, resync_seconds=settings.database_resync_seconds)
        log.info("definitions in PostgreSQL at %s", database_label(settings.database_url))
        return store
    return SqliteStore(settings.database_path)


def database_secrets(settings: Settings) -> tuple[str | None, ...]:
    """What the log filter must mask of the database settings: the URL's password."""
    return (urlsplit(settings.database_url).password,) if settings.database_url else ()
