"""The operator's first API key: given by RELAY_API_KEY, or generated on first start and kept on disk."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from relay.config import ConfigError, Settings, api_key_problem
from relay.store.base import Store

log = logging.getLogger("relay.keys")

ADMIN_CLIENT_ID = 1
ADMIN_KEY_FILE = "admin-api-key"


class AdminKeyError(ConfigError):
    """RELAY_API_KEY cannot be used (too short, revoked, another client's); the message never quotes it."""


async def bootstrap_admin_key(store: Store, settings: Settings) -> str | None:
    """Make sure the operator has a key: RELAY_API_KEY when given, else one generated on first start.

    A generated key is kept in `<data dir>/admin-api-key` (mode 0600) so that `make run` can show it
    again; the database itself only holds its hash. None when keys exist and none is known in clear
    (the operator manages them with `restream-relay keys`). Raises AdminKeyError when RELAY_API_KEY
    cannot be used: the relay must not start with a key the operator believes is revoked or weak.
    """
    key_file = settings.data_dir / ADMIN_KEY_FILE
    if settings.api_key:
        await _adopt_given_key(store, settings.api_key)
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


async def _adopt_given_key(store: Store, key: str) -> None:
    """Store RELAY_API_KEY for the admin client on first start; on later starts, check it is still good.

    A revoked key stays revoked: the environment of a service outlives a `keys revoke`, and bringing
    the key back at the next restart would undo the revocation without anyone noticing.
    """
    if problem := api_key_problem(key):  # Settings made in code skip from_environment's check
        raise AdminKeyError(f"RELAY_API_KEY: {problem}")
    existing = await store.find_api_key(key)
    if existing is None:
        await store.create_api_key(ADMIN_CLIENT_ID, "RELAY_API_KEY", key=key)
    elif existing.revoked_at is not None:
        raise AdminKeyError(
            f"RELAY_API_KEY: that key was revoked (key {existing.id}, {existing.revoked_at:%Y-%m-%d %H:%M} UTC) "
            "and stays revoked; set RELAY_API_KEY to a new key, or unset it and create keys with "
            "`restream-relay keys create`"
        )
    elif existing.client_id != ADMIN_CLIENT_ID:
        raise AdminKeyError(
            f"RELAY_API_KEY: that key belongs to client {existing.client_id}, not to client {ADMIN_CLIENT_ID}"
        )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
