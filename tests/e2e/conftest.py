"""Fixtures of the end-to-end suite: test clips made once per session, and a rig per test that owns the
relay subprocess, every publisher, receiver and proxy, and reaps them all whatever the outcome."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from relay.ingest.tls import write_self_signed
from tests.e2e.helpers import Media, RelayApi
from tests.support import (
    MediaCache,
    Publisher,
    Receiver,
    RelayProcess,
    children_of,
    free_port,
    pid_alive,
    self_signed_context,
    tcp_proxy,
)


@pytest.fixture(scope="session")
def media(media_cache: MediaCache) -> Media:
    """4 s of video (5 s of audio): for tests that play a clip once."""
    return Media.make(media_cache, 4.0)


@pytest.fixture(scope="session")
def long_media(media_cache: MediaCache) -> Media:
    """9 s of video: for tests that change things while the stream is live."""
    return Media.make(media_cache, 9.0)


@dataclass
class Rig:
    """One relay subprocess (RTMP, RTMPS and SRT ingest on free loopback ports) and everything around it."""

    tmp: Path
    api: RelayApi
    stack: AsyncExitStack
    receivers: list[Receiver] = field(default_factory=list)
    publishers: list[Publisher] = field(default_factory=list)
    seen_children: set[int] = field(default_factory=set)

    @property
    def relay(self) -> RelayProcess:
        return self.api.relay

    async def receiver(
        self,
        name: str,
        *,
        srt: bool = False,
        port: int | None = None,
        key: str | None = None,
        watch_frames: bool = False,
    ) -> Receiver:
        out = self.tmp / f"{name}.{'ts' if srt else 'flv'}"
        key = key or f"key-{name}-5ecret"
        self.api.secrets.add(key)
        receiver = Receiver(out, srt=srt, port=port, key=key, watch_frames=watch_frames)
        self.receivers.append(receiver)
        return await receiver.start()

    async def tls_proxy(self, backend_port: int) -> int:
        """A TLS-terminating proxy in front of `backend_port` (an RTMPS destination); returns its port."""
        port = free_port()
        await self.stack.enter_async_context(tcp_proxy(port, backend_port, tls=self_signed_context(self.tmp)))
        return port

    async def throttled_proxy(self, backend_port: int, bytes_per_second: float) -> int:
        port = free_port()
        await self.stack.enter_async_context(tcp_proxy(port, backend_port, upstream_bytes_per_second=bytes_per_second))
        return port

    async def publish(self, source: Path, url: str) -> Publisher:
        publisher = Publisher.replaying(source, url)
        self.publishers.append(publisher)
        return await publisher.start()

    def note_children(self) -> dict[int, str]:
        """The relay's children now (remembered, so that teardown can check they were all reaped)."""
        if self.relay.process is None:
            return {}
        kids = children_of(self.relay.process.pid)
        self.seen_children.update(kids)
        return kids

    async def restart_relay(self) -> None:
        """SIGKILL the relay and start it again on the same ports and data directory."""
        self.note_children()
        await asyncio.to_thread(self.relay.kill)
        await asyncio.to_thread(self.relay.start)

    async def close(self) -> None:
        for publisher in self.publishers:
            await publisher.close()
        self.note_children()
        await asyncio.to_thread(self.relay.stop)
        for receiver in self.receivers:
            await receiver.close()
        await self.stack.aclose()
        # Every ffmpeg the relay started must be gone; a crash (SIGKILL) leaves orphans to reap here.
        orphans = [pid for pid in self.seen_children if pid_alive(pid)]
        for _ in range(50):
            orphans = [pid for pid in orphans if pid_alive(pid)]
            if not orphans:
                break
            await asyncio.sleep(0.1)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def relay_env(tmp: Path) -> dict[str, str]:
    cert, key = write_self_signed(tmp / "relay-tls")
    return {
        "RELAY_TLS_CERT": str(cert),
        "RELAY_TLS_KEY": str(key),
        "RELAY_TAKEOVER_IDLE_SECONDS": "2",
        "RELAY_PUBLISHER_GRACE_SECONDS": "10",
    }


def marked_relay_env(tmp: Path, request: pytest.FixtureRequest) -> dict[str, str]:
    """`relay_env(tmp)`, plus the settings of the test's `relay_env(NAME=value, ...)` marker if it has one."""
    env = relay_env(tmp)
    marker = request.node.get_closest_marker("relay_env")
    if marker is not None:
        env.update({k: str(v) for k, v in marker.kwargs.items()})
    return env


@pytest.fixture
async def rig(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Rig]:
    """The relay subprocess and what surrounds it (its environment: `marked_relay_env`)."""
    relay = RelayProcess(tmp_path / "data", env_extra=marked_relay_env(tmp_path, request))
    await asyncio.to_thread(relay.start)
    r = Rig(tmp_path, RelayApi(relay), AsyncExitStack())
    try:
        yield r
    finally:
        await r.close()
