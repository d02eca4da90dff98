"""The kernel's view of a push's connection, as the supervisor uses it: the acknowledged rate over a
window, a destination that acknowledges nothing (dead) and one too far behind live (the policy).

State-machine tests on the fake clock and fake processes; the connection is what a scripted probe says
(the real probe, sock_diag on real sockets, is tested in tests/push/test_tcp_diag.py, and the two with a
real relay and real links in tests/network: test_blackhole, test_bandwidth, test_resets)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Collection

import pytest

from relay.hub import Hub, HubSettings
from relay.push.tcp_diag import TcpSample
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from relay.supervisor.settings import BehindPolicy
from relay.supervisor.transport import TransportWatch
from tests.fakes.clock import FakeClock
from tests.supervisor.conftest import STREAM_ID, Rig, settle
from tests.supervisor.fake_process import FakeProcess, FakeProcesses

S = PushState
PID = 4242


def sample(acked: int, unacked: int = 10_000, *, inode: int = 1) -> TcpSample:
    return TcpSample(
        inode=inode,
        state=1,
        bytes_acked=acked,
        bytes_sent=acked + unacked,
        unacked_bytes=unacked,
        notsent_bytes=0,
        rtt_us=42_000,
        retransmits=3,
        send_window_bytes=65_536,
    )


class ScriptedProbe:
    """What the kernel would say of each pid's connection: the test sets `connections`."""

    def __init__(self) -> None:
        self.connections: dict[int, TcpSample] = {}
        self.calls: list[set[int]] = []

    async def sample(self, pids: Collection[int]) -> dict[int, TcpSample]:
        self.calls.append(set(pids))
        return {pid: s for pid, s in self.connections.items() if pid in pids}


# -- the window, alone --------------------------------------------------------------------------------


def test_acked_rate_is_over_the_window_not_since_the_start() -> None:
    watch = TransportWatch(window_seconds=5.0)
    acked = 0
    for second in range(20):  # 1 Mbit/s for 10 s, then 250 kbit/s
        acked += 125_000 if second < 10 else 31_250
        watch.record(sample(acked), float(second))
    assert watch.acked_bitrate_kbps() == pytest.approx(250.0)


def test_acked_rate_needs_two_samples_and_restarts_with_a_new_connection() -> None:
    watch = TransportWatch(window_seconds=5.0)
    watch.record(sample(1_000_000), 0.0)
    assert watch.acked_bitrate_kbps() is None
    watch.record(sample(1_125_000), 1.0)
    assert watch.acked_bitrate_kbps() == pytest.approx(1000.0)
    watch.record(sample(500, inode=2), 2.0)  # ffmpeg reconnected: counters start again
    assert watch.acked_bitrate_kbps() is None and watch.ack_stalled_for(2.0) == 0


def test_acks_stalled_only_while_something_waits_for_the_peer() -> None:
    watch = TransportWatch(window_seconds=5.0)
    assert watch.ack_stalled_for(100.0) == 0  # no connection seen yet: no judgement
    watch.record(sample(1000, unacked=5000), 0.0)
    watch.record(sample(1000, unacked=9000), 3.0)
    assert watch.ack_stalled_for(3.0) == 3.0
    watch.record(sample(1000, unacked=0), 4.0)  # all acknowledged, nothing more written: not the peer's fault
    assert watch.ack_stalled_for(6.0) == 2.0


# -- through the supervisor ------------------------------------------------------------------------------


@pytest.fixture
def truth_settings() -> SupervisorSettings:
    return SupervisorSettings(stop_timeout_seconds=2.0, stall_timeout_seconds=30.0, ack_stall_seconds=4.0)


@pytest.fixture
async def probed(truth_settings: SupervisorSettings) -> AsyncIterator[tuple[Rig, ScriptedProbe]]:
    clock = FakeClock()
    hub = Hub(STREAM_ID, HubSettings(), clock, lambda e: None)
    processes = FakeProcesses()
    statuses: list[tuple[int, PushStatus]] = []
    probe = ScriptedProbe()
    lookup: Callable[[int], Hub | None] = {STREAM_ID: hub}.get
    supervisor = Supervisor(
        truth_settings,
        lookup,
        "ffmpeg",
        clock,
        lambda rid, st: statuses.append((rid, st)),
        rand=lambda: 1.0,
        process_factory=processes,
        transport_probe=probe,
    )
    try:
        yield Rig(clock, hub, processes, supervisor, statuses), probe
    finally:
        await asyncio.wait_for(supervisor.close(), 5)


async def running(rig: Rig, *, srt: bool = False) -> FakeProcess:
    rig.go_live()
    spec = PushSpec(1, STREAM_ID, "srt://127.0.0.1:9000?streamid=sekrit-key") if srt else rig.spec(1)
    rig.supervisor.reconcile([spec])
    await settle()
    ffmpeg = rig.processes.last()
    ffmpeg.pid = PID
    ffmpeg.progress()
    assert rig.supervisor.status(1).state is S.RUNNING
    return ffmpeg


async def test_status_reports_what_the_destination_acknowledged(probed: tuple[Rig, ScriptedProbe]) -> None:
    rig, probe = probed
    ffmpeg = await running(rig)
    acked = 0

    def tick() -> None:
        nonlocal acked
        acked += 62_500  # 500 kbit/s acknowledged, while ffmpeg says 1000 (its average of what it wrote)
        probe.connections[PID] = sample(acked, unacked=125_000)
        ffmpeg.progress()

    await rig.advance(8, feeding=True, each_second=tick)
    status = rig.supervisor.status(1)
    assert status.state is S.RUNNING
    assert status.acked_bitrate_kbps == pytest.approx(500.0, rel=0.01)
    assert status.bitrate_kbps == 1000.0
    assert (status.rtt_ms, status.retransmits, status.unacked_bytes) == (42.0, 3, 125_000)
    # 125 kB unacknowledged at the output's 120 kB per media second (4000 bytes a frame, 30 frames a s)
    assert status.behind_live_seconds is not None and 1.0 <= status.behind_live_seconds < 2.0
    assert probe.calls and all(calls == {PID} for calls in probe.calls)


async def test_a_destination_that_acknowledges_nothing_is_killed_and_retried(
    probed: tuple[Rig, ScriptedProbe],
) -> None:
    rig, probe = probed
    ffmpeg = await running(rig)
    probe.connections[PID] = sample(1_000_000, unacked=200_000)
    await rig.advance(3.5, feeding=True, each_second=ffmpeg.progress)  # ffmpeg still writes into its socket
    assert ffmpeg.alive
    await rig.advance(1.5, feeding=True, each_second=ffmpeg.progress)
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "stalled: destination acknowledged nothing for 4s"
    assert ffmpeg.killed


async def test_no_ack_stall_when_the_input_stops(probed: tuple[Rig, ScriptedProbe]) -> None:
    rig, probe = probed
    ffmpeg = await running(rig)
    probe.connections[PID] = sample(1_000_000, unacked=200_000)
    await rig.advance(10)  # the publisher is quiet: nothing to deliver, nothing to judge
    assert ffmpeg.alive and rig.supervisor.status(1).state is S.RUNNING


async def test_srt_push_is_not_probed(probed: tuple[Rig, ScriptedProbe]) -> None:
    rig, probe = probed
    ffmpeg = await running(rig, srt=True)
    await rig.advance(6, feeding=True, each_second=ffmpeg.progress)
    assert probe.calls == []
    status = rig.supervisor.status(1)
    assert status.acked_bitrate_kbps is None and status.behind_live_seconds is not None


@pytest.mark.parametrize(
    "truth_settings",
    [SupervisorSettings(stop_timeout_seconds=2.0, stall_timeout_seconds=30.0, behind_policy=p) for p in BehindPolicy],
    ids=[p.value for p in BehindPolicy],
)
async def test_a_destination_too_far_behind_live_is_handled_by_the_policy(
    probed: tuple[Rig, ScriptedProbe], truth_settings: SupervisorSettings
) -> None:
    rig, probe = probed
    policy = truth_settings.behind_policy
    ffmpeg = await running(rig)
    ffmpeg.stop_reading()  # blocked on its socket: media queues up in the relay too
    acked = 0

    def tick() -> None:
        nonlocal acked
        acked += 10_000
        probe.connections[PID] = sample(acked, unacked=900_000)  # 7.5 s of media at 120 kB/s
        ffmpeg.progress()

    await rig.advance(2, feeding=True, each_second=tick)
    status = rig.supervisor.status(1)
    # 7.5 s unacknowledged in the kernel, and what queued up in the relay since ffmpeg stopped reading
    said = re.fullmatch(r"behind live by (\d+\.\d)s \(limit 5s\): (.*)", status.last_error or "")
    assert said is not None and 7.5 <= float(said.group(1)) <= 9.0, status.last_error
    if policy is BehindPolicy.SKIP:
        assert said.group(2) == "skipped to a keyframe"
        assert status.overflows == 1 and ffmpeg.alive and status.restarts == 0
        # What is behind now sits in the kernel (bounded): nothing queued, nothing more to skip.
        await rig.advance(2, each_second=tick)
        assert rig.supervisor.status(1).overflows == 1
    else:
        assert said.group(2) == "restarting"
        assert ffmpeg.stopped and rig.processes.last() is not ffmpeg and status.restarts == 1
