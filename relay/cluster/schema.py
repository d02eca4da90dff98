"""The cluster's own tables in PostgreSQL, with versioned migrations (appended to; never edit one that shipped).

The definitions (api_keys, streams, restreams) belong to the PostgreSQL store; these five tables are
the cluster's: who the nodes are, who owns which stream, and the status owners publish. Every node
runs `migrate` at start, under an advisory lock, so nodes starting together apply each step once.
"""

from __future__ import annotations

import asyncpg

from relay.store.base import StoreError

MIGRATIONS: tuple[str, ...] = (
    # 1: nodes, leases and the published status.
    """
    CREATE TABLE nodes (
        id text PRIMARY KEY,
        api_url text NOT NULL DEFAULT '',
        ingest jsonb NOT NULL DEFAULT '{}'::jsonb,
        started_at timestamptz NOT NULL DEFAULT now(),
        last_seen timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE leases (
        stream_id bigint PRIMARY KEY,
        node_id text NOT NULL,
        epoch bigint NOT NULL,
        expires_at timestamptz NOT NULL,
        media_at timestamptz NOT NULL
    );
    CREATE INDEX leases_node ON leases (node_id);
    CREATE TABLE stream_status (
        stream_id bigint PRIMARY KEY,
        node_id text NOT NULL,
        epoch bigint NOT NULL,
        client_id bigint NOT NULL,
        live boolean NOT NULL,
        snapshot jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE restream_status (
        restream_id bigint PRIMARY KEY,
        stream_id bigint NOT NULL,
        node_id text NOT NULL,
        epoch bigint NOT NULL,
        client_id bigint NOT NULL,
        status jsonb NOT NULL,
        updated_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE INDEX restream_status_stream ON restream_status (stream_id);
    """,
)

_LOCK_KEY = 0x72656C6179  # "relay": one advisory lock id for the cluster's migrations


async def migrate(connection: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> int:
    """Bring the cluster's tables to the newest version; returns it. Refuses a newer database."""
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
        await connection.execute("CREATE TABLE IF NOT EXISTS cluster_schema_version (version integer NOT NULL)")
        version = await connection.fetchval("SELECT max(version) FROM cluster_schema_version") or 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"the cluster's tables are at version {version}, newer than this relay ({len(MIGRATIONS)})"
            )
        for number, sql in enumerate(MIGRATIONS[version:], start=version + 1):
            await connection.execute(sql)
            await connection.execute("INSERT INTO cluster_schema_version (version) VALUES ($1)", number)
        return len(MIGRATIONS)
