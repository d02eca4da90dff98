"""/healthz and API writes while the store's disk is full (SQLite's max_page_count on the real writer
connection), through real HTTP: 503s that say so, nothing acknowledged lost, recovery without a restart."""

from __future__ import annotations

from api.server import Server
from relay.store.sqlite import SqliteStore
from tests.conftest import ApiClient


async def set_max_pages(service: Server, extra_pages: int) -> None:
    store = service.store
    assert isinstance(store, SqliteStore)
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
