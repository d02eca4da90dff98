"""The engine and its `Ownership`, with a hand-made ownership (the PostgreSQL one is tested against a
real server in tests/cluster): a refused claim refuses the publisher, a lost lease ends the stream at
once, a passed deadline drops the next packet, and the lease is given up when nothing runs any more."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.config import Settings
from relay.engine import Engine
from relay.engine.ownership import ClaimRefused, LocalOwnership, LostCallback
from relay.hub import EndCause
from relay.ingest.gate import EndReason, PublishRefused, RefusalReason
from relay.media.packets import MediaKind, MediaPacket
from relay.store.sqlite import SqliteStore
from tests.engine.test_engine import Publisher, publish
from tests.engine.test_pushes import settle
from tests.hub.helpers import config_packets
from tests.supervisor.fake_process import FakeProcesses

PACKET = MediaPacket(MediaKind.VIDEO, 0, b"\x17\x01" + b"x" * 98, keyframe=True)


class HandOwnership:
    """Grants or refuses as the test says; `valid` false stands for a passed local deadline."""

    leased = True

    def __init__(self) -> None:
        self.refuse: RefusalReason | None = None
        self.valid = True
        self.held: set[int] = set()
        self.released: list[int] = []
        self.media_seen: list[int] = []
        self.lost: LostCallback = lambda stream_id: None

    @property
    def node_id(self) -> str:
        return "here"

    def on_lost(self, callback: LostCallback) -> None:
        self.lost = callback

    async def claim(self, stream_id: int, *, takeover_idle_seconds: float | None) -> None:
        if self.refuse is not None:
            raise ClaimRefused(self.refuse, "refused by the test", "elsewhere")
        self.held.add(stream_id)

    def owns(self, stream_id: int) -> bool:
        return self.valid and stream_id in self.held

    def media(self, stream_id: int) -> bool:
        self.media_seen.append(stream_id)
        return self.owns(stream_id)

    def lapsed(self, stream_id: int) -> bool:
        return not self.valid and stream_id in self.held

    def release(self, stream_id: int) -> None:
        self.held.discard(stream_id)
        self.released.append(stream_id)

    def owned(self) -> frozenset[int]:
        return frozenset(self.held)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    def lose(self, stream_id: int) -> None:
        self.held.discard(stream_id)
        self.lost(stream_id)


@pytest.fixture
def ownership() -> HandOwnership:
    return HandOwnership()


@pytest.fixture
async def engine(tmp_path: Path, store: SqliteStore, ownership: HandOwnership) -> AsyncIterator[Engine]:
    node = Engine(Settings(data_dir=tmp_path, publisher_grace_seconds=0.2), store, ownership=ownership)
    await node.start()
    yield node
    await node.close()


@pytest.mark.parametrize("reason", [RefusalReason.OWNED_ELSEWHERE, RefusalReason.DATABASE_UNAVAILABLE])
async def test_a_refused_claim_refuses_the_publisher_and_is_counted(
    engine: Engine, store: SqliteStore, ownership: HandOwnership, reason: RefusalReason
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    ownership.refuse = reason
    with pytest.raises(PublishRefused) as refused:
        await publish(engine, stream.id, stream.token, Publisher())
    assert refused.value.reason is reason
    assert engine.admission.refusals[("rtmp", reason.value)] == 1
    assert not engine.is_live(stream.id) and engine.registry.sessions(stream.id) == []


async def test_a_lost_lease_ends_the_stream_at_once(
    engine: Engine, store: SqliteStore, ownership: HandOwnership
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    publisher = Publisher()
    sink = await publish(engine, stream.id, stream.token, publisher)
    sink.write(PACKET)
    assert engine.is_live(stream.id) and ownership.media_seen == [stream.id]

    ownership.lose(stream.id)
    assert publisher.disconnected == [EndReason.KICKED]
    assert not engine.is_live(stream.id) and not engine.stream_snapshot(stream.id).live
    sink.write(PACKET)  # whatever was in flight goes nowhere
    assert engine.stream_snapshot(stream.id).status.bytes_in_total == len(PACKET.payload)


async def test_a_passed_deadline_drops_the_next_packet_and_the_stream(
    engine: Engine, store: SqliteStore, ownership: HandOwnership
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    publisher = Publisher()
    sink = await publish(engine, stream.id, stream.token, publisher)
    ownership.valid = False  # the node was frozen past its deadline: no renewal proves the lease
    assert not engine.is_live(stream.id), "live only with a lease this node can prove"
    sink.write(PACKET)
    assert engine.stream_snapshot(stream.id).status.bytes_in_total == 0
    await asyncio.sleep(0)  # the loss is handled right after the packet's callback
    assert publisher.disconnected == [EndReason.KICKED]


async def test_the_lease_is_given_up_when_the_stream_ends_here(
    engine: Engine, store: SqliteStore, ownership: HandOwnership
) -> None:
    stream = await store.create_stream(1, {"name": "show"})
    sink = await publish(engine, stream.id, stream.token, Publisher())
    sink.write(PACKET)
    sink.close(EndReason.DROP)  # the grace period holds the stream, and its lease
    assert ownership.released == [] and engine.is_live(stream.id)

    ended = asyncio.Event()
    engine.subscribe(lambda event: ended.set() if not engine.is_live(stream.id) else None)
    await asyncio.wait_for(ended.wait(), 5)  # the grace period ran out
    assert ownership.released == [stream.id]


async def test_one_node_alone_owns_everything() -> None:
    local = LocalOwnership("solo")
    await local.claim(3, takeover_idle_seconds=None)
    assert local.owns(3) and local.media(3) and local.owns(99) and local.owned() == {3}
    local.release(3)
    assert local.owned() == frozenset()


async def test_what_was_in_flight_when_the_deadline_passed_never_reaches_a_push(
    tmp_path: Path, store: SqliteStore, ownership: HandOwnership
) -> None:
    """A node frozen between a packet's arrival (lease valid) and the push reading it: when it runs again
    the push's reader is already due, before any timer could tell the lease is gone. It reads the end,
    its ffmpeg is killed rather than flushed, and the stream is dropped as lost."""
    processes = FakeProcesses()
    settings = Settings(data_dir=tmp_path, destination_allow=("192.0.2.0/24",))
    engine = Engine(settings, store, ownership=ownership, process_factory=processes)
    await engine.start()
    try:
        stream = await store.create_stream(1, {"name": "show"})
        await store.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://192.0.2.1/live/k"})
        publisher = Publisher()
        sink = await publish(engine, stream.id, stream.token, publisher)
        for packet in config_packets():
            sink.write(packet)
        sink.write(PACKET)
        await settle()
        push = processes.last()
        delivered = push.bytes_in
        assert delivered > 0, "the push reads the stream while the lease holds"

        sink.write(dataclasses.replace(PACKET, timestamp_ms=33))  # the lease still holds: into the queue
        ownership.valid = False  # ... and the push reads it only after the deadline
        await settle()
        assert push.bytes_in == delivered
        assert push.subscriber.end_cause is EndCause.HUB_CLOSED and push.subscriber.discarded
        assert publisher.disconnected == [EndReason.KICKED]
    finally:
        await engine.close()
