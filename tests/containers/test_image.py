"""The project's image, run as a user runs it: `podman run` with a volume and published ports.

It answers /healthz on the published port; it puts its generated API key in the volume and not in its log;
an encoder on the host publishes to the published RTMP port and a destination on the host receives the very
packets; and `podman stop` is a clean shutdown: the push ends its destination's stream properly, the relay
exits 0 within its stop timeout.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.containers.podman import Podman, Steps
from tests.support import (
    Clip,
    MediaCache,
    Publisher,
    Receiver,
    ffmpeg_publish_argv,
    free_port,
    http,
    md5s,
    pattern_publish_argv,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

CLIP = Clip(seconds=4.0, size="640x360", rate=30, gop=30, fixed_gop=True, bframes=0, zerolatency=True)
STOP_TIMEOUT_SECONDS = 20
"""`podman stop --time`: SIGTERM, then SIGKILL after this long. The relay must be out well before."""


class Container:
    """One `podman run` of the relay image, its API through the published port, its log."""

    def __init__(self, podman: Podman, image: str, name: str) -> None:
        self.podman = podman
        self.image = image
        self.name = name
        self.http_port = free_port()
        self.rtmp_port = free_port()
        self.srt_port = free_port(socket.SOCK_DGRAM)
        self.key = ""

    async def podman_run(self, *args: str, limit_seconds: float = 60.0) -> str:
        return await asyncio.to_thread(self.podman.run, *args, timeout=limit_seconds)

    async def start(self) -> None:
        await self.podman_run(
            "run",
            "--detach",
            "--name",
            self.name,
            "--volume",
            f"{self.name}-data:/data",
            "--publish",
            f"127.0.0.1:{self.http_port}:8080",
            "--publish",
            f"127.0.0.1:{self.rtmp_port}:1935",
            "--publish",
            f"127.0.0.1:{self.srt_port}:5001/udp",
            self.image,
        )

    async def call(self, method: str, path: str, body: Any = None, key: str | None = None) -> Any:
        result = await asyncio.to_thread(
            http, method, f"http://127.0.0.1:{self.http_port}{path}", body, key=key or self.key, timeout=5
        )
        assert result.status in (200, 201), f"{method} {path}: {result.status} {result.body}"
        return result.body

    async def healthy(self) -> bool:
        try:
            result = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{self.http_port}/healthz", key=None)
        except OSError:
            return False
        return result.status == 200

    async def log(self) -> str:
        return await asyncio.to_thread(self.podman.logs, self.name)

    def publish_url(self, push_url: str) -> str:
        """The stream's push URL as the relay announces it (port 1935), on the port published on the host."""
        parts = urlsplit(push_url)
        return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.rtmp_port}"))

    async def wait_state(self, restream_id: int, state: str, within: float) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            restream: dict[str, Any] = await self.call("GET", f"/streaming/restreams/{restream_id}")
            return restream if restream["status"]["state"] == state else None

        return await wait_for(reached, within, f"restream {restream_id} {state}", every=0.25)


async def test_the_image_serves_pushes_and_stops_cleanly(
    podman: Podman, relay_image: str, steps: Steps, media_cache: MediaCache, tmp_path: Path
) -> None:
    clip = media_cache.clip(CLIP)
    relay = Container(podman, relay_image, f"relay-image-{os.getpid()}")
    secrets: list[str] = []
    with steps.timed("scenario 1: podman run, publish, receive, podman stop"):
        await relay.start()
        try:
            await wait_for(relay.healthy, 30, "/healthz on the published port")
            relay.key = (await relay.podman_run("exec", relay.name, "cat", "/data/admin-api-key")).strip()
            secrets.append(relay.key)
            assert "API key       in /data/admin-api-key (not printed" in await relay.log()

            # The host's side of the container network: where the relay in the container reaches the host.
            gateway = await asyncio.to_thread(podman.gateway)

            # An encoder on the host, a destination on the host: every video packet arrives unchanged.
            stream = await relay.call("POST", "/streaming/streams", {"name": "in-a-container"})
            secrets.append(stream["token"])
            async with Receiver(tmp_path / "received.flv", host=gateway, key="container-dest-1") as receiver:
                secrets.append(receiver.key)
                restream = await relay.call(
                    "POST", "/streaming/restreams", {"restream": {"stream_id": stream["id"], "uri": receiver.uri()}}
                )
                async with Publisher(ffmpeg_publish_argv(clip, relay.publish_url(stream["push_url"]))) as publisher:
                    await relay.wait_state(restream["id"], "running", within=15)
                    code, output = await publisher.wait(within=CLIP.seconds + 20)
                    assert code == 0, output
                await receiver.ends_cleanly()
                await relay.wait_state(restream["id"], "idle", within=10)
                got, want = receiver.frames(), md5s(clip)
                # Every packet arrives unchanged, in order. The very last one may be missing: once in four
                # loaded CI runs (never on loopback, where tests/e2e requires all) the encoder's tail did not
                # cross podman's port forwarding before the publisher closed; not pinned down.
                assert len(want) - 1 <= len(got) <= len(want), f"{len(got)} of {len(want)} video packets"
                assert got == want[: len(got)], "the destination's video differs from what the encoder sent"

            # A live push when the container is stopped: the relay ends it properly and exits 0.
            live = await relay.call("POST", "/streaming/streams", {"name": "live-at-stop"})
            secrets.append(live["token"])
            async with Receiver(tmp_path / "at-stop.flv", host=gateway, key="container-dest-2") as receiver:
                secrets.append(receiver.key)
                restream = await relay.call(
                    "POST", "/streaming/restreams", {"restream": {"stream_id": live["id"], "uri": receiver.uri()}}
                )
                async with Publisher(pattern_publish_argv(relay.publish_url(live["push_url"]), 60)):
                    await relay.wait_state(restream["id"], "running", within=15)
                    pushes = await ffmpeg_pids(podman, relay.name)
                    assert len(pushes) == 1, pushes
                    started = time.monotonic()
                    await relay.podman_run("stop", "--time", str(STOP_TIMEOUT_SECONDS), relay.name, limit_seconds=60)
                    stopped_in = time.monotonic() - started
                    exit_code = await relay.podman_run("inspect", relay.name, "--format", "{{.State.ExitCode}}")
                    assert exit_code.strip() == "0"
                    assert stopped_in < 12, f"podman stop took {stopped_in:.1f} s"
                    await receiver.ends_cleanly()
                    assert receiver.frames(), "the destination received nothing before the stop"

            log = await relay.log()
            assert re.search(rf"restream {restream['id']} \(.*\): ffmpeg exited with", log), log[-2000:]
            assert "did not stop within" not in log and "forced stop" not in log, log[-2000:]
            leaked = [index for index, secret in enumerate(secrets) if secret in log]
            assert not leaked, f"secrets #{leaked} (0: API key, then tokens and destination keys) in the log"
        finally:
            await asyncio.to_thread(podman.run, "rm", "--force", "--time", "0", relay.name, check=False)


async def ffmpeg_pids(podman: Podman, container: str) -> list[str]:
    """The host pids of the ffmpeg processes running in `container`."""
    table = await asyncio.to_thread(podman.run, "top", container, "hpid", "args")
    return [line.split()[0] for line in table.splitlines()[1:] if "ffmpeg" in line]
