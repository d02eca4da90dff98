"""The engine in-process, on a real SQLite store, with hand-made publishers: no subprocess.

Definitions reach it only through the store's change feed; what it reports comes as typed snapshots
and typed events.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.config import Settings
from relay.engine import Engine
from relay.engine.events import EngineEvent, RestreamStateChanged, StreamInfoChanged, StreamLiveChanged
from relay.engine.status import RestreamStatus, StreamState
from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInfo,
    Transport,
)
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from relay.store.sqlite import SqliteStore
from relay.supervisor.states import PushState, PushStatus


@dataclass
class Publisher:
    transport: Transport = Transport.RTMP
    peer: str = "127.0.0.1:50000"
    idle: float = 0.0
    disconnected: list[EndReason] = field(default_factory=list)

    def idle_seconds(self) -> float:
        return self.idle

    def disconnect(self, reason: EndReason) -> None:
        self.disconnected.append(reason)


@pytest.fixture
async def engine(tmp_path: Path, store: SqliteStore) -> AsyncIterator[Engine]:
    node = Engine(Settings(data_dir=tmp_path, publisher_grace_seconds=0.2), store)
    await node.start()
    yield node
    await node.close()


def collect(engine: Engine) -> list[EngineEvent]:
    events: list[EngineEvent] = []
    engine.subscribe(events.append)
    return events


async def publish(engine: Engine, stream_id: int, token: str, publisher: Publisher) -> IngestSink:
    return await engine.open_publish(
        PublishRequest(stream_key=f"{stream_id}?{token}", container=ContainerFormat.FLV, publisher=publisher)
    )


async def test_a_publisher_makes_its_stream_live_and_is_measured(engine: Engine, store: SqliteStore) -> None:
    events = collect(engine)
    stream = await store.create_stream(1, {"name": "show"})
    assert not engine.stream_snapshot(stream.id).live

    sink = await publish(engine, stream.id, stream.token, Publisher())
    sink.update_info(StreamInfo(video_width=1280, video_height=720, frame_rate=30.0, video_codec="h264"))
    sink.write(MediaPacket(MediaKind.VIDEO, 0, b"\x17\x01" + b"x" * 998, keyframe=True))

    snapshot = engine.stream_snapshot(stream.id)
    assert snapshot.live and snapshot.status.state is StreamState.LIVE
    assert snapshot.info is not None and snapshot.info.video_width == 1280
    assert snapshot.status.transport is Transport.RTMP and snapshot.status.bytes_in == 1000
    assert engine.live_count() == 1
    assert events[0] == StreamLiveChanged(1, stream.id, True, StreamState.LIVE)
    assert isinstance(events[1], StreamInfoChanged) and events[1].info.frame_rate == 30.0

    sink.close(EndReason.UNPUBLISH)
    snapshot = engine.stream_snapshot(stream.id)
    assert not snapshot.live and snapshot.finished_at is not None and snapshot.info is None
    assert snapshot.status.bytes_in_total == 1000
    assert StreamLiveChanged(1, stream.id, False, StreamState.OFFLINE, "unpublish") in events


async def test_deactivating_a_stream_in_the_store_disconnects_its_publisher(engine: Engine, store: SqliteStore) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    publisher = Publisher()
    await publish(engine, stream.id, stream.token, publisher)
    await store.update_stream(stream.id, 1, {"active": False})  # no engine call: the change feed carries it
    assert publisher.disconnected == [EndReason.KICKED]
    assert not engine.is_live(stream.id)
    with pytest.raises(PublishRefused) as refused:
        await publish(engine, stream.id, stream.token, Publisher())
    assert refused.value.reason is RefusalReason.INACTIVE
    assert engine.admission.refusals[("rtmp", "inactive")] == 1


async def test_deleting_a_stream_forgets_its_past(engine: Engine, store: SqliteStore) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    sink = await publish(engine, stream.id, stream.token, Publisher())
    sink.write(MediaPacket(MediaKind.AUDIO, 0, b"\xaf\x01" + b"a" * 98))
    assert await store.delete_stream(stream.id, 1)
    snapshot = engine.stream_snapshot(stream.id)
    assert not snapshot.live and snapshot.started_at is None and snapshot.status.bytes_in_total == 0


async def test_a_silent_publisher_is_taken_over(engine: Engine, store: SqliteStore) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    first = Publisher()
    await publish(engine, stream.id, stream.token, first)
    with pytest.raises(PublishRefused):
        await publish(engine, stream.id, stream.token, Publisher())
    first.idle = 60.0
    second = Publisher(peer="127.0.0.1:50001")
    await publish(engine, stream.id, stream.token, second)
    assert first.disconnected == [EndReason.KICKED]
    assert engine.stream_snapshot(stream.id).live


async def test_a_token_reset_disconnects_the_publisher_and_admits_only_the_new_token(
    engine: Engine, store: SqliteStore
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    publisher = Publisher()
    sink = await publish(engine, stream.id, stream.token, publisher)
    await store.update_stream(stream.id, 1, {"name": "renamed"})  # another change leaves it alone
    assert publisher.disconnected == [] and engine.is_live(stream.id)

    reset = await store.reset_stream_token(stream.id, 1)  # no engine call: the change feed carries it
    assert reset is not None
    assert publisher.disconnected == [EndReason.KICKED] and not engine.is_live(stream.id)
    sink.close(EndReason.KICKED)  # as the ingest does once the connection is closed: nothing more happens
    assert not engine.is_live(stream.id)
    with pytest.raises(PublishRefused) as refused:
        await publish(engine, stream.id, stream.token, Publisher())
    assert refused.value.reason is RefusalReason.BAD_TOKEN
    # The SRT handshake admission reads the store from libsrt's thread: it sees the new token too.
    with pytest.raises(PublishRefused) as refused:
        engine.admission.check(f"{stream.id}#{stream.token}")
    assert refused.value.reason is RefusalReason.BAD_TOKEN
    assert engine.admission.check(f"{stream.id}#{reset.token}").stream_id == stream.id
    await publish(engine, stream.id, reset.token, Publisher(peer="127.0.0.1:50001"))
    assert engine.is_live(stream.id)


async def test_restream_status_says_why_no_push_runs(engine: Engine, store: SqliteStore) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    on = await store.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://127.0.0.1:1/live/a"})
    off = await store.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://127.0.0.1:1/live/b", "active": False})
    assert engine.restream_status(on).state is PushState.IDLE  # wanted, the stream is not live
    status = engine.restream_status(off)
    assert status.state is PushState.DISABLED and status.since is None
    await store.update_stream(stream.id, 1, {"active": False})
    assert engine.restream_status(on).state is PushState.IDLE


def test_a_push_status_becomes_a_restream_status() -> None:
    running = PushStatus(
        restream_id=3,
        state=PushState.RUNNING,
        since=1000.0,
        bytes_out=5000,
        bitrate_kbps=4499.6,
        frames=90,
        restarts=1,
        overflows=2,
        log_tail=("a", "b"),
    )
    status = RestreamStatus.of_push(running, now=1012.5)
    assert status.overflows == 2  # a destination too slow for the stream, which never failed
    assert (status.uptime_seconds, status.bitrate_kbps, status.bytes, status.log_tail) == (12.5, 4500, 5000, ("a", "b"))
    assert status.since is not None and status.since.timestamp() == 1000.0
    retrying = RestreamStatus.of_push(
        PushStatus(restream_id=3, state=PushState.RETRYING, since=1000.0, bitrate_kbps=10.0, next_retry_seconds=2.0),
        now=1012.5,
    )
    assert (retrying.uptime_seconds, retrying.bitrate_kbps, retrying.next_retry_seconds) == (0, 0, 2.0)


def test_restream_events_carry_the_typed_status() -> None:
    event = RestreamStateChanged(1, 2, 3, RestreamStatus.of_push(PushStatus(3, PushState.STARTING, 5.0)))
    assert event.status.state is PushState.STARTING
