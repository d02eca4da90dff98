"""Pulled streams in the engine, on a real SQLite store, with a fake ffmpeg (tests/fakes/fake_pull.py): the
store's changes start, stop and replace pulls; a pulled source publishes to the hub like an ingest does;
a source that drops is held through the grace period; the destination policy is asked before each attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.config import Settings
from relay.engine import Engine
from relay.engine.status import StreamState
from relay.ingest.gate import PublishRefused, PublishRequest, RefusalReason, SourceType, Transport
from relay.media.flv import encode_tag, flv_header
from relay.media.packets import ContainerFormat, MediaKind
from relay.pull.runner import PullState
from relay.rtmp import amf0
from relay.store.sqlite import SqliteStore
from tests.engine.test_engine import Publisher
from tests.fakes.fake_pull import FakePullProcess, FakePullProcesses
from tests.supervisor.fake_process import FakeProcesses
from tests.support import wait_for

SOURCE = "rtmp://127.0.0.1:1935/live/source-key"
METADATA = amf0.encode("onMetaData") + amf0.encode({"width": 640.0, "height": 360.0, "framerate": 30.0})
FLV = (
    flv_header()
    + encode_tag(MediaKind.DATA, 0, METADATA)
    + encode_tag(MediaKind.VIDEO, 0, bytes([0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1F]))
    + encode_tag(MediaKind.VIDEO, 0, bytes([0x17, 0x01, 0, 0, 0, 0, 0, 0, 2, 0x65, 0x88]))
)


@pytest.fixture
def fakes() -> FakePullProcesses:
    return FakePullProcesses()


@pytest.fixture
async def engine(tmp_path: Path, store: SqliteStore, fakes: FakePullProcesses) -> AsyncIterator[Engine]:
    node = Engine(Settings(data_dir=tmp_path, publisher_grace_seconds=5.0), store, pull_process_factory=fakes)
    await node.start()
    yield node
    await node.close()


async def _attempt(fakes: FakePullProcesses, number: int) -> FakePullProcess:
    async def made() -> FakePullProcess | None:
        return fakes.made[number - 1] if len(fakes.made) >= number and fakes.made[number - 1].started else None

    return await wait_for(made, 5, f"pull attempt {number}")


async def test_a_pulled_source_publishes_and_a_drop_is_held_until_it_returns(
    engine: Engine, store: SqliteStore, fakes: FakePullProcesses
) -> None:
    stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
    first = await _attempt(fakes, 1)
    assert SOURCE in first.argv and "source-key" in first.secrets
    assert not engine.is_live(stream.id), "live only once media flows"

    first.emit(FLV)
    snapshot = engine.stream_snapshot(stream.id)
    assert snapshot.live and snapshot.source_type is SourceType.RTMP
    assert snapshot.status.state is StreamState.LIVE and snapshot.status.transport is Transport.PULL
    assert snapshot.info is not None and (snapshot.info.video_width, snapshot.info.video_height) == (640, 360)
    assert snapshot.pull is not None and snapshot.pull.state is PullState.RUNNING
    assert snapshot.pull.source == "rtmp://127.0.0.1:1935/live/***" and snapshot.pull.source_index == 1

    first.end(1, "[error] Connection reset by peer")
    await wait_for(lambda: _state(engine, stream.id, StreamState.RECONNECTING), 5, "grace")
    pull = engine.stream_snapshot(stream.id).pull
    assert pull is not None and pull.last_error == "[error] Connection reset by peer"
    second = await _attempt(fakes, 2)
    assert SOURCE in second.argv, "an attempt that delivered media retries the same source"
    second.emit(FLV)
    assert engine.stream_snapshot(stream.id).status.state is StreamState.LIVE


async def test_switching_the_pull_off_stops_it_and_ends_the_stream(
    engine: Engine, store: SqliteStore, fakes: FakePullProcesses
) -> None:
    stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
    (await _attempt(fakes, 1)).emit(FLV)
    assert engine.is_live(stream.id)
    await store.update_stream(stream.id, 1, {"pull": False})
    assert not engine.is_live(stream.id)
    await wait_for(lambda: _async(fakes.made[0].stopped), 5, "the process stopped")
    assert engine.stream_snapshot(stream.id).pull is None


async def test_a_new_uri_replaces_the_pull_and_the_destinations_are_held(
    engine: Engine, store: SqliteStore, fakes: FakePullProcesses
) -> None:
    stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
    (await _attempt(fakes, 1)).emit(FLV)
    other = "srt://127.0.0.1:9000?streamid=other"
    await store.update_stream(stream.id, 1, {"uri": other})
    assert engine.is_live(stream.id), "the grace period holds the destinations while the new source connects"
    second = await _attempt(fakes, 2)
    assert fakes.made[0].stopped and other in second.argv
    second.emit(FLV)
    assert engine.stream_snapshot(stream.id).source_type is SourceType.SRT


async def test_alternatives_are_tried_in_turn(engine: Engine, store: SqliteStore, fakes: FakePullProcesses) -> None:
    backup = "http://127.0.0.1:8000/hls/index.m3u8"
    stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": f"{SOURCE} {backup}"})
    (await _attempt(fakes, 1)).end(1, "[fatal] Error opening input files: Connection refused")
    second = await _attempt(fakes, 2)
    assert backup in second.argv
    second.emit(FLV)
    pull = engine.stream_snapshot(stream.id).pull
    assert pull is not None and (pull.state, pull.source_index, pull.sources) == (PullState.RUNNING, 2, 2)
    assert pull.last_error == "[fatal] Error opening input files: Connection refused"
    assert engine.stream_snapshot(stream.id).source_type is SourceType.HTTPS


async def test_a_tenant_source_inside_the_relays_networks_is_never_connected_to(
    engine: Engine, store: SqliteStore, fakes: FakePullProcesses
) -> None:
    # Written to the store directly: the API would have refused it (tests/api/test_pull_fields.py).
    stream = await store.create_stream(2, {"name": "p", "pull": True, "uri": SOURCE})

    async def refused() -> bool:
        pull = engine.stream_snapshot(stream.id).pull
        return pull is not None and pull.state is PullState.RETRYING

    await wait_for(refused, 5, "the pull refused")
    pull = engine.stream_snapshot(stream.id).pull
    assert pull is not None and pull.last_error == "source not allowed: the host is a loopback address"
    assert fakes.made == []


async def test_a_pulled_stream_refuses_publishers_and_a_deactivated_one_stops_pulling(
    engine: Engine, store: SqliteStore, fakes: FakePullProcesses
) -> None:
    stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
    request = PublishRequest(f"{stream.id}?{stream.token}", ContainerFormat.FLV, Publisher())
    with pytest.raises(PublishRefused) as refused:
        await engine.open_publish(request)
    assert refused.value.reason is RefusalReason.PULLED
    (await _attempt(fakes, 1)).emit(FLV)
    await store.update_stream(stream.id, 1, {"active": False})
    assert not engine.is_live(stream.id)
    await wait_for(lambda: _async(fakes.made[0].stopped), 5, "the process stopped")


async def test_close_stops_and_reaps_every_pull(tmp_path: Path, store: SqliteStore, fakes: FakePullProcesses) -> None:
    node = Engine(Settings(data_dir=tmp_path), store, pull_process_factory=fakes)
    await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
    await node.start()
    process = await _attempt(fakes, 1)
    process.emit(FLV)
    await node.close()
    assert process.stopped and not process.running


async def _state(engine: Engine, stream_id: int, state: StreamState) -> bool:
    return engine.stream_snapshot(stream_id).status.state is state


async def _async(value: bool) -> bool:
    return value


async def test_pushes_run_the_push_ffmpeg_and_pulls_the_full_one(tmp_path: Path, store: SqliteStore) -> None:
    pulls, pushes = FakePullProcesses(), FakeProcesses()
    settings = Settings(
        data_dir=tmp_path,
        ffmpeg_path="/opt/full/ffmpeg",
        push_ffmpeg_path="/opt/lean/ffmpeg",
        destination_allow=("192.0.2.0/24",),
    )
    node = Engine(settings, store, pull_process_factory=pulls, process_factory=pushes)
    await node.start()
    try:
        stream = await store.create_stream(1, {"name": "p", "pull": True, "uri": SOURCE})
        await store.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://192.0.2.1/live/k"})
        pull = await _attempt(pulls, 1)
        pull.emit(FLV)

        async def pushing() -> bool:
            return bool(pushes.made)

        await wait_for(pushing, 5, "a push")
        assert pull.argv[0] == "/opt/full/ffmpeg"
        assert pushes.made[0].argv[0] == "/opt/lean/ffmpeg"
    finally:
        await node.close()
