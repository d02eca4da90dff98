"""/healthz and API writes while the store's disk is full (SQLite's max_page_count on the real writer
connection), or while its PostgreSQL server is stopped, through real HTTP: 503s that say so, nothing
acknowledged lost, recovery without a restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.server import Server
from relay.store.sqlite import SqliteStore
from tests.conftest import ApiClient, service_settings
from tests.support import ADMIN_KEY
from tests.support.postgres import PostgresServer


async def set_max_pages(service: Server, extra_pages: int) -> None:
    store = service.store
    if not isinstance(store, SqliteStore):
        pytest.skip("SQLite's page limit (RELAY_TEST_STORE=postgres: see the PostgreSQL test below)")
    pages = await store._run(lambda conn: conn.execute("PRAGMA page_count").fetchone()[0])
    # fetchall: the PRAGMA answers a row, and a statement left unfinished keeps a table lock until its cursor
    # is collected, which the probe of /healthz (on the API's own thread) could meet first.
    await store._run(lambda conn: conn.execute(f"PRAGMA max_page_count = {pages + extra_pages}").fetchall())


async def test_a_full_disk_is_a_503_then_health_recovers_by_itself(service: Server, api: ApiClient) -> None:
    assert (await api.as_key(None).call("GET", "/healthz"))[:2] == (200, {"status": "ok", "live_streams": 0})
    await set_max_pages(service, 0)
    acknowledged: list[int] = []
    for n in range(500):  # until a row needs a page the database may not have
        status, body, _ = await api.call("POST", "/streaming/streams", {"name": f"stream {n:03d} " + "x" * 200})
        if status != 200:
            break
        acknowledged.append(body["id"])
    assert (status, body) == (503, {"status": 503, "error": "storage unavailable, try again later"})
    assert (await api.as_key(None).call("GET", "/healthz"))[:2] == (503, {"status": "unavailable", "store": "failing"})

    await set_max_pages(service, 1000)
    assert (await api.as_key(None).call("GET", "/healthz"))[0] == 200  # no client had to write first
    status, _, headers = await api.call("GET", "/streaming/streams")
    assert status == 200 and int(headers["X-Total-Count"]) == len(acknowledged) > 0
    assert (await api.call("POST", "/streaming/streams", {"name": "after"}))[0] == 200


@pytest.fixture
async def pg_api(own_postgres_server: PostgresServer, tmp_path: Path) -> AsyncIterator[ApiClient]:
    relay = Server(service_settings(tmp_path, database_url=own_postgres_server.create_database()))
    await relay.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield ApiClient(session, f"http://127.0.0.1:{relay.ports.http}", ADMIN_KEY)
    finally:
        await relay.close()


@pytest.mark.integration
async def test_a_stopped_postgresql_is_a_503_then_health_recovers_by_itself(
    own_postgres_server: PostgresServer, pg_api: ApiClient
) -> None:
    kept = await pg_api.call("POST", "/streaming/streams", {"name": "kept"})
    assert kept[0] == 200
    await asyncio.to_thread(own_postgres_server.stop)
    status, body, _ = await pg_api.call("POST", "/streaming/streams", {"name": "lost"})
    assert (status, body) == (503, {"status": 503, "error": "storage unavailable, try again later"})
    assert (await pg_api.call("GET", f"/streaming/streams/{kept[1]['id']}"))[0] == 503
    health = await pg_api.as_key(None).call("GET", "/healthz")
    assert health[:2] == (503, {"status": "unavailable", "store": "failing"})

    await asyncio.to_thread(own_postgres_server.start)
    assert (await pg_api.as_key(None).call("GET", "/healthz"))[0] == 200  # no client had to write first
    status, body, _ = await pg_api.call("GET", "/streaming/streams")
    assert status == 200 and [s["name"] for s in body] == ["kept"]
