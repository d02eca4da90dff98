"""The systems under test: the relay (a real `restream-relay serve` subprocess, destinations through its
API) and nginx-rtmp (`application in { live on; push ...; }`), both on 127.0.0.1 and both reaped on stop."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tests.support import RelayProcess, free_port, threads_named

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
NGINX_RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")


def nginx_available() -> str | None:
    """None if nginx-rtmp can run here, else why not."""
    if not Path(NGINX).exists():
        return "nginx is not installed (make bench installs it as root: scripts/system-deps.sh bench)"
    if not NGINX_RTMP_MODULE.exists():
        return f"{NGINX_RTMP_MODULE} missing (apt-get install libnginx-mod-rtmp)"
    return None


class System(Protocol):
    name: str

    @property
    def ingest_url(self) -> str: ...

    @property
    def root_pid(self) -> int: ...

    async def start(self, destinations: Sequence[str]) -> None: ...

    async def add_destination(self, uri: str) -> bool:
        """Add a destination while live; False if the system cannot."""
        ...

    async def stop(self) -> None: ...


def relay_settings_env(
    push_ffmpeg: str | None = None, event_loop: str | None = None, merge_interval_ms: int | None = None
) -> dict[str, str]:
    """The relay's environment for the settings a bench may set (`--push-ffmpeg`, `--event-loop`,
    `--merge-interval-ms`): only those given, in that order; none given is the relay's defaults."""
    env: dict[str, str] = {}
    if push_ffmpeg:
        env["RELAY_PUSH_FFMPEG"] = push_ffmpeg
    if event_loop:
        env["RELAY_EVENT_LOOP"] = event_loop
    if merge_interval_ms is not None:
        env["RELAY_MERGE_INTERVAL_MS"] = str(merge_interval_ms)
    return env


SRT_PARKED_WITHIN_S = 30.0
"""How long the benches wait, by default, for a relay's idle SRT listener to park (`wait_srt_parked`)."""


class RelaySystem:
    """The relay under test; `ffmpeg` overrides the pushes' binary (a flag-variant wrapper)."""

    name = "relay"

    def __init__(
        self,
        workdir: Path,
        *,
        ffmpeg: str | None = None,
        env: dict[str, str] | None = None,
        checkout: Path | None = None,
    ) -> None:
        self.workdir = workdir
        env = {"RELAY_LOG_LEVEL": "INFO", **(env or {})}
        if ffmpeg:
            env["RELAY_FFMPEG"] = ffmpeg
        self.process = RelayProcess(workdir / "data", env_extra=env)
        if checkout is not None:  # another checkout's relay (bench.relay_ab)
            self.process.checkout = checkout
        self._stream: dict[str, object] = {}

    @property
    def ingest_url(self) -> str:
        return str(self._stream["push_url"])

    @property
    def srt_ingest_url(self) -> str:
        """The SRT push URL with the streamid's `#` escaped (ffmpeg URL-decodes the streamid option)."""
        return str(self._stream["push_url_srt"]).replace("#", "%23")

    @property
    def root_pid(self) -> int:
        assert self.process.process is not None
        return self.process.process.pid

    async def start(self, destinations: Sequence[str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(self.process.start)
        created = await asyncio.to_thread(self.process.api, "POST", "/streaming/streams", {"name": "bench"})
        if created.status != 201 and created.status != 200:
            raise RuntimeError(f"stream not created: {created.status} {created.body}")
        self._stream = created.body
        for uri in destinations:
            if not await self.add_destination(uri):
                raise RuntimeError(f"restream not created for {uri}")

    async def wait_srt_parked(self, within: float) -> float | None:
        """Seconds until the relay's SRT ingest listener has parked, None if not within `within`.

        Until it parks (10 s with no caller), libsrt's receiver and sender threads poll the SRT port ~100
        times a second, ~0.3 CPU s/min of the relay process, and libsrt lets them go ~5 s after the park.
        A relay that has run a while pays none of it while no SRT publisher is there; a measurement window
        that starts in a relay's first 15 s, as every scenario's did, counted it in the relay's own CPU."""
        started = time.monotonic()
        while threads_named(self.root_pid, "SRT:RcvQ", "SRT:SndQ"):  # libsrt's receiver and sender
            if time.monotonic() - started >= within:
                return None
            await asyncio.sleep(0.2)
        return time.monotonic() - started

    async def add_stream(self, name: str, destinations: Sequence[str]) -> str:
        """Another stream, with a restream to each of `destinations`: its RTMP push URL (a relay with several
        publishers, `bench.relay_ab --streams`)."""
        created = await asyncio.to_thread(self.process.api, "POST", "/streaming/streams", {"name": name})
        if created.status != 201 and created.status != 200:
            raise RuntimeError(f"stream not created: {created.status} {created.body}")
        for uri in destinations:
            if not await self.add_destination(uri, stream_id=int(created.body["id"])):
                raise RuntimeError(f"restream not created for {uri}")
        return str(created.body["push_url"])

    async def add_destination(self, uri: str, *, stream_id: int | None = None) -> bool:
        """A restream to `uri` of the bench's stream (or of `stream_id`)."""
        stream = self._stream["id"] if stream_id is None else stream_id
        body = {"restream": {"name": uri.rsplit("/", 1)[-1][:40], "stream_id": stream, "uri": uri}}
        result = await asyncio.to_thread(self.process.api, "POST", "/streaming/restreams", body)
        return result.status in (200, 201)

    async def stop(self) -> None:
        await asyncio.to_thread(self.process.stop)

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.process.log().splitlines()[-lines:])


class NginxSystem:
    """nginx-rtmp with one `push` per destination (its push_reconnect left at the default 3 s)."""

    name = "nginx-rtmp"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def ingest_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.port}/in/src"

    @property
    def root_pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    def config(self, destinations: Sequence[str]) -> str:
        pushes = "\n".join(f"            push {uri};" for uri in destinations)
        return f"""load_module {NGINX_RTMP_MODULE};
daemon off;
master_process on;
worker_processes 1;
error_log {self.workdir}/error.log warn;
pid {self.workdir}/nginx.pid;
events {{ worker_connections 1024; }}
rtmp {{
    server {{
        listen 127.0.0.1:{self.port};
        chunk_size 4096;
        application in {{
            live on;
{pushes}
        }}
    }}
}}
"""

    async def start(self, destinations: Sequence[str]) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "nginx.conf"
        conf.write_text(self.config(destinations))
        log = (self.workdir / "stderr.log").open("ab")
        argv = [NGINX, "-p", str(self.workdir), "-c", str(conf)]
        # Popen returns at once (fork+exec); nginx is then polled without blocking the loop.
        self._process = subprocess.Popen(  # noqa: ASYNC220
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"nginx exited ({shlex.join(argv)}): {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("nginx did not listen within 10 s")

    async def add_destination(self, uri: str) -> bool:
        return False  # nginx-rtmp's pushes are static configuration: no API to add one to a live stream

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await asyncio.to_thread(process.wait, 5)
        with contextlib.suppress(ProcessLookupError):  # workers left behind, if any
            os.killpg(process.pid, signal.SIGKILL)

    def log_tail(self, lines: int = 40) -> str:
        path = self.workdir / "error.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""
