"""API keys: stored as SHA-256 hashes with a short public prefix; a revoked key stays revoked.

The rules every store follows (`new_key`, `public_prefix`, `reuse`, `one_to_revoke`) and SQLite's SQL.
Each SQL function runs on the store's worker connection (writes inside the store's transaction).
"""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterable, Sequence

from relay.store.base import AmbiguousKeyPrefix, StoreError
from relay.store.models import ApiKeyRecord
from relay.store.rows import Row, hash_key, key_of, now


def new_key(client_id: int) -> str:
    """A generated key: `<client>$<random>`, 256 random bits."""
    return f"{client_id}${secrets.token_urlsafe(32)}"


def public_prefix(clear: str) -> str:
    """What is listed to tell keys apart: the client and 6 random characters, or a given key's first 6."""
    return clear[: clear.index("$") + 7] if "$" in clear[:24] else clear[:6]


def reuse(existing: Row, client_id: int) -> ApiKeyRecord:
    """A key given again: the same record for its own client while active; otherwise refused."""
    if existing["client_id"] != client_id:
        raise StoreError("that key already belongs to another client")
    if existing["revoked_at"] is not None:
        raise StoreError(f"that key was revoked (key {existing['id']}); a revoked key stays revoked")
    return key_of(existing)


def one_to_revoke(active: Iterable[Row], wanted: str) -> Row | None:
    """The one active row with id `wanted`, or whose prefix starts with it; several: `AmbiguousKeyPrefix`.

    Prefixes are compared in Python, not with LIKE: they hold '$', '_' and '%' as plain characters."""
    if wanted.isdigit():
        rows: Sequence[Row] = [row for row in active if int(row["id"]) == int(wanted)]
    else:
        rows = [row for row in active if str(row["prefix"]).startswith(wanted)]
    if len(rows) > 1:
        raise AmbiguousKeyPrefix(len(rows))
    return rows[0] if rows else None


def insert(c: sqlite3.Connection, client_id: int, clear: str, prefix: str, label: str) -> ApiKeyRecord:
    """Store a key (its hash); the same key given again for its client is the same record."""
    existing = c.execute("SELECT * FROM api_keys WHERE key_hash = ?", (hash_key(clear),)).fetchone()
    if existing is not None:
        return reuse(existing, client_id)
    cur = c.execute(
        "INSERT INTO api_keys (client_id, key_hash, prefix, label, created_at) VALUES (?, ?, ?, ?, ?)",
        (client_id, hash_key(clear), prefix, label, now()),
    )
    return key_of(c.execute("SELECT * FROM api_keys WHERE id = ?", (cur.lastrowid,)).fetchone())


def client_of(conn: sqlite3.Connection, digest: str) -> int | None:
    row = conn.execute("SELECT client_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)).fetchone()
    return None if row is None else int(row[0])


def find(conn: sqlite3.Connection, digest: str) -> ApiKeyRecord | None:
    row = conn.execute("SELECT * FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
    return None if row is None else key_of(row)


def active_ids(conn: sqlite3.Connection, wanted: list[int]) -> set[int]:
    # The primary key makes this one index probe per id; callers pass a bounded set (open feeds).
    marks = ", ".join("?" * len(wanted))
    rows = conn.execute(f"SELECT id FROM api_keys WHERE id IN ({marks}) AND revoked_at IS NULL", wanted)
    return {int(row[0]) for row in rows}


def listed(conn: sqlite3.Connection, client_id: int | None) -> list[ApiKeyRecord]:
    if client_id is None:
        rows = conn.execute("SELECT * FROM api_keys ORDER BY id")
    else:
        rows = conn.execute("SELECT * FROM api_keys WHERE client_id = ? ORDER BY id", (client_id,))
    return [key_of(r) for r in rows]


def revoke(c: sqlite3.Connection, wanted: str) -> ApiKeyRecord | None:
    """Revoke the one active key with id `wanted`, or whose prefix starts with it; several: refused."""
    if wanted.isdigit():
        active = c.execute("SELECT * FROM api_keys WHERE id = ? AND revoked_at IS NULL", (int(wanted),)).fetchall()
    else:
        active = c.execute("SELECT * FROM api_keys WHERE revoked_at IS NULL").fetchall()
    row = one_to_revoke(active, wanted)
    if row is None:
        return None
    c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (now(), row["id"]))
    return key_of(c.execute("SELECT * FROM api_keys WHERE id = ?", (row["id"],)).fetchone())
