"""Which pushes run, in-process with fake push processes: slots, waiting, and changes that touch one push."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.config import Settings
from relay.engine import Engine
from relay.engine.events import EngineEvent, RestreamStateChanged
from relay.ingest.gate import EndReason, IngestSink, PublishRequest
from relay.media.packets import ContainerFormat
from relay.store.models import StreamRecord
from relay.store.sqlite import SqliteStore
from relay.supervisor.states import PushState
from tests.engine.test_engine import Publisher
from tests.supervisor.fake_process import FakeProcesses

PUSHED = "rtmp://192.0.2.1:1935/live"
"""What ffmpeg is given for rtmp://192.0.2.1/live/...: the checked address with its port."""


@pytest.fixture
def processes() -> FakeProcesses:
    return FakeProcesses()


@pytest.fixture
async def engine(tmp_path: Path, store: SqliteStore, processes: FakeProcesses) -> AsyncIterator[Engine]:
    settings = Settings(
        data_dir=tmp_path, max_pushes=3, client_limits="2:pushes=1", destination_allow=("192.0.2.0/24",)
    )  # TEST-NET-1: documentation addresses, allowed to tenants here; the fake processes never connect
    node = Engine(settings, store, process_factory=processes)
    await node.start()
    yield node
    await node.close()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def go_live(engine: Engine, stream: StreamRecord) -> IngestSink:
    request = PublishRequest(
        stream_key=f"{stream.id}?{stream.token}", container=ContainerFormat.FLV, publisher=Publisher()
    )
    sink = await engine.open_publish(request)
    await settle()
    return sink


async def destinations(store: SqliteStore, client: int, stream: StreamRecord, count: int) -> list[int]:
    made = []
    for n in range(count):
        record = await store.create_restream(client, {"stream_id": stream.id, "uri": f"rtmp://192.0.2.1/live/k{n}"})
        made.append(record.id)
    return made


async def states(engine: Engine, store: SqliteStore, ids: list[int]) -> list[PushState]:
    result = []
    for rid in ids:
        record = await store.get_restream(rid)
        assert record is not None
        result.append(engine.restream_status(record).state)
    return result


async def test_a_client_over_its_push_limit_waits_and_says_why(
    engine: Engine, store: SqliteStore, processes: FakeProcesses
) -> None:
    events: list[EngineEvent] = []
    engine.subscribe(events.append)
    stream = await store.create_stream(2, {"name": "show"})
    first, second = await destinations(store, 2, stream, 2)
    await go_live(engine, stream)
    assert [p.uri for p in processes.made] == [f"{PUSHED}/k0"]
    record = await store.get_restream(second)
    assert record is not None
    status = engine.restream_status(record)
    assert status.state is PushState.WAITING
    assert status.last_error == "waiting for a push slot: the client limit of 1 running pushes is reached"
    assert any(
        isinstance(e, RestreamStateChanged) and e.restream_id == second and e.status.state is PushState.WAITING
        for e in events
    )

    await store.update_restream(first, 2, {"active": False})  # frees the slot: the waiter starts
    await settle()
    assert processes.last().uri == f"{PUSHED}/k1"
    assert (await states(engine, store, [first, second]))[0] is PushState.DISABLED
    assert engine.pushes.slots.running(2) == 1


async def test_the_node_cap_is_shared_and_freed_slots_go_to_the_client_running_fewest(
    engine: Engine, store: SqliteStore, processes: FakeProcesses
) -> None:
    busy = await store.create_stream(1, {"name": "busy"})
    busy_ids = await destinations(store, 1, busy, 4)
    await go_live(engine, busy)
    assert len(processes.made) == 3  # the node cap
    small = await store.create_stream(2, {"name": "small"})
    (small_id,) = await destinations(store, 2, small, 1)
    await go_live(engine, small)
    assert await states(engine, store, [busy_ids[3], small_id]) == [PushState.WAITING, PushState.WAITING]

    await store.update_restream(busy_ids[0], 1, {"active": False})
    await settle()
    assert processes.last().uri == f"{PUSHED}/k0"
    assert engine.pushes.slots.running(2) == 1  # client 2 ran none: it got the slot before client 1's waiter
    assert (await states(engine, store, [busy_ids[3]]))[0] is PushState.WAITING


async def test_a_stream_ending_frees_its_slots(engine: Engine, store: SqliteStore, processes: FakeProcesses) -> None:
    first = await store.create_stream(1, {"name": "first"})
    await destinations(store, 1, first, 3)
    sink = await go_live(engine, first)
    second = await store.create_stream(1, {"name": "second"})
    (waiting,) = await destinations(store, 1, second, 1)
    await go_live(engine, second)
    assert (await states(engine, store, [waiting]))[0] is PushState.WAITING
    sink.close(EndReason.UNPUBLISH)
    await settle()
    assert engine.pushes.slots.running() == 1
    assert (await states(engine, store, [waiting]))[0] is not PushState.WAITING


async def test_a_restream_write_touches_only_that_push(
    engine: Engine, store: SqliteStore, processes: FakeProcesses
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    ids = await destinations(store, 1, stream, 2)
    await go_live(engine, stream)
    runs = {p.uri: p for p in processes.made}
    await store.update_restream(ids[1], 1, {"uri": "rtmp://192.0.2.1/live/moved"})
    await settle()
    assert not runs[f"{PUSHED}/k0"].stopped  # the other push never noticed
    assert processes.last().uri == f"{PUSHED}/moved"
