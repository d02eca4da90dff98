from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.hub import Hub, HubSettings
from relay.ingest.gate import IngestSink, SourceType
from relay.media.packets import ContainerFormat
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from tests.fakes.clock import FakeClock
from tests.hub.helpers import config_packets, video

FAKE_FFMPEG = str(Path(__file__).parent.parent / "fakes" / "fake_ffmpeg.py")


@dataclass
class Rig:
    clock: FakeClock
    hub: Hub
    supervisor: Supervisor
    statuses: list[tuple[int, PushStatus]] = field(default_factory=list)
    sink: IngestSink | None = None
    feeder: asyncio.Task[None] | None = None

    def go_live(self) -> IngestSink:
        self.sink = self.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        for p in config_packets():
            self.sink.write(p)
        self.sink.write(video(0, key=True))
        self.feeder = asyncio.create_task(self._feed(self.sink))
        return self.sink

    async def _feed(self, sink: IngestSink) -> None:
        ts = 33
        while True:
            await asyncio.sleep(0.02)
            sink.write(video(ts, key=ts % 990 == 0))
            ts += 33

    def stop_feeding(self) -> None:
        if self.feeder is not None:
            self.feeder.cancel()

    def spec(self, restream_id: int = 1, mode: str = "run", key: str = "sekrit-key") -> PushSpec:
        return PushSpec(restream_id, 7, f"rtmp://127.0.0.1:1/live/{key}?fake={mode}", False, "drop", True)

    async def wait_state(self, restream_id: int, *states: PushState, within: float = 10.0) -> PushStatus:
        async with asyncio.timeout(within):
            while True:
                status = self.supervisor.status(restream_id)
                if status.state in states:
                    return status
                await asyncio.sleep(0.02)

    def states(self, restream_id: int) -> list[PushState]:
        out: list[PushState] = []
        for rid, status in self.statuses:
            if rid == restream_id and (not out or out[-1] is not status.state):
                out.append(status.state)
        return out


@pytest.fixture
def settings() -> SupervisorSettings:
    return SupervisorSettings(stop_timeout_seconds=2.0, stall_timeout_seconds=4.0)


@pytest.fixture
async def rig(settings: SupervisorSettings) -> AsyncIterator[Rig]:
    clock = FakeClock()
    hub = Hub(7, HubSettings(), clock, lambda e: None)
    statuses: list[tuple[int, PushStatus]] = []
    lookup: Callable[[int], Hub | None] = {7: hub}.get
    supervisor = Supervisor(settings, lookup, FAKE_FFMPEG, clock, lambda rid, st: statuses.append((rid, st)),
                            rand=lambda: 1.0)
    r = Rig(clock, hub, supervisor, statuses)
    try:
        yield r
    finally:
        r.stop_feeding()
        with contextlib.suppress(asyncio.CancelledError):
            if r.feeder is not None:
                await r.feeder
        await asyncio.wait_for(supervisor.close(), 15)


__all__ = ["FAKE_FFMPEG", "Rig", "sys"]
