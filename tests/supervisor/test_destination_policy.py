"""Each push start resolves its host and checks every address before anything connects (relay/policy.py
through PushRunner and Attempt), on fake processes, the fake clock and a scripted resolver."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from relay.hub import Hub, HubSettings
from relay.policy import DestinationPolicy, IPAddress
from relay.supervisor import PushSpec, PushState, PushStatus, Supervisor, SupervisorSettings
from tests.fakes.clock import FakeClock
from tests.supervisor.conftest import STREAM_ID, Rig, settle
from tests.supervisor.fake_process import FakeProcesses

OPERATOR, TENANT = 1, 2
S = PushState
REFUSED_LOOPBACK = "destination not allowed: the host name resolves to a loopback address"


@dataclass
class Resolver:
    """The DNS as the test scripts it: each name's answers, one per lookup, the last one repeated."""

    answers: dict[str, list[list[str]]] = field(default_factory=dict)
    lookups: list[tuple[str, int, int]] = field(default_factory=list)
    hold: asyncio.Event | None = None
    """Set: lookups wait for it (a slow DNS)."""

    async def __call__(self, host: str, port: int, socket_type: int) -> list[IPAddress]:
        self.lookups.append((host, port, socket_type))
        if self.hold is not None:
            await self.hold.wait()
        rounds = self.answers.get(host)
        if not rounds:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answer = rounds.pop(0) if len(rounds) > 1 else rounds[0]
        return [ipaddress.ip_address(a) for a in answer]


@dataclass
class PolicedRig:
    rig: Rig
    resolver: Resolver

    def spec(self, uri: str, client_id: int, restream_id: int = 1) -> PushSpec:
        return PushSpec(restream_id, STREAM_ID, uri, client_id=client_id)


@pytest.fixture
async def policed() -> AsyncIterator[PolicedRig]:
    clock = FakeClock()
    hub = Hub(STREAM_ID, HubSettings(), clock, lambda e: None)
    processes = FakeProcesses()
    statuses: list[tuple[int, PushStatus]] = []
    lookup: Callable[[int], Hub | None] = {STREAM_ID: hub}.get
    resolver = Resolver()
    supervisor = Supervisor(
        SupervisorSettings(stop_timeout_seconds=2.0, stall_timeout_seconds=4.0, resolve_timeout_seconds=1.0),
        lookup,
        "ffmpeg",
        clock,
        lambda rid, st: statuses.append((rid, st)),
        rand=lambda: 1.0,
        process_factory=processes,
        policy=DestinationPolicy(OPERATOR, lookup=resolver),
    )
    try:
        yield PolicedRig(Rig(clock, hub, processes, supervisor, statuses), resolver)
    finally:
        if resolver.hold is not None:
            resolver.hold.set()
        await asyncio.wait_for(supervisor.close(), 5)
        assert not any(p.alive for p in processes.made), "a fake process outlived the supervisor"


async def test_a_tenants_name_resolving_to_loopback_is_never_started(policed: PolicedRig) -> None:
    rig, dns = policed.rig, policed.resolver
    dns.answers["sneaky.example"] = [["127.0.0.1"]]
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://sneaky.example:8080/live/sekrit", TENANT)])
    status = await rig.wait_state(1, S.FAILED)
    assert not rig.processes.made  # no ffmpeg: nothing connected, nothing to tell an open port from a closed one
    assert status.last_error == REFUSED_LOOPBACK and status.log_tail == ()
    assert status.next_retry_seconds == pytest.approx(30.0)  # judged like a refusal: retried at the cap
    assert dns.lookups == [("sneaky.example", 8080, socket.SOCK_STREAM)]
    await rig.advance(30)
    assert len(dns.lookups) == 2 and not rig.processes.made  # asked again at each start, refused again


async def test_the_operator_pushes_to_the_checked_address(policed: PolicedRig) -> None:
    rig, dns = policed.rig, policed.resolver
    dns.answers["localhost"] = [["127.0.0.1"]]
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://localhost:8080/live/sekrit", OPERATOR)])
    await settle()
    ffmpeg = rig.processes.last()
    assert ffmpeg.started and ffmpeg.uri == "rtmp://127.0.0.1:8080/live/sekrit"
    assert ffmpeg.argv[ffmpeg.argv.index("-rtmp_tcurl") + 1] == "rtmp://localhost:8080/live"
    ffmpeg.progress()
    assert rig.supervisor.status(1).state is S.RUNNING


async def test_rebinding_between_two_starts_is_caught(policed: PolicedRig) -> None:
    rig, dns = policed.rig, policed.resolver
    dns.answers["rebind.example"] = [["8.8.8.8"], ["169.254.169.254"]]
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("srt://rebind.example:9000?streamid=x", TENANT)])
    await settle()
    first = rig.processes.last()
    assert first.uri == "srt://8.8.8.8:9000?streamid=x" and dns.lookups[0][2] == socket.SOCK_DGRAM
    first.fail_to_connect()
    status = await rig.wait_state(1, S.RETRYING)
    await rig.advance(status.next_retry_seconds or 1.0)
    status = await rig.wait_state(1, S.FAILED)
    assert status.last_error == "destination not allowed: the host name resolves to a link-local address"
    assert len(rig.processes.made) == 1


async def test_a_name_that_does_not_resolve_backs_off_as_an_error(policed: PolicedRig) -> None:
    rig = policed.rig
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://nx.example/live/k", TENANT)])
    status = await rig.wait_state(1, S.RETRYING)
    assert status.last_error == "cannot resolve the destination host: Name or service not known"
    assert not rig.processes.made


async def test_a_stop_while_resolving_starts_nothing(policed: PolicedRig) -> None:
    rig, dns = policed.rig, policed.resolver
    dns.answers["slow.example"] = [["8.8.8.8"]]
    dns.hold = asyncio.Event()
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://slow.example/live/k", TENANT)])
    await settle()
    assert rig.supervisor.status(1).state is S.STARTING and dns.lookups
    rig.supervisor.reconcile([])
    status = await rig.wait_state(1, S.DISABLED)
    assert not rig.processes.made and status.last_error is None


async def test_a_literal_address_is_judged_without_a_lookup(policed: PolicedRig) -> None:
    rig, dns = policed.rig, policed.resolver
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://2130706433/live/k", TENANT)])
    status = await rig.wait_state(1, S.FAILED)
    assert status.last_error == "destination not allowed: the host is a loopback address"
    assert not dns.lookups and not rig.processes.made


async def test_each_retry_takes_the_next_address_of_the_name(policed: PolicedRig) -> None:
    # ffmpeg, given one address, cannot fall back to the host's next one (say, a broken IPv6 route).
    rig, dns = policed.rig, policed.resolver
    dns.answers["dual.example"] = [["2606:4700::1", "8.8.8.8"]]
    rig.go_live()
    rig.supervisor.reconcile([policed.spec("rtmp://dual.example/live/k", TENANT)])
    await settle()
    first = rig.processes.last()
    assert first.uri == "rtmp://[2606:4700::1]:1935/live/k"
    first.fail_to_connect()
    status = await rig.wait_state(1, S.RETRYING)
    await rig.advance(status.next_retry_seconds or 1.0)
    assert rig.processes.last().uri == "rtmp://8.8.8.8:1935/live/k"
