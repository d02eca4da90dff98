"""Pulled streams on two nodes: exactly one node pulls each (first come), and a node that stops renewing
hands its pulls to the other after the lease expires. Two engines on one definitions store (its change
feed reaches both), ownership in a real PostgreSQL, fake pull processes (tests/fakes/fake_pull.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from relay.config import Settings
from relay.engine import Engine
from relay.store.sqlite import SqliteStore
from tests.cluster.nodes import QUICK, Node, node
from tests.fakes.fake_pull import FakePullProcesses
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration

SOURCE = "rtmp://127.0.0.1:1935/live/source-key"


def pulling(fakes: FakePullProcesses) -> int:
    return sum(1 for process in fakes.made if process.started and not process.stopped)


@pytest.fixture
async def engines(tmp_path: Path, postgres_dsn: str) -> AsyncIterator[list[tuple[Engine, Node, FakePullProcesses]]]:
    async with AsyncExitStack() as stack:
        store = SqliteStore(tmp_path / "relay.sqlite3")
        stack.push_async_callback(store.close)
        made = []
        for name in ("a", "b"):
            ownership = await stack.enter_async_context(node(postgres_dsn, name))
            fakes = FakePullProcesses()
            settings = Settings(data_dir=tmp_path, node_id=name, reconcile_interval_seconds=0.3)
            engine = Engine(settings, store, pull_process_factory=fakes, ownership=ownership.ownership)
            await engine.start()
            stack.push_async_callback(engine.close)
            made.append((engine, ownership, fakes))
        yield made


async def test_one_node_pulls_each_stream_and_a_dead_nodes_pulls_move(
    engines: list[tuple[Engine, Node, FakePullProcesses]],
) -> None:
    (a, a_node, a_fakes), (_, b_node, b_fakes) = engines
    store = a.store
    streams = [await store.create_stream(1, {"name": f"p{i}", "pull": True, "uri": SOURCE}) for i in range(4)]

    async def all_placed() -> bool:
        return pulling(a_fakes) + pulling(b_fakes) == len(streams)

    await wait_for(all_placed, 5, "every stream pulled")
    await asyncio.sleep(1.0)  # several reconcile passes: nobody starts a second pull
    assert pulling(a_fakes) + pulling(b_fakes) == len(streams)
    for stream in streams:
        assert a_node.ownership.owns(stream.id) != b_node.ownership.owns(stream.id)

    a_node.ownership.paused = True  # a stops renewing: its pulls stop, b takes them after expiry
    a_held = [s.id for s in streams if a_node.ownership.owns(s.id)]

    async def moved() -> bool:
        return pulling(a_fakes) == 0 and pulling(b_fakes) == len(streams)

    await wait_for(moved, QUICK.lease_seconds + 5, "b pulls everything")
    assert all(b_node.ownership.epoch(stream_id) == 2 for stream_id in a_held)
