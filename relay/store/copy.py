"""Copy a SQLite database's definitions into PostgreSQL: `restream-relay db copy`.

Keys, streams and restreams keep their ids (push URLs and API clients keep working), and each table's
id sequence is set past the highest id SQLite ever handed out (its `sqlite_sequence`, not only the
rows left), so a deleted stream's id never comes back on the new database either. One transaction:
all or nothing. A target that already holds definitions is refused unless `replace` is asked; the copy
also sends the nodes a notification to resynchronise at once.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from relay.store.base import StoreError
from relay.store.migrations import open_writer
from relay.store.pg_migrations import migrate
from relay.store.postgres import CANNOT_OPEN, CHANNEL, Notice, database_label
from relay.store.rows import restream_of, settings_json, stream_of, when

TABLES = ("api_keys", "streams", "restreams")


@dataclass(frozen=True, slots=True)
class Copied:
    api_keys: int
    streams: int
    restreams: int


def _read(path: Path) -> tuple[list[sqlite3.Row], list[sqlite3.Row], list[sqlite3.Row], dict[str, int]]:
    if not path.is_file():
        raise StoreError(f"no SQLite database at {path}")
    conn = open_writer(path)  # checked and brought to this relay's schema, as a start would
    try:
        keys = conn.execute("SELECT * FROM api_keys ORDER BY id").fetchall()
        streams = conn.execute("SELECT * FROM streams ORDER BY id").fetchall()
        restreams = conn.execute("SELECT * FROM restreams ORDER BY id").fetchall()
        sequences = {str(name): int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}
    finally:
        conn.close()
    return keys, streams, restreams, sequences


async def copy_sqlite_to_postgres(path: Path, url: str, *, replace: bool = False) -> Copied:
    """Copy every definition of the SQLite file at `path` into the PostgreSQL database at `url`.

    Raises StoreError (a message without the URL's password) when either side cannot be used or the
    target is not empty and `replace` is False."""
    keys, streams, restreams, sequences = _read(path)
    try:
        conn = await asyncpg.connect(url, timeout=10)
    except CANNOT_OPEN as exc:
        raise StoreError(f"cannot open the database {database_label(url)}: {exc}") from exc
    try:
        await migrate(conn)
        async with conn.transaction():
            # Nodes may be running: nobody writes definitions while they are replaced.
            await conn.execute("LOCK TABLE api_keys, streams, restreams IN EXCLUSIVE MODE")
            held = {table: int(await conn.fetchval(f"SELECT COUNT(*) FROM {table}")) for table in TABLES}
            if any(held.values()) and not replace:
                counts = ", ".join(f"{count} {table}" for table, count in held.items())
                raise StoreError(f"{database_label(url)} already holds definitions ({counts}): --force replaces them")
            await conn.execute("DELETE FROM restreams; DELETE FROM streams; DELETE FROM api_keys")
            await conn.executemany(
                "INSERT INTO api_keys (id, client_id, key_hash, prefix, label, created_at, revoked_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                [
                    (
                        row["id"],
                        row["client_id"],
                        row["key_hash"],
                        row["prefix"],
                        row["label"],
                        when(row["created_at"]),
                        when(row["revoked_at"]),
                    )
                    for row in keys
                ],
            )
            await conn.executemany(
                "INSERT INTO streams (id, client_id, name, active, token, client_user_id, srt_passphrase,"
                " srt_latency_ms, client_entity_data, gcore_settings, pull, uri, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
                [
                    (
                        s.id,
                        s.client_id,
                        s.name,
                        s.active,
                        s.token,
                        s.client_user_id,
                        s.srt_passphrase,
                        s.srt_latency_ms,
                        s.client_entity_data,
                        settings_json(s.gcore_settings),
                        s.pull,
                        s.uri,
                        s.created_at,
                    )
                    for s in map(stream_of, streams)
                ],
            )
            await conn.executemany(
                "INSERT INTO restreams (id, client_id, stream_id, name, active, uri, client_user_id, no_audio,"
                " no_audio_mode, tls_verify, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
                [
                    (
                        r.id,
                        r.client_id,
                        r.stream_id,
                        r.name,
                        r.active,
                        r.uri,
                        r.client_user_id,
                        r.no_audio,
                        r.no_audio_mode,
                        r.tls_verify,
                        r.created_at,
                    )
                    for r in map(restream_of, restreams)
                ],
            )
            for table in TABLES:
                # Past every id SQLite ever gave (deleted rows' too), and past what the target had given.
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" GREATEST($1::bigint, (SELECT COALESCE(MAX(id), 0) FROM {table}),"
                    f" (SELECT last_value FROM {table}_id_seq)), TRUE)",
                    sequences.get(table, 0),
                )
            await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, Notice("resync", 0, "copy").payload())
    except CANNOT_OPEN as exc:
        raise StoreError(f"copying into {database_label(url)} failed: {exc}") from exc
    finally:
        await conn.close()
    return Copied(len(keys), len(streams), len(restreams))
