"""Claim, renew, expire, take over and epochs, against a real PostgreSQL: two ownerships are two nodes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import asyncpg
import pytest

from relay.cluster.ownership import LeaseSettings
from relay.engine.ownership import ClaimRefused
from relay.ingest.gate import RefusalReason
from tests.cluster.nodes import QUICK, lease_valid_at, node
from tests.support.impair import TcpImpairment, tcp_impair
from tests.support.polling import wait_for
from tests.support.postgres import PostgresServer, dsn_via, end_other_connections, server_address

pytestmark = pytest.mark.integration


async def lease_row(dsn: str, stream_id: int) -> asyncpg.Record | None:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchrow(
            "SELECT node_id, epoch, expires_at > now() AS valid FROM leases WHERE stream_id = $1", stream_id
        )
    finally:
        await connection.close()


async def test_one_owner_per_stream_and_the_epoch_moves_only_when_the_owner_changes(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        await a.ownership.claim(7, takeover_idle_seconds=4.0)
        assert a.ownership.owns(7) and a.ownership.epoch(7) == 1
        await a.ownership.claim(7, takeover_idle_seconds=4.0)  # a second input at the same node keeps it
        assert a.ownership.epoch(7) == 1

        a.ownership.media(7)
        with pytest.raises(ClaimRefused) as refused:
            await b.ownership.claim(7, takeover_idle_seconds=4.0)
        assert refused.value.reason is RefusalReason.OWNED_ELSEWHERE and refused.value.owner == "a"
        assert not b.ownership.owns(7)

        a.ownership.release(7)  # the publisher ended at a: anyone may have it at once
        await wait_for(lambda: _released(postgres_dsn, 7), 5, "released")
        await b.ownership.claim(7, takeover_idle_seconds=4.0)
        row = await lease_row(postgres_dsn, 7)
        assert row is not None and (row["node_id"], row["epoch"]) == ("b", 2)


async def _released(dsn: str, stream_id: int) -> bool:
    row = await lease_row(dsn, stream_id)
    return row is not None and not row["valid"]


async def test_renewals_keep_the_lease_and_media_keeps_a_takeover_away(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        await a.ownership.claim(1, takeover_idle_seconds=1.0)
        started = time.monotonic()
        while time.monotonic() - started < 3 * QUICK.lease_seconds / 2:  # past one lease: only renewals hold it
            a.ownership.media(1)
            await asyncio.sleep(0.1)
        assert a.ownership.owns(1) and a.ownership.renewals >= 3 and a.lost == []
        with pytest.raises(ClaimRefused):
            await b.ownership.claim(1, takeover_idle_seconds=1.0)  # the publisher at a sends: no takeover
        with pytest.raises(ClaimRefused):
            await b.ownership.claim(1, takeover_idle_seconds=None)  # a pull never takes a live lease
        row = await lease_row(postgres_dsn, 1)
        assert row is not None and (row["node_id"], row["epoch"], row["valid"]) == ("a", 1, True)


async def test_a_silent_publisher_is_taken_over_and_the_old_owner_lets_go_at_once(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        await a.ownership.claim(3, takeover_idle_seconds=0.5)
        await asyncio.sleep(1.5)  # renewed, but no media: media_at stays at the claim
        assert a.ownership.owns(3)
        await b.ownership.claim(3, takeover_idle_seconds=0.5)
        assert b.ownership.epoch(3) == 2
        told = time.monotonic()
        await wait_for(_true_when(lambda: a.lost == [3]), QUICK.renew_seconds * 2, "a told to let go")
        assert time.monotonic() - told < QUICK.renew_seconds * 2
        assert not a.ownership.owns(3) and b.ownership.owns(3)
        await asyncio.sleep(QUICK.renew_seconds * 2)  # a's renewals never bring it back
        row = await lease_row(postgres_dsn, 3)
        assert row is not None and (row["node_id"], row["epoch"]) == ("b", 2)
        assert b.lost == []


def _true_when(check: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return check()

    return probe


async def test_a_node_that_stops_renewing_lets_go_before_the_database_lease_expires(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        await a.ownership.claim(5, takeover_idle_seconds=4.0)
        a.ownership.paused = True  # its renewals stop (a stuck loop, a partition)
        await wait_for(_true_when(lambda: a.lost == [5]), QUICK.lease_seconds + 1, "a lost the stream", every=0.02)
        let_go = time.monotonic()
        assert await lease_valid_at(postgres_dsn, 5, let_go) == ("a", True), "a let go only after its lease expired"
        assert not a.ownership.owns(5)
        with pytest.raises(ClaimRefused):  # a pull never takes a live lease, even one nobody proves
            await b.ownership.claim(5, takeover_idle_seconds=None)
        deadline = time.monotonic() + QUICK.lease_seconds + 1
        while True:  # expired in the database: taken at once
            try:
                await b.ownership.claim(5, takeover_idle_seconds=None)
                break
            except ClaimRefused:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
        assert b.ownership.epoch(5) == 2
        a.ownership.paused = False
        await asyncio.sleep(QUICK.renew_seconds * 2)
        assert not a.ownership.owns(5) and b.ownership.owns(5)


async def test_two_nodes_claiming_at_once_get_one_owner(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        for stream_id in range(10, 30):
            results = await asyncio.gather(
                a.ownership.claim(stream_id, takeover_idle_seconds=4.0),
                b.ownership.claim(stream_id, takeover_idle_seconds=4.0),
                return_exceptions=True,
            )
            granted = [r for r in results if r is None]
            assert len(granted) == 1, results
            assert a.ownership.owns(stream_id) != b.ownership.owns(stream_id)
            assert all(isinstance(r, ClaimRefused) for r in results if r is not None)


async def test_a_database_restart_shorter_than_the_lease_is_ridden_through() -> None:
    server = PostgresServer()
    try:
        server.start()
        dsn = server.create_database()
        settings = LeaseSettings(lease_seconds=6.0, renew_seconds=0.4, margin_seconds=1.0)
        async with node(dsn, "a", settings) as a:
            await a.ownership.claim(1, takeover_idle_seconds=4.0)
            server.stop()
            with pytest.raises(ClaimRefused) as refused:
                await a.ownership.claim(2, takeover_idle_seconds=4.0)
            assert refused.value.reason is RefusalReason.DATABASE_UNAVAILABLE
            assert a.ownership.owns(1)  # still within its deadline
            server.start()
            before = a.ownership.renewals
            await wait_for(_true_when(lambda: a.ownership.renewals > before), settings.lease_seconds, "renewed again")
            assert a.ownership.owns(1) and a.lost == []
            await a.ownership.claim(2, takeover_idle_seconds=4.0)
    finally:
        server.cleanup()


async def test_a_database_outage_longer_than_the_lease_stops_the_streams() -> None:
    server = PostgresServer()
    try:
        server.start()
        dsn = server.create_database()
        async with node(dsn, "a") as a:
            await a.ownership.claim(1, takeover_idle_seconds=4.0)
            server.stop()
            await wait_for(_true_when(lambda: a.lost == [1]), QUICK.lease_seconds + 1, "lost when unprovable")
    finally:
        server.cleanup()


async def test_a_release_never_lands_after_the_same_nodes_next_claim(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "a") as a:
        for _ in range(20):  # a publisher that ends and comes straight back to the same node
            await a.ownership.claim(9, takeover_idle_seconds=4.0)
            a.ownership.release(9)
        await a.ownership.claim(9, takeover_idle_seconds=4.0)
        await asyncio.sleep(QUICK.renew_seconds * 3)
        assert a.ownership.owns(9) and a.lost == []
        row = await lease_row(postgres_dsn, 9)
        assert row is not None and row["node_id"] == "a" and row["valid"]


async def test_a_node_that_shuts_down_gives_its_leases_up_at_once(postgres_dsn: str) -> None:
    async with node(postgres_dsn, "b") as b:
        async with node(postgres_dsn, "a") as a:
            for stream_id in (1, 2, 3):
                await a.ownership.claim(stream_id, takeover_idle_seconds=4.0)
                a.ownership.media(stream_id)
        for stream_id in (1, 2, 3):  # a closed: no waiting out its leases
            await b.ownership.claim(stream_id, takeover_idle_seconds=None)
            assert b.ownership.epoch(stream_id) == 2


async def test_a_node_that_stopped_renewing_is_not_taken_over_as_silent_before_its_lease_expires(
    postgres_dsn: str,
) -> None:
    async with node(postgres_dsn, "a") as a, node(postgres_dsn, "b") as b:
        await a.ownership.claim(4, takeover_idle_seconds=0.5)
        a.ownership.media(4)
        a.ownership.paused = True  # frozen: its publisher was sending, but nothing reaches the database
        await asyncio.sleep(1.0)  # media_at is older than the takeover time, yet a never said "silent"
        with pytest.raises(ClaimRefused) as refused:
            await b.ownership.claim(4, takeover_idle_seconds=0.5)
        assert refused.value.reason is RefusalReason.OWNED_ELSEWHERE
        row = await lease_row(postgres_dsn, 4)
        assert row is not None and row["node_id"] == "a"


async def test_a_renewal_on_a_connection_the_server_just_left_reconnects_and_keeps_the_lease(postgres_dsn: str) -> None:
    """PostgreSQL's goodbye (the FATAL of a shutdown) read while the renewal connection is idle, its close
    not yet (a restart under load): asyncpg raises InternalClientError on the next statement. That
    renewal fails like any lost connection, the next one reconnects, and the lease is kept (the
    renewal task once died of it, and the node lost every stream at its deadline)."""
    late_close = TcpImpairment(hold_close_seconds=3.0)
    async with tcp_impair(("127.0.0.1", 0), server_address(postgres_dsn), late_close) as proxy:
        settings = LeaseSettings(lease_seconds=6.0, renew_seconds=0.3, margin_seconds=1.0)
        async with node(dsn_via(postgres_dsn, proxy.port), "a", settings) as a:
            await a.ownership.claim(1, takeover_idle_seconds=4.0)
            await wait_for(_true_when(lambda: a.ownership.renewals > 0), 5, "a first renewal")
            a.ownership.paused = True  # the renewal connection idle while the server leaves it
            await asyncio.sleep(settings.renew_seconds * 2)
            assert await end_other_connections(postgres_dsn) >= 1
            await asyncio.sleep(0.3)  # the goodbye is read; the close is held by the proxy
            failures, renewals = a.ownership.renewal_failures, a.ownership.renewals
            a.ownership.paused = False
            await wait_for(_true_when(lambda: a.ownership.renewal_failures > failures), 3, "the renewal failed")
            await wait_for(_true_when(lambda: a.ownership.renewals > renewals), 3, "renewed on a new connection")
            assert a.ownership.owns(1) and a.lost == []
