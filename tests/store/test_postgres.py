"""The PostgreSQL store as nodes share it: two stores on one database are two nodes. A write through one
reaches the other's change feed (NOTIFY), also when the other's listening connection was killed meanwhile
(reconnect, then a full diff), and a change made by plain SQL, with no NOTIFY, is found by the periodic
diff. Losing the server: reads and writes fail as StoreUnavailable, health recovers when it is back.
Migrations: several nodes starting at once on an empty database, a schema newer than the relay."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import replace

import asyncpg
import pytest

from relay.store.base import StoreError, StoreUnavailable
from relay.store.changes import Change, RestreamChanged, StreamChanged
from relay.store.pg_migrations import MIGRATIONS
from relay.store.postgres import PostgresStore, database_label
from tests.support.impair import TcpImpairment, tcp_impair
from tests.support.polling import wait_for
from tests.support.postgres import PostgresServer, dsn_via, end_other_connections, server_address

pytestmark = pytest.mark.integration

ARRIVAL_SECONDS = 5.0
"""How long a test waits for a change to arrive: a bound for a hung test, not a speed requirement."""


class Heard:
    """A store's change feed as a queue: what a node's engine would be told, in order."""

    def __init__(self, store: PostgresStore) -> None:
        self.queue: asyncio.Queue[Change] = asyncio.Queue()
        store.changes.subscribe(self._on_change)

    async def _on_change(self, change: Change) -> None:
        self.queue.put_nowait(change)

    async def next(self, within: float = ARRIVAL_SECONDS) -> Change:
        return await asyncio.wait_for(self.queue.get(), within)

    def empty(self) -> bool:
        return self.queue.empty()


@pytest.fixture
async def nodes(postgres_dsn: str) -> AsyncIterator[tuple[PostgresStore, PostgresStore]]:
    x = await PostgresStore.open(postgres_dsn)
    y = await PostgresStore.open(postgres_dsn, resync_seconds=3600)  # only notifications and reconnects
    try:
        yield x, y
    finally:
        await y.close()
        await x.close()


async def test_a_write_through_one_node_reaches_the_others_feed_with_before_and_after(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    x, y = nodes
    heard_x, heard_y = Heard(x), Heard(y)
    started = time.monotonic()
    stream = await x.create_stream(1, {"name": "show", "srt_passphrase": "0123456789ab"})
    assert await heard_y.next() == StreamChanged(stream.id, None, stream) == await heard_x.next()
    latency_ms = (time.monotonic() - started) * 1000
    print(f"a create through X reached Y's feed {latency_ms:.1f} ms after the call")

    restream = await x.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://a.example.com/live/key"})
    paused = await x.update_restream(restream.id, 1, {"active": False})
    reset = await x.reset_stream_token(stream.id, 1)
    assert paused is not None and reset is not None
    told = [
        RestreamChanged(restream.id, None, restream),
        RestreamChanged(restream.id, restream, paused),
        StreamChanged(stream.id, stream, reset),  # Y's engine disconnects publishers of the old token
    ]
    assert [await heard_y.next() for _ in range(3)] == told == [await heard_x.next() for _ in range(3)]
    assert y.get_stream_blocking(stream.id) == reset  # the SRT handshake on Y sees the new token at once

    # Y writes too: X hears it, and Y does not hear its own write twice.
    renamed = await y.update_stream(stream.id, 1, {"name": "renamed"})
    assert await heard_x.next() == StreamChanged(stream.id, reset, renamed) == await heard_y.next()
    assert await y.delete_stream(stream.id, 1)
    assert await heard_x.next() == StreamChanged(stream.id, renamed, None)  # its restream goes with it
    await asyncio.sleep(0.3)
    assert heard_y.queue.qsize() == 1 and (await heard_y.next()) == StreamChanged(stream.id, renamed, None)
    assert heard_x.empty()


async def test_a_write_made_while_the_listening_connection_was_killed_arrives_after_the_reconnect(
    nodes: tuple[PostgresStore, PostgresStore], postgres_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    x, y = nodes
    heard_y = Heard(y)
    kept = await x.create_stream(1, {"name": "kept"})
    await heard_y.next()
    pid = y.listening_pid
    assert pid is not None
    admin = await asyncpg.connect(postgres_dsn)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
    finally:
        await admin.close()
    await wait_for(lambda: _async(y.listening_pid is None), within=ARRIVAL_SECONDS, what="Y notices", every=0.005)
    changed = await x.update_stream(kept.id, 1, {"active": False})  # Y is not listening now

    assert await heard_y.next() == StreamChanged(kept.id, kept, changed)  # told once, as X announced it
    assert y.listening_pid not in (None, pid)
    assert any("again; resynchronising" in r.getMessage() for r in caplog.records)
    assert y.get_stream_blocking(kept.id) == changed
    await asyncio.sleep(0.3)
    assert heard_y.empty()


async def _async(value: bool) -> bool:
    return value


async def test_concurrent_writes_on_two_nodes_leave_both_feeds_at_the_databases_state(
    nodes: tuple[PostgresStore, PostgresStore],
) -> None:
    x, y = nodes
    stream = await x.create_stream(1, {"name": "contested"})
    restream = await x.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://a.example.com/live/k"})
    heard_x, heard_y = Heard(x), Heard(y)
    await asyncio.gather(
        *(x.update_stream(stream.id, 1, {"name": f"x{n}"}) for n in range(15)),
        *(y.update_stream(stream.id, 1, {"name": f"y{n}"}) for n in range(15)),
        *(x.update_restream(restream.id, 1, {"active": n % 2 == 0}) for n in range(10)),
        *(y.update_restream(restream.id, 1, {"name": f"r{n}"}) for n in range(10)),
    )
    final_stream, final_restream = await x.get_stream(stream.id), await x.get_restream(restream.id)
    for heard, store in ((heard_x, x), (heard_y, y)):
        last: dict[type, Change] = {}
        while True:  # until the feed has been quiet for a while: every notification applied
            try:
                change = await heard.next(within=0.5)
            except TimeoutError:
                break
            last[type(change)] = change
        assert last[StreamChanged].after == final_stream and last[RestreamChanged].after == final_restream
        assert store.get_stream_blocking(stream.id) == final_stream
        assert await store.resync() == 0  # the cache already held the database's state


async def test_the_periodic_diff_finds_a_change_made_by_plain_sql(postgres_dsn: str) -> None:
    x = await PostgresStore.open(postgres_dsn, resync_seconds=0.3)
    try:
        heard = Heard(x)
        stream = await x.create_stream(1, {"name": "show"})
        restream = await x.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://a.example.com/live/k"})
        assert [await heard.next(), await heard.next()] == [
            StreamChanged(stream.id, None, stream),
            RestreamChanged(restream.id, None, restream),
        ]
        admin = await asyncpg.connect(postgres_dsn)
        try:  # an operator's UPDATE and DELETE: no NOTIFY
            await admin.execute("UPDATE streams SET name = 'by hand' WHERE id = $1", stream.id)
            await admin.execute("DELETE FROM restreams WHERE id = $1", restream.id)
        finally:
            await admin.close()
        assert {await heard.next(), await heard.next()} == {
            StreamChanged(stream.id, stream, replace(stream, name="by hand")),
            RestreamChanged(restream.id, restream, None),
        }
    finally:
        await x.close()


async def test_a_blocking_read_on_a_cache_miss_asks_the_database_from_another_thread(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn, resync_seconds=3600)
    try:
        admin = await asyncpg.connect(postgres_dsn)
        try:  # made without NOTIFY: not in the cache
            stream_id = await admin.fetchval(
                "INSERT INTO streams (client_id, name, active, token, created_at)"
                " VALUES (1, 'unseen', TRUE, 'tok-abcdef', now()) RETURNING id"
            )
        finally:
            await admin.close()
        # From a worker thread, as the SRT listener's: the loop stays free to answer the query.
        stream = await asyncio.to_thread(store.get_stream_blocking, stream_id)
        assert stream is not None and getattr(stream, "token", None) == "tok-abcdef"
    finally:
        await store.close()


async def test_keys_are_stored_hashed(postgres_dsn: str) -> None:
    store = await PostgresStore.open(postgres_dsn)
    try:
        key, record = await store.create_api_key(3, "label")
        assert await store.client_for_key(key) == 3 and record.prefix in key
    finally:
        await store.close()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        rows = await admin.fetch("SELECT * FROM api_keys")
    finally:
        await admin.close()
    assert len(rows) == 1 and all(key not in str(value) for value in rows[0].values())


async def test_nodes_starting_at_once_migrate_once(postgres_dsn: str) -> None:
    stores = await asyncio.gather(*(PostgresStore.open(postgres_dsn) for _ in range(4)))
    try:
        streams = [await store.create_stream(1, {"name": f"node {n}"}) for n, store in enumerate(stores)]
        assert len({s.id for s in streams}) == 4
    finally:
        for store in stores:
            await store.close()
    admin = await asyncpg.connect(postgres_dsn)
    try:
        rows = await admin.fetch("SELECT component, version FROM schema_version")
        assert [tuple(row) for row in rows] == [("definitions", len(MIGRATIONS))]
        await admin.execute("UPDATE schema_version SET version = version + 1")
    finally:
        await admin.close()
    with pytest.raises(StoreError, match=f"schema {len(MIGRATIONS) + 1} is newer than this relay"):
        await PostgresStore.open(postgres_dsn)


async def test_an_unreachable_database_is_one_clear_error_without_the_password() -> None:
    url = "postgresql://relay:hunter2-secret@127.0.0.1:1/relay"
    with pytest.raises(StoreError) as refused:
        await PostgresStore.open(url)
    assert "hunter2" not in str(refused.value) and "127.0.0.1:1/relay" in str(refused.value)
    assert database_label(url) == "postgresql://127.0.0.1:1/relay"


async def test_losing_the_server_fails_reads_and_writes_then_everything_recovers(
    own_postgres_server: PostgresServer,
) -> None:
    dsn = own_postgres_server.create_database()
    x = await PostgresStore.open(dsn)
    y = await PostgresStore.open(dsn, resync_seconds=3600)
    try:
        heard_y = Heard(y)
        stream = await x.create_stream(1, {"name": "before"})
        assert await heard_y.next() == StreamChanged(stream.id, None, stream)

        await asyncio.to_thread(own_postgres_server.stop)
        with pytest.raises(StoreUnavailable):
            await x.create_stream(1, {"name": "lost"})
        with pytest.raises(StoreUnavailable):
            await x.get_stream(stream.id)
        assert not x.healthy and not await x.check_health()
        assert y.get_stream_blocking(stream.id) == stream  # the SRT handshake still has the cache

        await asyncio.to_thread(own_postgres_server.start)
        assert await x.check_health() and x.healthy  # without any client's request
        after = await x.update_stream(stream.id, 1, {"name": "after"})
        assert after is not None
        # Y's follower reconnects (backoff) and, by its notification or its diff, hears of it.
        assert await heard_y.next(within=20) == StreamChanged(stream.id, stream, after)
        assert [s.name for s in (await y.list_streams(1, 0, 10)).items] == ["after"]
    finally:
        await y.close()
        await x.close()


async def test_a_connection_the_server_just_left_is_unavailable_then_replaced(postgres_dsn: str) -> None:
    """The server's goodbye read on an idle pooled connection, its close not yet (a restart under load):
    the next statement there is StoreUnavailable (503 at the API, not a 500), and the next one succeeds
    on a new connection."""
    late_close = TcpImpairment(hold_close_seconds=3.0)
    async with tcp_impair(("127.0.0.1", 0), server_address(postgres_dsn), late_close) as proxy:
        store = await PostgresStore.open(dsn_via(postgres_dsn, proxy.port))
        try:
            stream = await store.create_stream(1, {"name": "kept"})
            assert await end_other_connections(postgres_dsn) >= 1
            await asyncio.sleep(0.3)  # the goodbye is read; the proxy holds the close
            with pytest.raises(StoreUnavailable):
                await store.list_streams(1, 0, 10)
            assert [s.id for s in (await store.list_streams(1, 0, 10)).items] == [stream.id]
        finally:
            await store.close()
