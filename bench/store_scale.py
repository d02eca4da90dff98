"""The store at scale, SQLite against PostgreSQL: API latency and the engine's full pass.

    python -m bench.store_scale [--streams 1000] [--restreams 5000] [--samples 200]
                                [--database-url postgresql://... | --own-postgres]

Starts the relay in-process on free loopback ports (SQLite in a temporary data directory, or the
PostgreSQL database given, which should be empty; `--own-postgres` starts a throwaway server with the
tests' `PostgresServer`), defines `--streams` streams and `--restreams` restreams through the store
(all active, no stream live, so nothing is pushed), then times through real HTTP: stream creates,
list pages (`?page=N`, newest first) and gets by id; then the engine's full pass (`Engine.reconcile`:
every active restream and every stream read, the supervisor brought in line). With PostgreSQL, also
how long a stream update made through the node takes to reach a second node's change feed (a second
`PostgresStore` on the same database: LISTEN/NOTIFY, then the read of `after`). Median and p95 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from relay.config import Settings
from relay.store.base import Store
from relay.store.changes import Change

KEY = "bench-store-scale-key-0123456789abcdef"


def summary(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[max(0, int(len(ordered) * 0.95) - 1)]
    return f"median {statistics.median(ordered):.2f} p95 {p95:.2f}"


async def timed(samples: int, call: Callable[[int], Awaitable[None]]) -> list[float]:
    taken: list[float] = []
    for n in range(samples):
        started = time.perf_counter()
        await call(n)
        taken.append((time.perf_counter() - started) * 1000)
    return taken


async def measure(database_url: str | None, streams: int, restreams: int, samples: int) -> dict[str, str]:
    from api.server import Server

    with tempfile.TemporaryDirectory() as directory:
        settings = Settings(
            data_dir=Path(directory),
            database_url=database_url,
            media_bind="127.0.0.1",
            api_bind="127.0.0.1",
            http_port=0,
            rtmp_port=0,
            rtmps_port=0,
            srt_port=0,
            api_key=KEY,
            srt_enabled=False,
            max_streams_per_client=1_000_000,
            max_restreams_per_stream=1_000_000,
            reconcile_interval_seconds=3600.0,  # only the passes timed here
        )
        server = Server(settings)
        await server.start()
        try:
            store = server.store
            started = time.perf_counter()
            ids = [(await store.create_stream(1, {"name": f"s{n}"})).id for n in range(streams)]
            for n in range(restreams):
                await store.create_restream(
                    1, {"stream_id": ids[n % len(ids)], "uri": f"rtmp://192.0.2.1/live/{n}", "name": f"r{n}"}
                )
            fill_seconds = time.perf_counter() - started
            base = f"http://127.0.0.1:{server.ports.http}/streaming"
            pages = max(1, streams // 25)
            rng = random.Random(1)
            async with aiohttp.ClientSession(headers={"Authorization": f"APIKey {KEY}"}) as http:

                async def create(n: int) -> None:
                    async with http.post(f"{base}/streams", json={"name": f"new{n}"}) as response:
                        assert response.status == 200, await response.text()

                async def page(n: int) -> None:
                    async with http.get(f"{base}/streams?page={rng.randint(1, pages)}") as response:
                        assert response.status == 200
                        await response.read()

                async def get(n: int) -> None:
                    async with http.get(f"{base}/streams/{rng.choice(ids)}") as response:
                        assert response.status == 200
                        await response.read()

                creates = await timed(samples, create)
                lists = await timed(samples, page)
                gets = await timed(samples, get)

            async def reconcile(n: int) -> None:
                await server.engine.reconcile()

            async def reads(n: int) -> None:
                await store.active_restreams()
                await store.all_streams()

            passes = await timed(max(5, samples // 20), reconcile)
            pass_reads = await timed(max(5, samples // 20), reads)
            reach = await notification_latency(database_url, store, ids, samples) if database_url else None
        finally:
            await server.close()
    return {
        "fill (store writes, s)": f"{fill_seconds:.1f}",
        "POST /streams ms": summary(creates),
        "GET /streams?page ms": summary(lists),
        "GET /streams/{id} ms": summary(gets),
        "Engine.reconcile ms": summary(passes),
        "  of which the store's reads ms": summary(pass_reads),
    } | ({} if reach is None else {"update reaching another node's feed ms": summary(reach)})


async def notification_latency(url: str, store: Store, ids: list[int], samples: int) -> list[float]:
    """From the call of an update on this node to the change on a second node's feed."""
    from relay.store.postgres import PostgresStore

    other = await PostgresStore.open(url)
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def listener(change: Change) -> None:
        arrived.put_nowait(time.perf_counter())

    other.changes.subscribe(listener)
    taken: list[float] = []
    try:
        for n in range(samples):
            started = time.perf_counter()
            await store.update_stream(ids[n % len(ids)], 1, {"name": f"moved {n}"})
            taken.append((await asyncio.wait_for(arrived.get(), 10) - started) * 1000)
    finally:
        await other.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--restreams", type=int, default=5000)
    parser.add_argument("--samples", type=int, default=200)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--database-url", help="an empty PostgreSQL database (default: SQLite in a temp dir)")
    where.add_argument("--own-postgres", action="store_true", help="start a throwaway PostgreSQL server")
    args = parser.parse_args()
    server = None
    url = args.database_url
    if args.own_postgres:
        from tests.support.postgres import PostgresServer

        server = PostgresServer()
        server.start()
        url = server.create_database()
    try:
        result = asyncio.run(measure(url, args.streams, args.restreams, args.samples))
    finally:
        if server is not None:
            server.cleanup()
    kind = "PostgreSQL" if url else "SQLite"
    print(f"{kind}, {args.streams} streams and {args.restreams} restreams, {args.samples} samples each:")
    for name, value in result.items():
        print(f"  {name}: {value}")


if __name__ == "__main__":
    main()
