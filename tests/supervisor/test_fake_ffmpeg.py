"""The Supervisor with its real process (FfmpegProcess) around the fake-ffmpeg script: children are
spawned, signalled and reaped for real, on the loop's clock. The state machine itself is tested on fake
processes in test_supervisor.py."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.hub import Hub, HubSettings, LoopClock
from relay.ingest.gate import EndReason, IngestSink, SourceType
from relay.media.packets import ContainerFormat
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from tests.hub.helpers import config_packets, video

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

FAKE_FFMPEG = str(Path(__file__).parent.parent / "fakes" / "fake_ffmpeg.py")


@dataclass
class RealRig:
    hub: Hub
    supervisor: Supervisor = field(init=False)
    statuses: list[tuple[int, PushStatus]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    feeder: asyncio.Task[None] | None = None

    def record(self, rid: int, status: PushStatus) -> None:
        self.statuses.append((rid, status))
        self.changed.set()

    def go_live(self) -> IngestSink:
        sink = self.hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        for p in config_packets():
            sink.write(p)
        sink.write(video(0, key=True))
        self.feeder = asyncio.create_task(self._feed(sink))
        return sink

    async def _feed(self, sink: IngestSink) -> None:
        ts = 33
        while True:
            await asyncio.sleep(0.02)
            sink.write(video(ts, key=ts % 990 == 0))
            ts += 33

    async def stop_feeding(self) -> None:
        if self.feeder is not None:
            self.feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.feeder

    def spec(self, mode: str = "run") -> PushSpec:
        return PushSpec(1, 7, f"rtmp://127.0.0.1:1/live/sekrit-key?fake={mode}", False, "drop", True)

    async def wait_state(self, *states: PushState, within: float = 10.0) -> PushStatus:
        async with asyncio.timeout(within):
            while (status := self.supervisor.status(1)).state not in states:
                self.changed.clear()
                await self.changed.wait()
            return status

    def pid(self) -> int | None:
        attempt = self.supervisor._runners[1]._attempt
        return attempt.process.pid if attempt is not None else None  # type: ignore[union-attr]


def alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
async def rig() -> AsyncIterator[RealRig]:
    clock = LoopClock()
    r = RealRig(Hub(7, HubSettings(), clock, lambda e: None))
    settings = SupervisorSettings(stop_timeout_seconds=2.0, stall_timeout_seconds=4.0)
    r.supervisor = Supervisor(settings, {7: r.hub}.get, FAKE_FFMPEG, clock, r.record, rand=lambda: 1.0)
    try:
        yield r
    finally:
        await r.stop_feeding()
        await asyncio.wait_for(r.supervisor.close(), 15)


async def test_runs_then_ends_cleanly_on_unpublish(rig: RealRig) -> None:
    sink = rig.go_live()
    rig.supervisor.reconcile([rig.spec()])
    status = await rig.wait_state(PushState.RUNNING)
    assert status.bytes_out > 0 and "sekrit" not in status.uri
    pid = rig.pid()
    await rig.stop_feeding()
    sink.close(EndReason.UNPUBLISH)
    status = await rig.wait_state(PushState.IDLE)
    assert status.last_error is None and status.restarts == 0
    assert not alive(pid)
    states = [s.state for _, s in rig.statuses]
    assert [a for a, b in zip(states, [None, *states], strict=False) if a is not b] == [
        PushState.STARTING,
        PushState.RUNNING,
        PushState.IDLE,
    ]


async def test_refusal_is_read_from_ffmpeg_and_masked(rig: RealRig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec("refuse")])
    status = await rig.wait_state(PushState.FAILED)
    assert status.last_error is not None and "BadName" in status.last_error
    assert any("Error opening output" in line for line in status.log_tail)
    assert "sekrit" not in repr(rig.statuses)


async def test_sigkilled_ffmpeg_is_restarted(rig: RealRig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec()])
    await rig.wait_state(PushState.RUNNING)
    pid = rig.pid()
    assert pid is not None
    os.killpg(pid, signal.SIGKILL)
    status = await rig.wait_state(PushState.RETRYING)
    assert status.last_error == "ffmpeg exited with code -9"
    status = await rig.wait_state(PushState.RUNNING)
    assert status.restarts == 1 and rig.pid() != pid and not alive(pid)


async def test_close_reaps_a_child_that_ignores_sigint(rig: RealRig) -> None:
    rig.go_live()
    rig.supervisor.reconcile([rig.spec("ignoreint")])
    await rig.wait_state(PushState.RUNNING)
    pid = rig.pid()
    await asyncio.wait_for(rig.supervisor.close(), 10)
    assert not alive(pid)
