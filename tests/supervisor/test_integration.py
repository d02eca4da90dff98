"""Real ffmpeg pushing hub output to real receivers on 127.0.0.1 (RTMP, RTMPS via a TLS proxy, SRT)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.hub import Hub, HubSettings, LoopClock, SubscriberLimits
from relay.ingest.gate import EndReason, SourceType
from relay.media.mpegts import MpegTsReader
from relay.media.packets import ContainerFormat, MediaPacket
from relay.push import CommandSettings
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from tests.supervisor.realtime import feed_realtime, flv_packets
from tests.support import (
    FFMPEG,
    Clip,
    MediaCache,
    Receiver,
    free_port,
    is_contiguous_run,
    md5s,
    self_signed_context,
    tcp_proxy,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

KEY = "receiver-key"
"""The receivers' stream key (and an SRT receiver's passphrase, which takes 10 to 79 characters)."""


SAMPLE = Clip(seconds=3.0, rate=30, gop=30)
"""90 frames of 320x240 H.264 (GOP 30, no B-frames at preset ultrafast) + 64 kb/s AAC in FLV."""


@pytest.fixture(scope="module")
def samples(media_cache: MediaCache) -> tuple[Path, Path]:
    """The FLV sample and its `-c copy` remux to MPEG-TS."""
    flv = media_cache.clip(SAMPLE)
    return flv, media_cache.remux(flv, "mpegts")


@dataclass
class Engine:
    hub: Hub
    supervisor: Supervisor
    receivers: list[Receiver] = field(default_factory=list)
    statuses: list[tuple[int, PushStatus]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, rid: int, status: PushStatus) -> None:
        self.statuses.append((rid, status))
        self.changed.set()

    async def wait_state(self, rid: int, *states: PushState, within: float = 20.0) -> PushStatus:
        async with asyncio.timeout(within):
            while (status := self.supervisor.status(rid)).state not in states:
                self.changed.clear()
                await self.changed.wait()
            return status

    async def receiver(self, out: Path, *, srt: bool = False, port: int | None = None, key: str = KEY) -> Receiver:
        r = Receiver(out, srt=srt, port=port, key=key)
        self.receivers.append(r)
        return await r.start()


@pytest.fixture
async def engine() -> AsyncIterator[Engine]:
    clock = LoopClock()
    hub = Hub(1, HubSettings(subscriber=SubscriberLimits(max_bytes=4_000_000)), clock, lambda e: None)
    settings = SupervisorSettings(
        restart_initial_delay_seconds=0.2,
        restart_max_delay_seconds=1.0,
        stall_timeout_seconds=5.0,
        stop_timeout_seconds=3.0,
    )
    e = Engine(hub, None)  # type: ignore[arg-type]
    sup = Supervisor(settings, {1: hub}.get, FFMPEG, clock, e.record)
    e.supervisor = sup
    try:
        yield e
    finally:
        await asyncio.wait_for(sup.close(), 20)
        for r in e.receivers:
            await r.close()


def rtmp(port: int) -> str:
    """The URL of a receiver that is not listening yet."""
    return f"rtmp://127.0.0.1:{port}/live/{KEY}"


async def test_flv_source_to_rtmp_rtmps_and_srt(engine: Engine, samples: tuple[Path, Path], tmp_path: Path) -> None:
    flv, ts = samples
    p_tls = free_port()
    to_rtmp = await engine.receiver(tmp_path / "rtmp.flv")
    to_rtmps = await engine.receiver(tmp_path / "rtmps.flv")
    to_srt = await engine.receiver(tmp_path / "srt.ts", srt=True)
    async with tcp_proxy(p_tls, to_rtmps.port, tls=self_signed_context(tmp_path)):
        sink = engine.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        packets = flv_packets(flv)
        engine.supervisor.reconcile(
            [
                PushSpec(1, 1, to_rtmp.uri(), False, "drop", True),
                PushSpec(2, 1, to_rtmps.uri("rtmps", p_tls), False, "drop", tls_verify=False),
                PushSpec(3, 1, to_srt.uri(), False, "drop", True),
            ]
        )
        await feed_realtime(sink, packets, speed=1.5)
        for rid in (1, 2, 3):
            status = await engine.wait_state(rid, PushState.RUNNING, within=5)
            assert status.bytes_out > 0
        sink.close(EndReason.UNPUBLISH)
        for rid in (1, 2, 3):
            await engine.wait_state(rid, PushState.IDLE)
        for r in engine.receivers:
            if await r.finished(8) is None:
                await r.close()
    source = md5s(flv)
    for name in ("rtmp.flv", "rtmps.flv"):
        got = md5s(tmp_path / name)
        assert got == source, name
    # FLV -> MPEG-TS converts H.264 to Annex B exactly as `ffmpeg -c copy -f mpegts` made the sample.
    got_ts = md5s(tmp_path / "srt.ts")
    assert got_ts == md5s(ts)
    assert all(s.restarts == 0 for _, s in engine.statuses)


async def test_rtmps_verification_rejects_self_signed(
    engine: Engine, samples: tuple[Path, Path], tmp_path: Path
) -> None:
    p_tls = free_port()
    backend = await engine.receiver(tmp_path / "x.flv", key="topsecret")
    async with tcp_proxy(p_tls, backend.port, tls=self_signed_context(tmp_path)):
        sink = engine.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        engine.supervisor.reconcile([PushSpec(1, 1, backend.uri("rtmps", p_tls), False, "drop", True)])
        feeder = asyncio.create_task(feed_realtime(sink, flv_packets(samples[0]), speed=2))
        try:
            status = await engine.wait_state(1, PushState.RETRYING, PushState.FAILED, within=15)
        finally:
            feeder.cancel()
            await asyncio.gather(feeder, return_exceptions=True)
    assert status.last_error and "topsecret" not in status.last_error
    assert "topsecret" not in repr(engine.statuses)


async def test_ts_source_to_srt_keeps_video_bytes(engine: Engine, samples: tuple[Path, Path], tmp_path: Path) -> None:
    _, ts = samples
    receiver = await engine.receiver(tmp_path / "srt.ts", srt=True)
    sink = engine.hub.open_session(ContainerFormat.MPEGTS, SourceType.SRT)
    packetizer = MpegTsReader()
    data = ts.read_bytes()
    chunk = 188 * 7
    packets: list[MediaPacket] = []
    # About 3 s of media: pace the 1316-byte chunks evenly (a TS source's timestamps are receive times).
    per_chunk_ms = 3000 / (len(data) / chunk)
    for i, pos in enumerate(range(0, len(data), chunk)):
        packets += packetizer.feed(data[pos : pos + chunk], int(i * per_chunk_ms))
    packets += packetizer.flush(3000)
    engine.supervisor.reconcile([PushSpec(1, 1, receiver.uri(), False, "drop", True)])
    await feed_realtime(sink, packets, speed=1.5)
    await engine.wait_state(1, PushState.RUNNING, within=5)
    sink.close(EndReason.UNPUBLISH)
    await engine.wait_state(1, PushState.IDLE)
    if await receiver.finished(8) is None:
        await receiver.close()
    source = md5s(ts)
    got = md5s(tmp_path / "srt.ts")
    # The last packet received may be cut short: ffmpeg's SRT caller closes without sending what it still
    # holds (relay/push/command.py; the e2e suite's srt_tail_ok allows the same). Every other is identical.
    assert got and is_contiguous_run(got[:-1], source)
    assert len(got) >= len(source) - 31  # at most one GOP missed by a late start


async def test_faults_down_at_start_killed_destination_and_sigkilled_ffmpeg(
    engine: Engine, samples: tuple[Path, Path], tmp_path: Path
) -> None:
    flv, _ = samples
    p_a = free_port()
    loops = 3
    packets = flv_packets(flv, loops=loops)
    sink = engine.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
    b = await engine.receiver(tmp_path / "b.flv")
    engine.supervisor.reconcile(
        [PushSpec(1, 1, rtmp(p_a), False, "drop", True), PushSpec(2, 1, b.uri(), False, "drop", True)]
    )
    feeder = asyncio.create_task(feed_realtime(sink, packets, speed=1.5))
    try:
        # A is down at start: refused connections, retried with backoff (never marked "failed").
        status = await engine.wait_state(1, PushState.RETRYING, within=10)
        assert "Connection refused" in (status.last_error or "")
        await engine.receiver(tmp_path / "a1.flv", port=p_a)
        await engine.wait_state(1, PushState.RUNNING, within=10)
        # A's receiver dies mid-stream: the push is restarted when it comes back; B is untouched.
        a1 = engine.receivers[-1]
        assert a1.proc is not None
        a1.proc.kill()
        await a1.proc.wait()
        await engine.wait_state(1, PushState.RETRYING, PushState.STARTING, within=15)
        await engine.receiver(tmp_path / "a2.flv", port=p_a)
        await engine.wait_state(1, PushState.RUNNING, within=10)
        # ffmpeg itself is SIGKILLed: restarted.
        runner = engine.supervisor._runners[1]
        assert runner._attempt is not None
        pid = runner._attempt.process.pid  # type: ignore[union-attr]
        assert pid is not None
        os.killpg(pid, signal.SIGKILL)
        await engine.wait_state(1, PushState.RETRYING, PushState.STARTING, within=10)
        a2 = engine.receivers[-1]
        await a2.finished(5)
        await engine.receiver(tmp_path / "a3.flv", port=p_a)
        await engine.wait_state(1, PushState.RUNNING, within=10)
        assert engine.supervisor.status(2).restarts == 0
        await feeder
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
    sink.close(EndReason.UNPUBLISH)
    await engine.wait_state(2, PushState.IDLE)
    await b.finished(8)
    source = md5s(flv) * loops
    assert md5s(tmp_path / "b.flv") == source  # no gap on the healthy destination
    assert engine.supervisor.status(1).restarts >= 3
    a3 = md5s(tmp_path / "a3.flv")
    assert a3 and is_contiguous_run(a3, source)


async def test_slow_destination_does_not_hold_back_others(samples: tuple[Path, Path], tmp_path: Path) -> None:
    flv, _ = samples
    clock = LoopClock()
    limits = SubscriberLimits(max_bytes=150_000, max_seconds=2.0, overflow_restart_count=1000)
    hub = Hub(1, HubSettings(subscriber=limits), clock, lambda e: None)
    settings = SupervisorSettings(
        stall_timeout_seconds=30, stop_timeout_seconds=2, command=CommandSettings(tcp_send_buffer_bytes=32_768)
    )
    watcher = Engine(hub, None)  # type: ignore[arg-type]
    sup = Supervisor(settings, {1: hub}.get, FFMPEG, clock, watcher.record)
    watcher.supervisor = sup
    p_slow = free_port()
    fast = Receiver(tmp_path / "fast.flv", key=KEY)
    slow = Receiver(tmp_path / "slow.flv", key=KEY)
    try:
        await fast.start()
        await slow.start()
        async with tcp_proxy(p_slow, slow.port, upstream_bytes_per_second=5_000):
            sink = hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
            sup.reconcile(
                [
                    PushSpec(1, 1, fast.uri(), False, "drop", True),
                    PushSpec(2, 1, slow.uri(port=p_slow), False, "drop", True),
                ]
            )
            packets = flv_packets(flv, loops=2)
            peak = overflows = 0
            feeder = asyncio.create_task(feed_realtime(sink, packets, speed=1.5))
            while not feeder.done():
                await asyncio.sleep(0.05)
                slow_runner = sup._runners[2]
                if slow_runner._attempt is not None:
                    subscriber = slow_runner._attempt.subscriber
                    peak = max(peak, subscriber.queued_bytes)
                    overflows = max(overflows, subscriber.overflows)
            await feeder
            assert overflows > 0
            assert peak <= limits.max_bytes
            sink.close(EndReason.UNPUBLISH)
            await watcher.wait_state(1, PushState.IDLE, within=15)
            await fast.finished(8)
            assert md5s(tmp_path / "fast.flv") == md5s(flv) * 2
    finally:
        await asyncio.wait_for(sup.close(), 20)
        await fast.close()
        await slow.close()
