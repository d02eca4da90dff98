"""Rows and records: how the stores' rows become frozen records, and the small SQL SQLite shares.

A row is anything read by column name: a `sqlite3.Row` or an asyncpg `Record` (the PostgreSQL store
keeps the same columns, with its own types: booleans, `timestamptz`, `jsonb` read as text). Also the
values the stores make themselves: timestamps, key hashes, stream tokens.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from relay.store.base import GCORE_SETTINGS_FIELDS, RESTREAM_FIELDS, STREAM_FIELDS
from relay.store.models import ApiKeyRecord, GcoreSettings, RestreamRecord, StreamRecord


class Row(Protocol):
    """A row read by column name (`sqlite3.Row`, `asyncpg.Record`)."""

    def __getitem__(self, key: str, /) -> Any: ...


def now_utc() -> datetime:
    """Now, to the millisecond (what SQLite's text keeps, so that a copied row compares equal)."""
    moment = datetime.now(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def now() -> str:
    return now_utc().isoformat(timespec="milliseconds")


def when(value: str | datetime | None) -> datetime | None:
    """A stored moment: SQLite keeps ISO text, PostgreSQL a `timestamptz`."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(value) if value else None


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough: no dictionary to defend against.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A stream's publish token: unguessable and URL-safe (no '#', '?', ',' or '&')."""
    return secrets.token_urlsafe(24)


def settings_json(settings: GcoreSettings) -> str:
    return json.dumps(dataclasses.asdict(settings), separators=(",", ":"))


def settings_of(text: str | None) -> GcoreSettings:
    """The stored settings over the defaults: a key this relay does not know is left out, a missing one is
    the default (a row written before a setting existed)."""
    stored = json.loads(text or "{}")
    known = {name: value for name, value in stored.items() if name in GCORE_SETTINGS_FIELDS}
    if isinstance(known.get("broadcast_ids"), list):
        known["broadcast_ids"] = tuple(known["broadcast_ids"])
    return GcoreSettings(**known)


def with_settings(settings: GcoreSettings, values: Mapping[str, Any]) -> GcoreSettings:
    changes = {name: value for name, value in values.items() if name in GCORE_SETTINGS_FIELDS}
    if "broadcast_ids" in changes:
        changes["broadcast_ids"] = tuple(changes["broadcast_ids"] or ())
    return dataclasses.replace(settings, **changes)


def new_stream_columns(client_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a new stream (but its id and `created_at`, which each store writes its own way)."""
    values = {k: v for k, v in fields.items() if k in STREAM_FIELDS}
    return {
        "client_id": client_id,
        "name": values.get("name", ""),
        "active": bool(values.get("active", True)),
        "token": new_token(),
        "client_user_id": values.get("client_user_id"),
        "srt_passphrase": values.get("srt_passphrase"),
        "srt_latency_ms": values.get("srt_latency_ms"),
        "client_entity_data": values.get("client_entity_data"),
        "gcore_settings": settings_json(with_settings(GcoreSettings(), fields)),
        "pull": bool(values.get("pull", False)),
        "uri": values.get("uri"),
    }


def new_restream_columns(client_id: int, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The columns of a new restream (but its id and `created_at`)."""
    values = {k: v for k, v in fields.items() if k in RESTREAM_FIELDS}
    return {
        "client_id": client_id,
        "stream_id": values["stream_id"],
        "name": values.get("name", ""),
        "active": bool(values.get("active", True)),
        "uri": values["uri"],
        "client_user_id": values.get("client_user_id"),
        "no_audio": bool(values.get("no_audio", False)),
        "no_audio_mode": values.get("no_audio_mode", "drop"),
        "tls_verify": bool(values.get("tls_verify", True)),
    }


def stream_update(changes: Mapping[str, Any]) -> Callable[[StreamRecord], dict[str, Any]]:
    """The columns an update of a stream writes, given the stream before it: its own fields, and the Gcore
    settings merged into the ones it had (one JSON column)."""
    values = {k: v for k, v in changes.items() if k in STREAM_FIELDS}
    settings_changed = not GCORE_SETTINGS_FIELDS.isdisjoint(changes)

    def columns(before: StreamRecord) -> dict[str, Any]:
        if not settings_changed:
            return values
        return {**values, "gcore_settings": settings_json(with_settings(before.gcore_settings, changes))}

    return columns


def stream_of(row: Row) -> StreamRecord:
    return StreamRecord(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        active=bool(row["active"]),
        token=row["token"],
        created_at=when(row["created_at"]) or datetime.now(UTC),
        client_user_id=row["client_user_id"],
        srt_passphrase=row["srt_passphrase"],
        srt_latency_ms=row["srt_latency_ms"],
        client_entity_data=row["client_entity_data"],
        gcore_settings=settings_of(row["gcore_settings"]),
        pull=bool(row["pull"]),
        uri=row["uri"],
    )


def restream_of(row: Row) -> RestreamRecord:
    return RestreamRecord(
        id=row["id"],
        client_id=row["client_id"],
        stream_id=row["stream_id"],
        name=row["name"],
        active=bool(row["active"]),
        uri=row["uri"],
        created_at=when(row["created_at"]) or datetime.now(UTC),
        client_user_id=row["client_user_id"],
        no_audio=bool(row["no_audio"]),
        no_audio_mode=row["no_audio_mode"],
        tls_verify=bool(row["tls_verify"]),
    )


def key_of(row: Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        client_id=row["client_id"],
        prefix=row["prefix"],
        label=row["label"],
        created_at=when(row["created_at"]) or datetime.now(UTC),
        revoked_at=when(row["revoked_at"]),
    )


def select_stream(conn: sqlite3.Connection, stream_id: int, client_id: int | None) -> StreamRecord | None:
    if client_id is None:
        row = conn.execute("SELECT * FROM streams WHERE id = ?", (stream_id,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM streams WHERE id = ? AND client_id = ?", (stream_id, client_id)).fetchone()
    return None if row is None else stream_of(row)


def select_restream(conn: sqlite3.Connection, restream_id: int, client_id: int | None) -> RestreamRecord | None:
    if client_id is None:
        row = conn.execute("SELECT * FROM restreams WHERE id = ?", (restream_id,)).fetchone()
    else:
        row = conn.execute(
            "SELECT * FROM restreams WHERE id = ? AND client_id = ?", (restream_id, client_id)
        ).fetchone()
    return None if row is None else restream_of(row)


def insert_row(conn: sqlite3.Connection, table: str, values: Mapping[str, Any]) -> int:
    """Insert one row (column names are the store's own); returns its id."""
    names = ", ".join(values)
    marks = ", ".join("?" * len(values))
    cur = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", tuple(values.values()))
    assert cur.lastrowid is not None
    return cur.lastrowid


def update_row(conn: sqlite3.Connection, table: str, row_id: int, values: Mapping[str, Any]) -> None:
    if not values:
        return
    # Column names come from the STREAM_FIELDS/RESTREAM_FIELDS allow-lists (or the store's own: token,
    # gcore_settings), never from the request.
    assignments = ", ".join(f"{name} = ?" for name in values)
    params = [int(v) if isinstance(v, bool) else v for v in values.values()]
    conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*params, row_id))
