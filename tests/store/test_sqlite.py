"""The SQLite store: versioned migrations keep data, writes are durable, ids are never reused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from relay.store.base import StoreError
from relay.store.migrations import MIGRATIONS, migrate
from relay.store.models import GcoreSettings
from relay.store.sqlite import SqliteStore


async def test_upgrade_from_the_first_schema_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO streams (client_id, name, active, token, created_at)"
        " VALUES (1, 'old', 1, 'tok-123456', '2026-01-01T00:00:00.000+00:00')"
    )
    conn.close()

    store = SqliteStore(path)
    try:
        stream = await store.get_stream(1)
        assert stream is not None and stream.name == "old" and stream.token == "tok-123456"
        assert stream.srt_latency_ms is None
        # Written before the Gcore settings existed: every one reads as Gcore's default.
        assert stream.client_entity_data is None and stream.gcore_settings == GcoreSettings()
        updated = await store.update_stream(1, 1, {"srt_latency_ms": 400})
        assert updated is not None and updated.srt_latency_ms == 400
    finally:
        await store.close()
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    check.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "new.sqlite3", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    with pytest.raises(StoreError, match="newer"):
        migrate(conn)
    conn.close()


async def test_keys_are_stored_hashed(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "keys.sqlite3")
    try:
        key, record = await store.create_api_key(3, "label")
        assert await store.client_for_key(key) == 3 and record.prefix in key
    finally:
        await store.close()
    assert key.encode() not in _database_bytes(tmp_path)


def _database_bytes(directory: Path) -> bytes:
    return b"".join(p.read_bytes() for p in directory.glob("keys.sqlite3*"))


async def test_upgrade_gives_existing_streams_pull_false_and_no_uri(tmp_path: Path) -> None:
    path = tmp_path / "v2.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        for statement in migration.split(";"):
            if statement.strip():
                conn.execute(statement)
    conn.execute("PRAGMA user_version = 2")
    conn.execute(
        "INSERT INTO streams (client_id, name, active, token, created_at)"
        " VALUES (1, 'pushed', 1, 'tok-123456', '2026-01-01T00:00:00.000+00:00')"
    )
    conn.close()

    store = SqliteStore(path)
    try:
        stream = await store.get_stream(1)
        assert stream is not None and stream.pull is False and stream.uri is None
        updated = await store.update_stream(1, 1, {"pull": True, "uri": "rtmp://a.example.com/live/k"})
        assert updated is not None and updated.pull is True and updated.uri == "rtmp://a.example.com/live/k"
        created = await store.create_stream(1, {"name": "pulled", "pull": True, "uri": "srt://b.example.com:9000"})
        assert created.pull is True and created.uri == "srt://b.example.com:9000"
        assert "uri" not in repr(created), "the uri may hold a secret: kept out of reprs"
    finally:
        await store.close()
