"""The rig of the supervisor's state-machine tests: a real hub and Supervisor, fake clock, fake processes.

Nothing here sleeps or spawns: time moves when a test advances the fake clock, and `settle` lets the
event loop run the attempt tasks (a process exit reaches the runner through a few loop turns).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from relay.hub import Hub, HubSettings
from relay.ingest.gate import IngestSink, SourceType
from relay.media.packets import ContainerFormat
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from tests.fakes.clock import FakeClock
from tests.hub.helpers import config_packets, video
from tests.supervisor.fake_process import FakeProcesses

STREAM_ID = 7
_LOOP_TURNS = 50
"""Loop turns that `settle` grants: a process exit needs fewer than ten to reach the runner."""


async def settle() -> None:
    for _ in range(_LOOP_TURNS):
        await asyncio.sleep(0)


@dataclass
class Rig:
    clock: FakeClock
    hub: Hub
    processes: FakeProcesses
    supervisor: Supervisor
    statuses: list[tuple[int, PushStatus]] = field(default_factory=list)
    sink: IngestSink | None = None
    media_ms: int = 0

    def go_live(self, video_config: bytes | None = None) -> IngestSink:
        """A publisher connects (or takes over) and sends its configuration and a keyframe."""
        self.sink = self.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        for p in config_packets(*([video_config] if video_config else [])):
            self.sink.write(p)
        self.sink.write(video(self.media_ms, key=True))
        return self.sink

    async def advance(
        self, seconds: float, *, feeding: bool = False, each_second: Callable[[], None] | None = None
    ) -> None:
        """Move the fake clock in quarter seconds, letting the loop run after each; `feeding`: the
        publisher sends a frame each step; `each_second` runs once per whole second (e.g. progress)."""
        step = 0.25
        elapsed = 0.0
        while elapsed < seconds - 1e-9:
            dt = min(step, seconds - elapsed)
            if feeding and self.sink is not None:
                self.media_ms += int(dt * 1000)
                self.sink.write(video(self.media_ms, key=self.media_ms % 2000 == 0))
            self.clock.advance(dt)
            elapsed += dt
            if each_second is not None and abs(elapsed - round(elapsed)) < 1e-9:
                each_second()
            await settle()

    def spec(self, restream_id: int = 1, key: str = "sekrit-key", scheme: str = "rtmp") -> PushSpec:
        return PushSpec(restream_id, STREAM_ID, f"{scheme}://127.0.0.1:1/live/{key}", False, "drop", True)

    async def wait_state(self, restream_id: int, *states: PushState) -> PushStatus:
        """The status once it reaches one of `states`, letting the loop run (never the wall clock)."""
        for _ in range(_LOOP_TURNS):
            status = self.supervisor.status(restream_id)
            if status.state in states:
                return status
            await asyncio.sleep(0)
        raise AssertionError(
            f"restream {restream_id} stayed {self.supervisor.status(restream_id).state.value}, "
            f"wanted {[s.value for s in states]}"
        )

    def states(self, restream_id: int) -> list[PushState]:
        """The states reported, repeats folded."""
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
    hub = Hub(STREAM_ID, HubSettings(), clock, lambda e: None)
    processes = FakeProcesses()
    statuses: list[tuple[int, PushStatus]] = []
    lookup: Callable[[int], Hub | None] = {STREAM_ID: hub}.get
    supervisor = Supervisor(
        settings,
        lookup,
        "ffmpeg",
        clock,
        lambda rid, st: statuses.append((rid, st)),
        rand=lambda: 1.0,
        process_factory=processes,
    )
    try:
        yield Rig(clock, hub, processes, supervisor, statuses)
    finally:
        await asyncio.wait_for(supervisor.close(), 5)
        assert not any(p.alive for p in processes.made), "a fake process outlived the supervisor"
