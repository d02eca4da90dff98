"""One node's part of the cluster: its pool, its row in `nodes`, its ownership, status and view.

Composed by api/server.py after the store and before the engine; closed in reverse (the engine closes
the ownership, giving its leases up, before `Cluster.close` closes the pool).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import asyncpg

from relay.cluster.listen import DATABASE_ERRORS
from relay.cluster.ownership import LeaseSettings, PostgresOwnership
from relay.cluster.schema import migrate
from relay.cluster.status import ClusterView, StatusPublisher, StatusSource
from relay.config import Settings
from relay.engine.events import RemoteRestreamChanged, RemoteStreamChanged
from relay.engine.status import RestreamStatus, StreamSnapshot
from relay.store.base import StoreError

log = logging.getLogger("relay.cluster")


class ClusterEngine(StatusSource, Protocol):
    def emit_remote(self, event: RemoteStreamChanged | RemoteRestreamChanged) -> None: ...


_REGISTER = """
INSERT INTO nodes (id, api_url, ingest, started_at, last_seen) VALUES ($1, $2, $3::jsonb, now(), now())
ON CONFLICT (id) DO UPDATE SET api_url = EXCLUDED.api_url, ingest = EXCLUDED.ingest,
    started_at = EXCLUDED.started_at, last_seen = now()
"""


class Cluster:
    """`start()` connects (pool of its own), migrates the cluster's tables and registers the node."""

    def __init__(self, settings: Settings) -> None:
        assert settings.database_url is not None
        self._dsn = settings.database_url
        self.node_id = settings.resolved_node_id
        self._settings = settings
        self._pool: asyncpg.Pool | None = None
        self._ownership: PostgresOwnership | None = None
        self._view: ClusterView | None = None
        self._publisher: StatusPublisher | None = None

    @property
    def ownership(self) -> PostgresOwnership:
        assert self._ownership is not None, "start() first"
        return self._ownership

    @property
    def view(self) -> ClusterView:
        assert self._view is not None, "start() first"
        return self._view

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "start() first"
        return self._pool

    async def start(self) -> None:
        settings = self._settings
        try:
            self._pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=4, timeout=max(5.0, settings.lease_renew_seconds)
            )
            async with self._pool.acquire() as connection:
                await migrate(connection)
            await self.register("", {})
        except DATABASE_ERRORS as exc:  # one line for the operator; never the URL (it may hold a password)
            raise StoreError(f"cannot use the cluster's database ({type(exc).__name__}: {exc})") from exc
        lease = LeaseSettings(settings.lease_seconds, settings.lease_renew_seconds, settings.lease_margin_seconds)
        self._ownership = PostgresOwnership(self._dsn, self.node_id, lease, pool=self._pool)
        refresh = settings.reconcile_interval_seconds
        self._view = ClusterView(self._dsn, self._pool, self.node_id, refresh_seconds=refresh)
        await self._view.start()
        log.info("cluster node %s on PostgreSQL (lease %.0f s)", self.node_id, settings.lease_seconds)

    async def register(self, api_url: str, ingest: Mapping[str, Any]) -> None:
        """This node's row: its API address and ingest addresses (what other nodes and operators read)."""
        async with self.pool.acquire() as connection:
            await connection.execute(_REGISTER, self.node_id, api_url, json.dumps(dict(ingest)))

    def publish(
        self,
        engine: ClusterEngine,
        stream_fields: Callable[[StreamSnapshot], Mapping[str, Any]],
        restream_fields: Callable[[RestreamStatus], Mapping[str, Any]],
    ) -> None:
        """Start publishing the engine's status (after the engine started)."""
        self._publisher = StatusPublisher(
            self.pool,
            self.node_id,
            engine,
            self.ownership,
            stream_fields,
            restream_fields,
            period_seconds=self._settings.lease_renew_seconds,
        )
        self._publisher.start()
        self.view.on_events(engine.emit_remote)

    async def close(self) -> None:
        if self._publisher is not None:
            await self._publisher.close()
        if self._view is not None:
            await self._view.close()
        if self._ownership is not None:
            await self._ownership.close()  # idempotent: the engine closed it already
        if self._pool is not None:
            await self._pool.close()
