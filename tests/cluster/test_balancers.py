"""The balancers of the cluster samples, on their own: HAProxy (TCP) moves an RTMP publisher off a dead or
frozen node within about a second, and nginx `stream` (UDP) moves an SRT caller off a dead one.

The nodes here are plain destinations (RTMP: our sink; SRT: ffmpeg listeners) so that these run without
PostgreSQL or the relay's cluster support; tests/cluster/test_cluster.py runs them in front of relay nodes.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import TypeVar

import pytest
from aiohttp import web

from tests.support import Clip, MediaCache, Receiver, free_port, wait_for
from tests.support.balancers import Backend, HAProxy, NginxStream, why_no_haproxy, why_no_nginx_stream
from tests.support.publishers import ReconnectingPublisher
from tests.support.rtmp_sink import RtmpSink

T = TypeVar("T")

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(90)]

LOOP_CLIP = Clip(container="flv", seconds=2.0, gop=25, fixed_gop=True)
LOOP_CLIP_TS = Clip(container="mpegts", seconds=2.0, gop=25, fixed_gop=True)
SRT_KEY = "srt-dest-passphrase"


@pytest.fixture
def haproxy_or_skip() -> None:
    if reason := why_no_haproxy():
        pytest.skip(reason)


@pytest.fixture
def nginx_or_skip() -> None:
    if reason := why_no_nginx_stream():
        pytest.skip(reason)


def frozen_listener(port: int) -> socket.socket:
    """A port whose process never answers: the kernel completes TCP handshakes into the backlog and nobody
    reads them, as with a relay stopped by SIGSTOP."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(16)
    return sock


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


class Node:
    """A stand-in node: an RTMP sink, and /healthz on an HTTP port as a relay's API answers it."""

    def __init__(self, name: str) -> None:
        self.sink = RtmpSink(name)
        self.http_port = free_port()
        self._runner: web.AppRunner | None = None

    async def start(self) -> Node:
        await self.sink.start()
        app = web.Application()
        app.router.add_get("/healthz", healthz)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.http_port).start()
        return self

    async def close(self) -> None:
        await self.sink.close()
        await self.close_health()

    async def close_health(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.mark.usefixtures("haproxy_or_skip")
@pytest.mark.parametrize("failure", ["dead", "frozen"])
async def test_haproxy_moves_an_rtmp_publisher_off_a_failed_node(
    failure: str, tmp_path: Path, media_cache: MediaCache
) -> None:
    clip = media_cache.clip(LOOP_CLIP)
    nodes = [await Node("a").start(), await Node("b").start()]
    backends = [Backend(n.sink.name, n.sink.port, n.http_port) for n in nodes]
    haproxy = HAProxy(tmp_path / "haproxy", backends, balance="first")
    await asyncio.to_thread(haproxy.start)
    frozen: list[socket.socket] = []
    try:
        async with ReconnectingPublisher(clip, f"rtmp://127.0.0.1:{haproxy.rtmp_port}/live/key") as publisher:
            first, second = nodes  # `balance first`: every connection goes to the first node that is up
            await wait_for(lambda: _true(first.sink.video_since(0) > 10), 15, "video at the first node")
            failed_at = time.monotonic()
            if failure == "frozen":
                # Its connections stay open but nothing is read; its ports accept and never answer.
                for connection in first.sink.open:
                    connection.pause()
                await first.sink.stop_listening()
                await first.close_health()
                frozen = [frozen_listener(first.sink.port), frozen_listener(first.http_port)]
            else:
                await first.close()
            arrived = await wait_for(
                lambda: _true(second.sink.first_video_since(failed_at)),
                10,
                f"video at the second node: {publisher.output}",
            )
            # Health checks every 250 ms, two failures: out of rotation within about a second; the
            # publisher's own retry (0.3 s) and reconnect come on top.
            assert arrived - failed_at < 5.0
            assert len(publisher.attempts) >= 2, "the balancer closed the failed node's session (no reconnect)"
    finally:
        for sock in frozen:
            sock.close()
        await asyncio.to_thread(haproxy.stop)
        for node in nodes:
            await node.close()
    log = haproxy.log()
    assert "is DOWN" in log, log[-2000:]


@pytest.mark.usefixtures("nginx_or_skip")
async def test_nginx_stream_moves_an_srt_caller_off_a_dead_node(tmp_path: Path, media_cache: MediaCache) -> None:
    clip = media_cache.clip(LOOP_CLIP_TS)
    receivers = [
        Receiver(tmp_path / f"{name}.ts", srt=True, port=free_port(socket.SOCK_DGRAM), key=SRT_KEY, watch_frames=True)
        for name in ("a", "b")
    ]
    for receiver in receivers:
        await receiver.start()
    nginx = NginxStream(tmp_path / "nginx", [Backend(f"n{i}", r.port, 0) for i, r in enumerate(receivers)])
    await asyncio.to_thread(nginx.start)
    url = f"srt://127.0.0.1:{nginx.srt_port}?mode=caller&latency=120000&passphrase={SRT_KEY}"
    try:
        async with ReconnectingPublisher(clip, url) as publisher:
            await wait_for(
                lambda: _true(any(r.frame_times for r in receivers)), 15, f"a frame at a node: {publisher.output}"
            )
            first = next(r for r in receivers if r.frame_times)
            second = next(r for r in receivers if r is not first)
            first.kill()
            killed_at = time.monotonic()
            arrived = await second.first_frame(20)
            # The caller notices the dead peer only at libsrt's peer idle timeout (5 s), then reconnects;
            # nginx sends the new session elsewhere once the dead node answered ICMP port unreachable.
            assert arrived - killed_at < 12.0, publisher.output
    finally:
        await asyncio.to_thread(nginx.stop)
        for receiver in receivers:
            receiver.kill()
            await receiver.close()


async def _true(value: T) -> T:
    """`wait_for` polls a coroutine: a value already at hand, as one."""
    return value
