"""The operator's first API key: given by RELAY_API_KEY, or generated on first start and kept on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from relay.config import Settings
from relay.store.base import Store

log = logging.getLogger("relay.keys")

ADMIN_CLIENT_ID = 1
ADMIN_KEY_FILE = "admin-api-key"


async def bootstrap_admin_key(store: Store, settings: Settings) -> str | None:
    """Make sure the operator has a key: RELAY_API_KEY when given, else one generated on first start.

    A generated key is kept in `<data dir>/admin-api-key` (mode 0600) so that `make run` can show it
    again; the database itself only holds its hash. None when keys exist and none is known in clear
    (the operator manages them with `restream-relay keys`).
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
        return None
    key, _ = await store.create_api_key(ADMIN_CLIENT_ID, "generated on first start")
    _write_private(key_file, key + "\n")
    log.info("generated an API key for client %d, kept in %s", ADMIN_CLIENT_ID, key_file)
    return key


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
