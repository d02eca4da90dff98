"""Many streams through one real relay process: publishers, destinations and the API, for the soak and the
capacity bench.

A `Fleet` starts `restream-relay serve` (tests/support/relay_process.py), defines `streams` streams with
`destinations` restreams each (one receiver per destination, on its own port, so that one can be killed
alone), and runs one looping `ffmpeg -re -stream_loop -1 -c copy` publisher per stream (RTMP, or SRT for
the streams listed in `srt_publishers`). Receivers keep no packets: a `Watch` stands in for their track's
list and counts bytes and frames, and checks that each elementary stream's timestamps never go back
within one connection (a reconnection may start again: a new push is a new stream for the destination).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, SupportsIndex

import aiohttp

from bench.procstat import tree_pids
from bench.receivers import Arrival, RtmpReceiver, SrtReceiver, Track
from bench.systems import NginxSystem
from relay.media.packets import MediaKind
from tests.support import FFMPEG, RelayProcess, free_port
from tests.support.relay_process import ADMIN_KEY


@dataclass(frozen=True, slots=True)
class Violation:
    """A timestamp that went back at a destination, within one connection."""

    destination: str
    t: float
    kind: str
    previous_ms: int
    ts_ms: int
    connection: int


class Watch(list[Arrival]):
    """Replaces a receiver track's `arrivals`: nothing is kept (a soak would hold millions), every packet is
    counted and its timestamp checked against the previous one of its kind on the same connection."""

    MAX_VIOLATIONS_KEPT = 20

    def __init__(self, track: Track) -> None:
        super().__init__()
        self.track = track
        self.bytes = 0
        self.video_frames = 0
        self.last_media_t = 0.0
        self.connection = -1
        self.connections_seen = 0
        self.violations: list[Violation] = []
        self.violation_count = 0
        self._last_ts: dict[MediaKind, int] = {}

    def append(self, a: Arrival) -> None:
        connection = len(self.track.publishes)
        if connection != self.connection:
            self.connection = connection
            self.connections_seen += 1
            self._last_ts.clear()
        self.bytes += a.size_bytes
        if a.config:
            return
        self.last_media_t = a.t
        if a.kind is MediaKind.VIDEO:
            self.video_frames += 1
        if a.ts_ms < 0:
            return  # a PES without a timestamp
        previous = self._last_ts.get(a.kind)
        if previous is not None and a.ts_ms < previous:
            self.violation_count += 1
            if len(self.violations) < self.MAX_VIOLATIONS_KEPT:
                self.violations.append(
                    Violation(self.track.name, a.t, a.kind.name.lower(), previous, a.ts_ms, connection)
                )
        self._last_ts[a.kind] = a.ts_ms

    def extend(self, values: Iterable[Arrival]) -> None:
        for a in values:
            self.append(a)

    def clear(self) -> None:  # pragma: no cover - nothing keeps packets
        pass

    def __setitem__(self, index: Any, value: Any) -> None:  # pragma: no cover
        raise TypeError("a Watch keeps no packets")

    def insert(self, index: SupportsIndex, value: Arrival) -> None:  # pragma: no cover
        raise TypeError("a Watch keeps no packets")


Receiver = RtmpReceiver | SrtReceiver


class NginxApps(NginxSystem):
    """nginx-rtmp with an application per stream (`in0`, `in1`, ...), each with a `push` per destination."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        self.apps: list[list[str]] = []

    def config(self, destinations: Sequence[str]) -> str:
        one = super().config([])
        head, _, tail = one.partition("        application in {")
        apps = []
        for s, urls in enumerate(self.apps):
            pushes = "".join(f"            push {url};\n" for url in urls)
            apps.append(f"        application in{s} {{\n            live on;\n{pushes}        }}\n")
        return head + "".join(apps) + tail.split("        }\n", 1)[1]


@dataclass
class Destination:
    stream: int
    index: int
    receiver: Receiver
    restream_id: int = 0
    keep_packets: bool = False
    """Keep every arrival in the track (the capacity bench matches them with the direct receiver's); else
    a `Watch` counts and checks them and keeps none."""
    watch: Watch = field(init=False)

    def __post_init__(self) -> None:
        self.watch = Watch(self.receiver.track)
        if not self.keep_packets:
            self.receiver.track.arrivals = self.watch

    @property
    def name(self) -> str:
        return self.receiver.track.name

    @property
    def protocol(self) -> str:
        return "srt" if isinstance(self.receiver, SrtReceiver) else "rtmp"

    def url(self) -> str:
        return self.receiver.url()


@dataclass
class Publisher:
    stream: int
    url: str
    protocol: str
    process: asyncio.subprocess.Process | None = None
    starts: int = 0
    reconnects: int = 0
    """Starts after an exit the fleet did not cause (refused, or the connection failed): an encoder retries."""


@dataclass
class Timings:
    """Latencies of API calls, by name, in milliseconds."""

    values: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)

    def add(self, name: str, ms: float) -> None:
        self.values.setdefault(name, []).append(ms)

    def error(self, name: str) -> None:
        self.errors[name] = self.errors.get(name, 0) + 1

    def summary(self) -> dict[str, dict[str, float | int | None]]:
        return {name: latency_summary(v) for name, v in sorted(self.values.items())}


def percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def latency_summary(values: Sequence[float]) -> dict[str, float | int | None]:
    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 1)

    return {
        "count": len(values),
        "p50": r(percentile(values, 0.5)),
        "p99": r(percentile(values, 0.99)),
        "max": r(max(values, default=None)),
        "mean": r(statistics.fmean(values)) if values else None,
    }


class Fleet:
    """The relay subprocess, its streams and restreams, the publishers and the receivers; `close()` reaps
    every process it started."""

    def __init__(
        self,
        workdir: Path,
        clip: Path,
        *,
        streams: int,
        destinations: int,
        srt_publishers: Sequence[int] = (),
        srt_destinations: Sequence[tuple[int, int]] = (),
        srt_latency_ms: int = 120,
        env: dict[str, str] | None = None,
        system: str = "relay",
        direct: bool = False,
    ) -> None:
        """`system`: "relay" (its API defines the restreams) or "nginx" (nginx-rtmp, an application per
        stream with a `push` per destination; RTMP only). `direct`: each publisher also sends the same
        packets to a receiver of its own (a tee), and destinations keep their packets, to measure the
        system's added delay."""
        self.workdir = workdir
        self.clip = clip
        self.srt_latency_ms = srt_latency_ms
        self.system = system
        self.nginx = NginxApps(workdir / "nginx") if system == "nginx" else None
        self.directs = [RtmpReceiver(f"direct{s}", free_port()) for s in range(streams)] if direct else []
        self.relay = RelayProcess(
            workdir / "data",
            env_extra={
                "RELAY_LOG_LEVEL": "INFO",
                "RELAY_MAX_PUSHES": "10000",
                "RELAY_MAX_PUSHES_PER_CLIENT": "10000",
                "RELAY_MAX_STREAMS_PER_CLIENT": "10000",
                "RELAY_MAX_RESTREAMS_PER_STREAM": "1000",
                # Every publisher of the bench comes from 127.0.0.1 (as behind a balancer).
                "RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS": "10000",
                "RELAY_RTMP_MAX_CONNECTIONS": "10000",
                "RELAY_RTMP_MAX_UNAUTHENTICATED_CONNECTIONS": "10000",
                **(env or {}),
            },
        )
        self.destinations: list[Destination] = []
        for s in range(streams):
            for d in range(destinations):
                name = f"s{s}d{d}"
                receiver: Receiver = (
                    SrtReceiver(name, free_port(), latency_ms=20, track_connections=True)
                    if (s, d) in srt_destinations
                    else RtmpReceiver(name, free_port())
                )
                self.destinations.append(Destination(s, d, receiver, keep_packets=direct))
        self.stream_ids: list[int] = []
        self.publishers: list[Publisher] = []
        self._srt_publishers = set(srt_publishers)
        self.streams = streams
        self.http: aiohttp.ClientSession | None = None
        self.reconnect_seconds = 1.0
        """How long a publisher whose ffmpeg exited on its own waits before it connects again (OBS and
        hardware encoders retry; ffmpeg alone would stay away for the rest of the run)."""
        self._closing = False
        self._watchers: set[asyncio.Task[None]] = set()
        self.seen_children: dict[int, str] = {}
        """Every process of the relay's tree seen while running (pid -> name): what must be gone after stop."""

    # -- lifecycle -----------------------------------------------------------------------------------

    @property
    def root_pid(self) -> int | None:
        """The system's top process: the relay, or nginx's master."""
        if self.nginx is not None:
            return self.nginx.root_pid if self.nginx._process is not None else None
        return self.relay.process.pid if self.relay.process is not None else None

    async def start(self) -> None:
        await asyncio.to_thread(self.workdir.mkdir, parents=True, exist_ok=True)
        for r in [*self.directs, *(d.receiver for d in self.destinations)]:
            await start_receiver(r)
        if self.nginx is not None:
            await self._start_nginx(self.nginx)
        else:
            await self._start_relay()
        for p in self.publishers:
            await self.start_publisher(p)

    async def _start_nginx(self, nginx: NginxApps) -> None:
        nginx.apps = [[d.url() for d in self.destinations if d.stream == s] for s in range(self.streams)]
        await nginx.start([])
        for s in range(self.streams):
            self.publishers.append(Publisher(s, f"rtmp://127.0.0.1:{nginx.port}/in{s}/src", "rtmp"))

    async def _start_relay(self) -> None:
        await asyncio.to_thread(self.relay.start)
        self.http = aiohttp.ClientSession(
            base_url=self.relay.base_url,
            headers={"Authorization": f"APIKey {ADMIN_KEY}"},
            timeout=aiohttp.ClientTimeout(total=30),
        )
        for s in range(self.streams):
            body = await self.call("POST", "/streaming/streams", {"name": f"soak{s}"})
            self.stream_ids.append(int(body["id"]))
            if s in self._srt_publishers:
                url = str(body["push_url_srt"]).replace("#", "%23") + f"&latency={self.srt_latency_ms * 1000}"
                self.publishers.append(Publisher(s, url, "srt"))
            else:
                self.publishers.append(Publisher(s, str(body["push_url"]), "rtmp"))
        for d in self.destinations:
            body = await self.call(
                "POST",
                "/streaming/restreams",
                {"restream": {"name": d.name, "stream_id": self.stream_ids[d.stream], "uri": d.url()}},
            )
            d.restream_id = int(body["id"])

    async def start_publisher(self, p: Publisher) -> None:
        container = "mpegts" if p.protocol == "srt" else "flv"
        output = [container, p.url]
        if self.directs:
            direct = self.directs[p.stream].url("live")
            output = ["tee", f"[f={container}:onfail=ignore]{p.url}|[f=flv:onfail=ignore]{direct}"]
        log = await asyncio.to_thread((self.workdir / f"publisher{p.stream}.log").open, "ab")
        p.process = await asyncio.create_subprocess_exec(
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(self.clip),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            *output,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        p.starts += 1
        watcher = asyncio.create_task(self._reconnect_when_gone(p, p.process))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _reconnect_when_gone(self, p: Publisher, process: asyncio.subprocess.Process) -> None:
        """Start `p` again when `process` exits while it should publish: e.g. a returning SRT encoder
        refused as long as the relay still holds its dead predecessor (until the takeover rule applies)."""
        await process.wait()
        if self._closing or p.process is not process:
            return  # stopped on purpose (kill_publisher, close)
        await asyncio.sleep(self.reconnect_seconds)
        if self._closing or p.process is not process:
            return
        p.reconnects += 1
        await self.start_publisher(p)

    async def kill_publisher(self, p: Publisher) -> None:
        """SIGKILL: the connection is reset, as when an encoder crashes."""
        process, p.process = p.process, None
        if process is None:
            return
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        await process.wait()

    def note_children(self) -> None:
        root = self.root_pid
        if root is None:
            return
        for pid in tree_pids(root):
            if pid == root:
                continue
            with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
                self.seen_children[pid] = f.read().split("(", 1)[1].rsplit(")", 1)[0]

    async def close(self) -> dict[str, Any]:
        """Stops everything; returns what was left of the relay's children after its stop (and kills them)."""
        self._closing = True
        for p in self.publishers:
            await self.kill_publisher(p)
        for watcher in list(self._watchers):
            watcher.cancel()
        if self.http is not None:
            await self.http.close()
            self.http = None
        self.note_children()
        if self.nginx is not None:
            await self.nginx.stop()
            code = None
        else:
            code = await asyncio.to_thread(self.relay.stop)
        orphans = alive_with_names(self.seen_children)
        for pid, _ in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for r in [*self.directs, *(d.receiver for d in self.destinations)]:
            with contextlib.suppress(Exception):
                await r.close()
        return {
            "relay_exit_code": code,
            "children_seen": len(self.seen_children),
            "orphans": [{"pid": pid, "name": name} for pid, name in orphans],
        }

    # -- API -----------------------------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None, *, timings: Timings | None = None) -> Any:
        assert self.http is not None
        started = time.perf_counter()
        async with self.http.request(method, path, json=body) as response:
            payload = await response.read()
            status = response.status
        if timings is not None:
            timings.add(f"{method} {timing_name(path)}", (time.perf_counter() - started) * 1000)
        if status >= 400:
            raise RuntimeError(f"{method} {path}: {status} {payload[:200]!r}")
        return await asyncio.to_thread(_json, payload) if payload else None

    async def restreams(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        page = 1
        while True:
            items = await self.call("GET", f"/streaming/restreams?page={page}")
            out.extend(items)
            if len(items) < 25:
                return out
            page += 1

    async def metric(self, name: str) -> float | None:
        return (await self.metrics(name))[name]

    async def metrics(self, *names: str) -> dict[str, float | None]:
        """The first value of each named series in one scrape of /metrics (None when it is absent)."""
        assert self.http is not None
        async with self.http.get("/metrics") as response:
            text = await response.text()
        found: dict[str, float | None] = dict.fromkeys(names)
        for line in text.splitlines():
            for name in names:
                if found[name] is None and (line.startswith(name + " ") or line.startswith(name + "{")):
                    found[name] = float(line.rsplit(" ", 1)[1])
        return found


async def wait_until(check: Callable[[], bool], deadline: float, step_seconds: float = 0.05) -> bool:
    """Poll `check` until it holds or time.monotonic() passes `deadline`."""
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(step_seconds)
    return check()


async def start_receiver(receiver: Receiver, attempts: int = 5) -> None:
    """Start a receiver on its port, or on another one if something took that port since it was picked
    (with a hundred receivers, an ephemeral port of someone's connection sometimes lands on one)."""
    for attempt in range(attempts):
        try:
            await receiver.start()
            return
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or attempt == attempts - 1:
                raise
            receiver.port = free_port()


def _json(payload: bytes) -> Any:
    import json

    return json.loads(payload)


def timing_name(path: str) -> str:
    """The route, not the ids: `/streaming/restreams/12` -> `/streaming/restreams/{id}`."""
    base = path.split("?", 1)[0]
    return "/".join("{id}" if part.isdigit() else part for part in base.split("/"))


def alive_with_names(pids: dict[int, str]) -> list[tuple[int, str]]:
    alive = []
    for pid, name in pids.items():
        try:
            with open(f"/proc/{pid}/stat") as f:
                now = f.read().split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
        if now == name:
            alive.append((pid, name))
    return alive


# -- the relay process from /proc --------------------------------------------------------------------


def relay_point(pid: int) -> dict[str, int]:
    """RSS, PSS, open fds and threads of the relay process itself; the number and memory of its ffmpegs."""
    out = {"rss_bytes": 0, "pss_bytes": 0, "fds": 0, "threads": 0, "ffmpeg_children": 0, "children_pss_bytes": 0}
    with contextlib.suppress(OSError):
        out["fds"] = len(os.listdir(f"/proc/{pid}/fd"))
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                out["rss_bytes"] = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    out["pss_bytes"] = pss_bytes(pid)
    for child in tree_pids(pid):
        if child == pid:
            continue
        with contextlib.suppress(OSError), open(f"/proc/{child}/stat") as f:
            if "ffmpeg" in f.read().split("(", 1)[1].rsplit(")", 1)[0]:
                out["ffmpeg_children"] += 1
                out["children_pss_bytes"] += pss_bytes(child)
    return out


def pss_bytes(pid: int) -> int:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/smaps_rollup", "rb") as f:
        for line in f:
            if line.startswith(b"Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def slope_per_hour(points: Sequence[tuple[float, float]]) -> float | None:
    """Least-squares slope of (t seconds, value) in value per hour."""
    if len(points) < 3:
        return None
    ts = [p[0] for p in points]
    vs = [p[1] for p in points]
    mt, mv = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - mt) ** 2 for t in ts)
    if den == 0:
        return None
    return sum((t - mt) * (v - mv) for t, v in zip(ts, vs, strict=True)) / den * 3600.0
