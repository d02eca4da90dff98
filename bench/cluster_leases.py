"""What the cluster's bookkeeping costs in PostgreSQL as a node holds more streams.

    python -m bench.cluster_leases [--streams 1000] [--restreams-per-stream 5]

Starts a PostgreSQL of its own (tests/support/postgres.py: Debian's binaries, fsync off) and times,
for one node holding `--streams` leases: a claim (median, p95), one renewal of every lease (the one
statement a node sends every `RELAY_LEASE_RENEW_SECONDS`), one status write of every stream and
restream (the full pass the owner makes at each renewal period) and one full read of them by another
node's `ClusterView` (every `reconcile_interval_seconds`). Milliseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import asyncpg

from relay.cluster.ownership import LeaseSettings, PostgresOwnership
from relay.cluster.schema import migrate
from relay.cluster.status import _UPSERT_RESTREAM, _UPSERT_STREAM, ClusterView, columns
from tests.support.postgres import PostgresServer

SNAPSHOT = {
    "live": True,
    "backup_live": False,
    "input": "main",
    "stream_source_type": "rtmp",
    "video_width": 1920,
    "video_height": 1080,
    "frame_rate": 30.0,
    "status": {"state": "live", "transport": "rtmp", "bitrate_kbps": 6000, "bytes_in": 123456789, "pull": None},
}
PUSH = {"state": "running", "since": "2026-01-01T00:00:00.000Z", "uptime_seconds": 100.0, "bitrate_kbps": 6000,
        "bytes": 123456789, "frames": 3000, "restarts": 0, "overflows": 0, "last_error": None,
        "next_retry_seconds": None, "log_tail": ["frame= 3000 fps= 30 q=-1.0 size= 120000kB"]}  # fmt: skip


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median": round(statistics.median(ordered), 2), "p95": round(ordered[int(len(ordered) * 0.95)], 2)}


async def measure(streams: int, per_stream: int, rounds: int) -> dict[str, Any]:
    server = PostgresServer()
    await asyncio.to_thread(server.start)
    try:
        dsn = await asyncio.to_thread(server.create_database)
        pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
        async with pool.acquire() as connection:
            await migrate(connection)
        ownership = PostgresOwnership(dsn, "a", LeaseSettings(lease_seconds=60, renew_seconds=20), pool=pool)
        claims = []
        for stream_id in range(1, streams + 1):
            started = time.perf_counter()
            await ownership.claim(stream_id, takeover_idle_seconds=4.0)
            claims.append((time.perf_counter() - started) * 1000)
        renewals = []
        for _ in range(rounds):
            for stream_id in range(1, streams + 1):
                ownership.media(stream_id)
            started = time.perf_counter()
            await ownership.renew()
            renewals.append((time.perf_counter() - started) * 1000)
        assert ownership.owned() == frozenset(range(1, streams + 1))
        stream_rows = [(i, "a", 1, 1, True, json.dumps(SNAPSHOT)) for i in range(1, streams + 1)]
        restream_rows = [
            (i * per_stream + j, i, "a", 1, 1, json.dumps(PUSH))
            for i in range(1, streams + 1)
            for j in range(per_stream)
        ]
        writes = []
        for _ in range(rounds):
            started = time.perf_counter()
            async with pool.acquire() as connection, connection.transaction():
                await connection.execute(_UPSERT_STREAM, *columns(stream_rows, 1))
                await connection.execute(_UPSERT_RESTREAM, *columns(restream_rows, 2))
            writes.append((time.perf_counter() - started) * 1000)
        view = ClusterView(dsn, pool, "b")
        reads = []
        for _ in range(rounds):
            started = time.perf_counter()
            await view.refresh()
            reads.append((time.perf_counter() - started) * 1000)
        remote = view.stream(1)
        assert remote is not None and remote.live and remote.node_id == "a"
        await ownership.close()
        await pool.close()
        return {
            "streams": streams,
            "restreams": streams * per_stream,
            "claim_ms": summary(claims),
            "renew_all_ms": summary(renewals),
            "status_write_all_ms": summary(writes),
            "view_read_all_ms": summary(reads),
        }
    finally:
        server.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--restreams-per-stream", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    print(json.dumps(asyncio.run(measure(args.streams, args.restreams_per_stream, args.rounds)), indent=2))


if __name__ == "__main__":
    main()
