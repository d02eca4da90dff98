"""Two relay nodes in this test's loop on one PostgreSQL: definitions, leases and status, as in production."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from api.server import Server
from relay.engine.events import EngineEvent, RemoteRestreamChanged, RemoteStreamChanged
from relay.supervisor.states import PushState
from tests.cluster.nodes import lease_valid_at
from tests.conftest import ApiClient, service_settings
from tests.dashboard.test_events import open_feed
from tests.support import ADMIN_KEY
from tests.support.polling import wait_for
from tests.support.publishers import Publisher, pattern_publish_argv
from tests.support.receivers import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

LEASE = {"lease_seconds": 5.0, "lease_renew_seconds": 0.5, "lease_margin_seconds": 3.0}
"""Short, with a margin that leaves room for a loaded machine (2 cores shared by several test runs)."""


class Node:
    def __init__(self, server: Server, api: ApiClient) -> None:
        self.server = server
        self.api = api

    async def get(self, path: str) -> Any:
        status, body, _ = await self.api.call("GET", path)
        assert status == 200, body
        return body


@pytest.fixture
async def nodes(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[tuple[Node, Node]]:
    async with AsyncExitStack() as stack:
        session = await stack.enter_async_context(aiohttp.ClientSession())
        made = []
        for name in ("a", "b"):
            settings = service_settings(
                tmp_path / name,
                database_url=postgres_dsn,
                node_id=name,
                reconcile_interval_seconds=0.5,
                publisher_grace_seconds=1.0,
                takeover_idle_seconds=1.5,
                **LEASE,
            )
            server = Server(settings)
            await server.start()
            stack.push_async_callback(server.close)
            made.append(Node(server, ApiClient(session, f"http://127.0.0.1:{server.ports.http}", ADMIN_KEY)))
        yield made[0], made[1]


async def lease_of(dsn: str, stream_id: int) -> asyncpg.Record | None:
    connection = await asyncpg.connect(dsn)
    try:
        return await connection.fetchrow(
            "SELECT node_id, epoch, expires_at > now() AS valid FROM leases WHERE stream_id = $1", stream_id
        )
    finally:
        await connection.close()


async def metrics(node: Node) -> str:
    headers = {"Authorization": f"APIKey {ADMIN_KEY}"}
    async with node.api.session.get(f"{node.api.base_url}/metrics", headers=headers) as response:
        assert response.status == 200
        return await response.text()


def running_pushes(node: Node) -> int:
    supervisor = node.server.engine.supervisor
    return sum(1 for restream_id in range(1, 10) if supervisor.status(restream_id).state is PushState.RUNNING)


async def setup_stream(a: Node, receiver: Receiver) -> tuple[dict[str, Any], int]:
    status, stream, _ = await a.api.call("POST", "/streaming/streams", {"name": "show"})
    assert status == 200, stream
    body = {"restream": {"stream_id": stream["id"], "uri": receiver.uri(), "name": "dest"}}
    status, restream, _ = await a.api.call("POST", "/streaming/restreams", body)
    assert status == 200, restream
    return stream, restream["id"]


async def test_status_written_by_the_owner_is_read_by_the_other_node_and_a_second_publisher_is_refused(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    events: list[EngineEvent] = []
    b.server.engine.subscribe(events.append)
    feed = await open_feed(b.api.session, b.api.base_url, ADMIN_KEY)  # node b's event feed, over HTTP
    async with Receiver(tmp_path / "dest.flv") as receiver:
        stream, restream_id = await setup_stream(a, receiver)
        async with Publisher(pattern_publish_argv(stream["push_url"], 30)):

            async def running_at_b() -> Any:
                body = await b.get(f"/streaming/restreams/{restream_id}")
                return body if body["status"]["state"] == "running" and body["status"]["frames"] > 0 else None

            seen = await wait_for(running_at_b, 15, "node b shows the push running on a")
            assert seen["node_id"] == "a" and seen["live"] is True
            at_b = await b.get(f"/streaming/streams/{stream['id']}")
            assert (at_b["live"], at_b["node_id"], at_b["status"]["state"]) == (True, "a", "live")
            assert at_b["video_width"] == 320
            at_a = await a.get(f"/streaming/streams/{stream['id']}")
            assert (at_a["live"], at_a["node_id"]) == (True, "a")
            metrics_at_b = await metrics(b)
            assert 'relay_stream_owner{client_id="1",name="show",node_id="a",stream_id="1"} 1.0' in metrics_at_b
            assert 'relay_stream_live{client_id="1",name="show",stream_id="1"} 1.0' in metrics_at_b
            assert 'relay_cluster_leases{node_id="a"} 1.0' in await metrics(a)
            assert (await feed.until("stream.live", live=True))["node_id"] == "a"
            assert (await feed.until("restream.status", restream_id=restream_id))["node_id"] == "a"
            assert any(isinstance(e, RemoteStreamChanged) and e.live and e.node_id == "a" for e in events)
            assert any(isinstance(e, RemoteRestreamChanged) and e.status["state"] == "running" for e in events)

            # The same key at node b while a's publisher sends: refused there, never a second set of pushes.
            b_url = stream["push_url"].replace(f":{a.server.ports.rtmp}/", f":{b.server.ports.rtmp}/")
            second = Publisher(pattern_publish_argv(b_url, 5))
            async with second:
                code, _ = await second.wait(within=15)
            assert code != 0
            assert b.server.engine.admission.refusals[("rtmp", "owned_elsewhere")] >= 1
            assert running_pushes(b) == 0 and not b.server.engine.is_live(stream["id"])
            assert running_pushes(a) == 1 and receiver.running
            lease = await lease_of(a.server.settings.database_url or "", stream["id"])
            assert lease is not None and (lease["node_id"], lease["epoch"], lease["valid"]) == ("a", 1, True)


async def test_a_node_that_stops_renewing_stops_its_pushes_before_its_lease_expires_and_another_takes_over(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    dsn = a.server.settings.database_url or ""
    async with Receiver(tmp_path / "dest.flv") as receiver:
        stream, restream_id = await setup_stream(a, receiver)
        first = Publisher(pattern_publish_argv(stream["push_url"], 40))
        async with first:
            await wait_for(lambda: _async(running_pushes(a) == 1), 15, "a pushes")
            assert a.server.cluster is not None
            a.server.cluster.ownership.paused = True  # its renewals stop: it cannot prove ownership any more

            await wait_for(lambda: _async(running_pushes(a) == 0), LEASE["lease_seconds"] + 2, "a stopped its push")
            # The moment a let go and ordered its push to stop, on its clock (this process's: the test's loop
            # runs both nodes, so a poll here can be late on a loaded machine; that moment cannot).
            let_go = a.server.cluster.ownership.lost_at[stream["id"]]
            assert await lease_valid_at(dsn, stream["id"], let_go) == ("a", True), "a pushed past its lease"
            assert not a.server.engine.is_live(stream["id"])
            code, _ = await first.wait(within=10)  # a dropped the publisher too
            assert code != 0

    # The encoder comes back through the balancer, at b, once a's lease expired: b takes it at once.
    async def expired() -> bool:
        lease = await lease_of(dsn, stream["id"])
        return lease is not None and not lease["valid"]

    await wait_for(expired, LEASE["lease_seconds"], "a's lease expired")
    b_url = stream["push_url"].replace(f":{a.server.ports.rtmp}/", f":{b.server.ports.rtmp}/")
    async with Receiver(tmp_path / "dest-b.flv", port=receiver.port, key=receiver.key) as again:
        async with Publisher(pattern_publish_argv(b_url, 30)):

            async def b_pushes() -> bool:
                return running_pushes(b) == 1 and again.running

            await wait_for(b_pushes, LEASE["lease_seconds"] + 15, "b took over and pushes")
            lease = await lease_of(dsn, stream["id"])
            assert lease is not None and (lease["node_id"], lease["epoch"]) == ("b", 2)
            assert a.server.cluster is not None
            a.server.cluster.ownership.paused = False
            await asyncio.sleep(2 * LEASE["lease_renew_seconds"])
            assert running_pushes(a) == 0, "a pushes in parallel with b"
            at_a = await a.get(f"/streaming/restreams/{restream_id}")
            assert (at_a["node_id"], at_a["status"]["state"]) == ("b", "running")


async def _async(value: bool) -> bool:
    return value


async def test_a_silent_publisher_at_one_node_is_taken_over_by_the_same_key_at_the_other(
    nodes: tuple[Node, Node], tmp_path: Path
) -> None:
    a, b = nodes
    dsn = a.server.settings.database_url or ""
    async with Receiver(tmp_path / "dest.flv") as receiver:
        stream, _ = await setup_stream(a, receiver)
        stuck = Publisher(pattern_publish_argv(stream["push_url"], 60))
        async with stuck:
            await wait_for(lambda: _async(running_pushes(a) == 1), 15, "a pushes")
            assert stuck.proc is not None
            stuck.proc.send_signal(signal.SIGSTOP)  # a hung encoder: its connection open, nothing sent
            try:
                await asyncio.sleep(3.0)  # past takeover_idle_seconds (1.5), and a renewal of a's since
                b_url = stream["push_url"].replace(f":{a.server.ports.rtmp}/", f":{b.server.ports.rtmp}/")
                async with Publisher(pattern_publish_argv(b_url, 40)):

                    async def b_took_it() -> bool:
                        lease = await lease_of(dsn, stream["id"])
                        return lease is not None and (lease["node_id"], lease["epoch"]) == ("b", 2)

                    await wait_for(b_took_it, 10, "b took the silent stream over")
                    await wait_for(lambda: _async(running_pushes(a) == 0), 3, "a let go at once")
                    assert not a.server.engine.is_live(stream["id"])
                    assert await receiver.finished(within=10) is not None  # a's push closed its connection
                    async with Receiver(tmp_path / "dest-b.flv", port=receiver.port, key=receiver.key) as again:

                        async def b_pushes() -> bool:
                            return running_pushes(b) == 1 and again.running

                        await wait_for(b_pushes, 15, "b pushes")
                        assert running_pushes(a) == 0, "two nodes pushing the same stream"

                        async def a_shows_b() -> bool:
                            at_a = await a.get(f"/streaming/streams/{stream['id']}")
                            return bool(at_a["live"] and at_a["node_id"] == "b")

                        await wait_for(a_shows_b, 10, "a's API shows the stream live on b")
            finally:
                stuck.proc.send_signal(signal.SIGCONT)
