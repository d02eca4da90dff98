"""Two (or more) nodes' ownership against one real PostgreSQL, in the test's loop."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import asyncpg

from relay.cluster.ownership import LeaseSettings, PostgresOwnership
from relay.cluster.schema import migrate

QUICK = LeaseSettings(lease_seconds=3.0, renew_seconds=0.4, margin_seconds=1.2)
"""Short leases so that expiry is seen in a test's time (renew + margin < lease, as the settings demand)."""


class Node:
    """One node's ownership and what it was told it lost."""

    def __init__(self, ownership: PostgresOwnership) -> None:
        self.ownership = ownership
        self.lost: list[int] = []
        ownership.on_lost(self.lost.append)


@asynccontextmanager
async def node(dsn: str, node_id: str, settings: LeaseSettings = QUICK) -> AsyncIterator[Node]:
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=3)
    try:
        async with pool.acquire() as connection:
            await migrate(connection)
        ownership = PostgresOwnership(dsn, node_id, settings, pool=pool)
        await ownership.start()
        try:
            yield Node(ownership)
        finally:
            await ownership.close()
    finally:
        await pool.close()


async def lease_valid_at(dsn: str, stream_id: int, moment: float) -> tuple[str, bool]:
    """(owner, was the lease valid at `moment`), `moment` on this process's monotonic clock and in the
    past: the database's `now()` is read after it, and the time since is taken off (an upper bound of
    the database's time at `moment`), so a slow query cannot make an early stop look late."""
    asked = time.monotonic()
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT node_id, expires_at, now() AS db_now FROM leases WHERE stream_id = $1", stream_id
        )
    finally:
        await connection.close()
    assert row is not None
    return row["node_id"], row["db_now"] - timedelta(seconds=asked - moment) < row["expires_at"]
