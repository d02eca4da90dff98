"""`make bench`: the relay beside nginx-rtmp, one 1080p30 ~4.5 Mbit/s H.264+AAC stream to N destinations.

    .venv/bin/python -m bench.relay_bench [--rtmp-n 1,4,16] [--srt-n 1,4] [--ingest rtmp,srt] [--no-nginx]

One publisher (`ffmpeg -re -stream_loop -1 -c copy`, tee muxer) sends the same packets to the system under
test and to a *direct* receiver; every receiver stamps each packet on arrival, so the relay's added delay
is the arrival at a relay-fed receiver minus the arrival of the same packet (same payload digest) at the
direct receiver. Results: a markdown table on stdout and in bench-results/bench.md, raw JSON beside it.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.host_wake import measure as host_wake_us
from bench.media import Reference, build_reference, encode_clip
from bench.procstat import load_samples, machine_busy_share, tree_pids
from bench.receivers import Arrival, RtmpReceiver, SrtReceiver, Track
from bench.systems import SRT_PARKED_WITHIN_S, NginxSystem, RelaySystem, System, nginx_available
from tests.support import FFMPEG, ROOT, free_port

RESULTS = ROOT / "bench-results"

TARGETS = {
    "startup_behind_ms": 150.0,
    "delay_median_ms": 15.0,
    "delay_p95_ms": 40.0,
    "cpu_s_per_min_per_dest": 0.5,
    "pss_mb_per_dest": 15.0,
    "live_add_s": 0.5,
    "recovery_s": 1.0,
    "others_gap_excess_ms": 100.0,
}


@dataclass(frozen=True)
class Variant:
    """Extra ffmpeg flags for the relay's pushes, injected by a wrapper given as RELAY_FFMPEG."""

    label: str
    input_flags: tuple[str, ...] = ()
    output_flags: tuple[str, ...] = ()
    ffmpeg: str | None = None
    """Another ffmpeg binary for the pushes (None: imageio-ffmpeg's, the relay's default)."""
    env: tuple[tuple[str, str], ...] = ()
    """Relay settings of the variant (environment), e.g. RELAY_SRT_PUSH."""


BASELINE = Variant("baseline")
TCP_NODELAY = Variant("-tcp_nodelay 1", output_flags=("-tcp_nodelay", "1"))
FLUSH_PACKETS = Variant("-flush_packets 1", output_flags=("-flush_packets", "1"))
DEBIAN_FFMPEG = Variant("Debian /usr/bin/ffmpeg (5.1, shared libs)", ffmpeg="/usr/bin/ffmpeg")
MERGED_IO = Variant("RELAY_MERGE_INTERVAL_MS=66", env=(("RELAY_MERGE_INTERVAL_MS", "66"),))
"""An RTMP publisher read and each push written at most every 66 ms (two frames at 30 fps), for that much delay."""
SRT_PUSH_FFMPEG = Variant("RELAY_SRT_PUSH=ffmpeg", env=(("RELAY_SRT_PUSH", "ffmpeg"),))
"""SRT destinations through ffmpeg's own SRT output instead of the relay's caller (--srt-push-compare)."""


def lean_ffmpeg(version: str) -> Path:
    """Where `make lean-ffmpeg LEAN_FFMPEG_VERSION=<version>` installs its build."""
    return ROOT / "build" / "lean-ffmpeg" / version / "bin" / "ffmpeg"


LEAN_FFMPEG = lean_ffmpeg("7.1.3")
LEAN_PUSHES = Variant("lean ffmpeg 7.1.3 pushes (make lean-ffmpeg)", env=(("RELAY_PUSH_FFMPEG", str(LEAN_FFMPEG)),))
"""The pushes on scripts/lean-ffmpeg.sh's build (RELAY_PUSH_FFMPEG); run only once `make lean-ffmpeg` made it."""
LEAN_FFMPEG_51 = lean_ffmpeg("5.1.8")
LEAN_PUSHES_51 = Variant("lean ffmpeg 5.1.8 pushes", env=(("RELAY_PUSH_FFMPEG", str(LEAN_FFMPEG_51)),))
"""`make lean-ffmpeg LEAN_FFMPEG_VERSION=5.1.8`'s build: demuxing and muxing in one thread, where 7.1 hands
each packet between threads; run beside 7.1.3's, each scenario in turn, once both are built."""
LEAN_BUILDS = tuple(v for path, v in ((LEAN_FFMPEG, LEAN_PUSHES), (LEAN_FFMPEG_51, LEAN_PUSHES_51)) if path.exists())
MERGED_LEAN = Variant("RELAY_MERGE_INTERVAL_MS=66 and lean ffmpeg 7.1.3 pushes", env=(*MERGED_IO.env, *LEAN_PUSHES.env))
"""Both at once: fewer reads and writes upstream of each push, and each push's RTMP messages in one send each."""
UVLOOP = Variant("RELAY_EVENT_LOOP=uvloop", env=(("RELAY_EVENT_LOOP", "uvloop"),))
"""The node's event loops on uvloop (libuv) instead of asyncio's own."""
ALL_THREE = Variant(
    "all three: RELAY_MERGE_INTERVAL_MS=66, lean ffmpeg 7.1.3 pushes, RELAY_EVENT_LOOP=uvloop",
    env=(*MERGED_LEAN.env, *UVLOOP.env),
)
"""Every setting that lowers the cost at once (fewer reads and writes, lean pushes, libuv's loop)."""
SMALL_PROBE = Variant("-probesize 32k -analyzeduration 0", input_flags=("-probesize", "32768", "-analyzeduration", "0"))
FLAG_RUNS: tuple[tuple[str, int, Variant], ...] = (
    ("rtmp", 4, TCP_NODELAY),
    ("rtmp", 16, TCP_NODELAY),
    ("rtmp", 4, FLUSH_PACKETS),
    ("rtmp", 4, SMALL_PROBE),
    ("rtmp", 16, DEBIAN_FFMPEG),
    ("rtmp", 1, UVLOOP),
    ("rtmp", 16, UVLOOP),
    ("rtmp", 1, MERGED_IO),
    ("rtmp", 16, MERGED_IO),
    ("srt", 4, MERGED_IO),
    ("srt", 4, FLUSH_PACKETS),
    *((proto, n, v) for proto, n in (("rtmp", 16), ("srt", 4)) for v in LEAN_BUILDS),
    *((("rtmp", 16, MERGED_LEAN),) if LEAN_FFMPEG.exists() else ()),
    *((("rtmp", 1, ALL_THREE), ("rtmp", 16, ALL_THREE)) if LEAN_FFMPEG.exists() else ()),
    *((("rtmp", 4, v) for v in LEAN_BUILDS) if len(LEAN_BUILDS) > 1 else ()),
)
"""(protocol, N, variant) runs beside the baseline scenario of the same protocol and N."""


@dataclass(frozen=True)
class Scenario:
    system: str
    protocol: str
    n: int
    variant: Variant = BASELINE
    ingest: str = "rtmp"
    """How the publisher reaches the system (and the direct receiver): "rtmp" (FLV) or "srt" (MPEG-TS)."""

    @property
    def label(self) -> str:
        suffix = "" if self.variant is BASELINE else f" [{self.variant.label}]"
        prefix = "" if self.ingest == "rtmp" else "srt-in "
        return f"{self.system} {prefix}{self.protocol} N={self.n}{suffix}"


@dataclass
class Options:
    window_s: float = 15.0
    warmup_s: float = 2.0
    down_s: float = 2.0
    recovery_timeout_s: float = 12.0
    sample_interval_s: float = 0.5
    clip_seconds: int = 20
    clip_size: str = "1920x1080"
    clip_kbps: int = 4500
    srt_latency_ms: int = 20
    live_add: bool = True
    recovery: bool = True
    profile: bool = False
    """py-spy the relay process (root of the tree) through the steady window: collapsed stacks in the run's
    directory (`profile.txt`, one `stack count` a line) and the top functions in the result's context."""
    srt_parked_within_s: float = SRT_PARKED_WITHIN_S
    """A relay scenario with an RTMP publisher starts it once the relay's SRT listener has parked (libsrt's
    polling threads gone, `RelaySystem.wait_srt_parked`), waiting up to this long (0: not at all): the
    relay measured is then the one that has run a while."""
    publisher_tcp_nodelay: bool = False
    """The RTMP publisher with TCP_NODELAY, as OBS publishes (librtmp sets it); ffmpeg's RTMP output, the
    bench's publisher, leaves Nagle's algorithm on unless told (`-tcp_nodelay`)."""


@dataclass
class Result:
    scenario: str
    system: str
    protocol: str
    n: int
    variant: str
    ok: bool = True
    error: str | None = None
    startup_ms: dict[str, float | None] = field(default_factory=dict)
    startup_behind_ms: dict[str, float | None] = field(default_factory=dict)
    delay_ms: dict[str, float | None] = field(default_factory=dict)
    identical_share: float | None = None
    loss_share: float | None = None
    cpu_s_per_min: float | None = None
    cpu_s_per_min_per_dest: float | None = None
    rss_mb: float | None = None
    pss_mb: float | None = None
    pss_mb_per_dest: float | None = None
    children_pss_mb_per_dest: float | None = None
    processes: int | None = None
    live_add_s: float | None = None
    live_add_note: str | None = None
    recovery_s: float | None = None
    recovery_note: str | None = None
    others_max_gap_ms: float | None = None
    direct_max_gap_ms: float | None = None
    others_gap_excess_ms: float | None = None
    context: dict[str, Any] = field(default_factory=dict)


# -- statistics ------------------------------------------------------------------------------------


def pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "median": _r(pct(values, 0.5)),
        "p95": _r(pct(values, 0.95)),
        "max": _r(max(values, default=None)),
        "count": len(values),
    }


def _r(x: float | None, nd: int = 1) -> float | None:
    return None if x is None else round(x, nd)


def times_by_digest(arrivals: Iterable[Arrival], mapping: dict[bytes, bytes] | None = None) -> dict[bytes, list[float]]:
    out: dict[bytes, list[float]] = {}
    for a in arrivals:
        key = mapping.get(a.digest, a.digest) if mapping is not None else a.digest
        out.setdefault(key, []).append(a.t)
    for times in out.values():
        times.sort()
    return out


def nearest(times: list[float], t: float) -> float | None:
    i = bisect.bisect_left(times, t)
    candidates = [times[j] for j in (i - 1, i) if 0 <= j < len(times)]
    return min(candidates, key=lambda c: abs(c - t), default=None)


def max_gap(arrivals: Iterable[Arrival]) -> float:
    ts = sorted(a.t for a in arrivals)
    return max((b - a for a, b in itertools.pairwise(ts)), default=0.0)


# -- one scenario ----------------------------------------------------------------------------------


def wrapper_script(directory: Path, variant: Variant) -> str | None:
    """A bash wrapper exec'ing the real ffmpeg with the variant's flags before `-i` and before the URL."""
    if variant is BASELINE or not (variant.input_flags or variant.output_flags or variant.ffmpeg):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "ffmpeg-wrapper.sh"
    path.write_text(f"""#!/bin/bash
in_extra=({shlex.join(variant.input_flags)})
out_extra=({shlex.join(variant.output_flags)})
args=(); i=0
for a in "$@"; do
  i=$((i+1))
  [ "$a" = "-i" ] && args+=("${{in_extra[@]}}")
  [ $i -eq $# ] && args+=("${{out_extra[@]}}")
  args+=("$a")
done
exec {shlex.quote(variant.ffmpeg or FFMPEG)} "${{args[@]}}"
""")
    path.chmod(0o755)
    return str(path)


async def wait_until(check: Any, within: float, step: float = 0.01) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if check():
            return True
        await asyncio.sleep(step)
    return bool(check())


def kill_leftovers(pids: Iterable[tuple[int, str]]) -> list[int]:
    """SIGKILL processes we started (recorded by pid and name) that are still alive after a stop."""
    killed = []
    for pid, comm in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                alive_comm = f.read().split("(", 1)[1].rsplit(")", 1)[0]
        except OSError:
            continue
        if alive_comm == comm:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed


def tree_names(root: int) -> list[tuple[int, str]]:
    out = []
    for pid in tree_pids(root):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/stat") as f:
            out.append((pid, f.read().split("(", 1)[1].rsplit(")", 1)[0]))
    return out


async def profile_relay(pid: int, seconds: float, workdir: Path) -> dict[str, float]:
    """Sample the relay process with py-spy for `seconds`; the share of samples per function (self time),
    the 15 largest. Empty if py-spy is missing (pip install py-spy) or fails."""
    out = workdir / "profile.txt"
    try:
        proc = await asyncio.create_subprocess_exec(
            *(str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid), "--format", "raw"),
            *("--rate", "200", "--duration", str(max(1, int(seconds))), "--nonblocking", "-o", str(out)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return {}
    await proc.wait()
    if proc.returncode != 0 or not out.exists():
        return {}
    own: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        leaf = stack.rsplit(";", 1)[-1]
        own[leaf] = own.get(leaf, 0) + int(count)
        total += int(count)
    top = sorted(own.items(), key=lambda kv: -kv[1])[:15]
    return {name: round(count / total, 3) for name, count in top} if total else {}


async def run_scenario(sc: Scenario, clip: Path, ref: Reference, opts: Options, workdir: Path) -> Result:
    result = Result(sc.label, sc.system, sc.protocol, sc.n, sc.variant.label)
    await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
    system: System
    if sc.system == "relay":
        system = RelaySystem(workdir, ffmpeg=wrapper_script(workdir, sc.variant), env=dict(sc.variant.env))
    else:
        system = NginxSystem(workdir)
    # The direct receiver gets what the system gets, over the same protocol: for SRT ingest an SRT
    # listener (srt-live-transmit, TSBPD off) fed by the same tee over SRT, so the added delay is the relay's.
    direct: RtmpReceiver | SrtReceiver
    if sc.ingest == "srt":
        direct = SrtReceiver("direct", free_port(), latency_ms=opts.srt_latency_ms)
    else:
        direct = RtmpReceiver("direct", free_port())
    dests: list[RtmpReceiver | SrtReceiver]
    late: RtmpReceiver | SrtReceiver
    if sc.protocol == "srt":
        dests = [SrtReceiver(f"d{i}", free_port(), latency_ms=opts.srt_latency_ms) for i in range(sc.n)]
        late = SrtReceiver("late", free_port(), latency_ms=opts.srt_latency_ms)
    else:
        dests = [RtmpReceiver(f"d{i}", free_port()) for i in range(sc.n)]
        late = RtmpReceiver("late", free_port())
    publisher: asyncio.subprocess.Process | None = None
    sampler: asyncio.subprocess.Process | None = None
    samples_path = workdir / "samples.jsonl"
    samples_path.unlink(missing_ok=True)
    started: list[tuple[int, str]] = []
    marks: dict[str, float] = {}
    try:
        await direct.start()
        for d in dests:
            await d.start()
        await system.start([d.url() for d in dests])
        if isinstance(system, RelaySystem) and sc.ingest == "rtmp" and opts.srt_parked_within_s > 0:
            parked_after = await system.wait_srt_parked(opts.srt_parked_within_s)
            result.context["srt_parked_after_s"] = round(parked_after, 1) if parked_after is not None else None
        started = tree_names(system.root_pid)
        sampler = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.procstat",
            str(samples_path),
            str(opts.sample_interval_s),
            f"system={system.root_pid}",
            f"bench={os.getpid()}",
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await asyncio.sleep(2 * opts.sample_interval_s)  # an idle sample before the publisher starts
        if isinstance(direct, SrtReceiver):
            assert isinstance(system, RelaySystem)
            latency = f"&latency={opts.srt_latency_ms * 1000}"
            tee = f"[f=mpegts:onfail=ignore]{system.srt_ingest_url}{latency}|[f=mpegts:onfail=ignore]{direct.url()}"
        else:
            slave = "[f=flv:onfail=ignore:tcp_nodelay=1]" if opts.publisher_tcp_nodelay else "[f=flv:onfail=ignore]"
            tee = f"{slave}{system.ingest_url}|{slave}{direct.url('live')}"
        marks["publish"] = time.monotonic()
        publisher = await asyncio.create_subprocess_exec(
            FFMPEG,
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-stream_loop",
            "-1",
            "-i",
            str(clip),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "tee",
            tee,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(workdir / "publisher.log").open("ab"),
            start_new_session=True,
        )
        all_started = await wait_until(lambda: all(d.track.first_video() for d in dests), 15)
        if not all_started:
            result.ok = False
            result.error = (
                f"{sum(1 for d in dests if d.track.first_video())}/{len(dests)} destinations received video within 15 s"
            )
        first = [d.track.first_video() for d in dests]
        marks["window_start"] = max([f for f in first if f] or [time.monotonic()]) + opts.warmup_s
        marks["window_end"] = marks["window_start"] + opts.window_s
        await asyncio.sleep(max(0.0, marks["window_start"] - time.monotonic()))
        host_wake = asyncio.ensure_future(host_wake_us(opts.window_s))  # what a wake-up costs on the host now
        try:
            if opts.profile and sc.system == "relay":
                result.context["profile_top"] = await profile_relay(system.root_pid, opts.window_s, workdir)
            await asyncio.sleep(max(0.0, marks["window_end"] - time.monotonic()))
        except BaseException:
            host_wake.cancel()
            raise
        result.context["host_wake_us"] = await host_wake
        started = sorted(set(started) | set(tree_names(system.root_pid)))

        if opts.live_add:
            await late.start()
            marks["add_call"] = time.monotonic()
            added = await system.add_destination(late.url())
            marks["add_return"] = time.monotonic()
            if added:
                await wait_until(lambda: late.track.first_video(keyframe=True) is not None, 5)
                first_key = late.track.first_video(keyframe=True)
                result.live_add_s = _r(first_key - marks["add_return"], 3) if first_key else None
                result.live_add_note = None if first_key else "no keyframe within 5 s"
            else:
                result.live_add_note = "n/a: no way to add a push to a live stream"
        if opts.recovery and dests:
            victim = dests[0]
            marks["kill"] = time.monotonic()
            await victim.kill()
            await asyncio.sleep(opts.down_s)
            await victim.start()
            marks["listen"] = victim.track.listening_since
            got = await wait_until(
                lambda: victim.track.first_media(marks["listen"]) is not None, opts.recovery_timeout_s
            )
            back = victim.track.first_media(marks["listen"])
            result.recovery_s = _r(back - marks["listen"], 3) if back else None
            result.recovery_note = None if got else f"nothing within {opts.recovery_timeout_s:.0f} s"
            marks["recovered"] = back or time.monotonic()
            await asyncio.sleep(1.5)
            marks["recovery_end"] = time.monotonic()
        started = sorted(set(started) | set(tree_names(system.root_pid)))
    except Exception as exc:
        result.ok = False
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        if publisher is not None and publisher.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                publisher.kill()
            await publisher.wait()
        with contextlib.suppress(Exception):
            await system.stop()
        leftovers = kill_leftovers(started)
        if leftovers:
            result.context["leftover_pids_killed"] = leftovers
        if sampler is not None and sampler.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sampler.kill()
            await sampler.wait()
        for r in [direct, *dests, late]:
            with contextlib.suppress(Exception):
                await r.close()
    if isinstance(system, RelaySystem) and not result.ok:
        result.context["relay_log_tail"] = system.log_tail()
    elif isinstance(system, NginxSystem) and not result.ok:
        result.context["nginx_log_tail"] = system.log_tail()
    analyse(result, sc, ref, direct.track, [d.track for d in dests], marks, samples_path, opts)
    return result


def analyse(
    result: Result,
    sc: Scenario,
    ref: Reference,
    direct: Track,
    dests: list[Track],
    marks: dict[str, float],
    samples_path: Path,
    opts: Options,
) -> None:
    t_pub = marks.get("publish")
    w0, w1 = marks.get("window_start"), marks.get("window_end")
    if t_pub is None or w0 is None or w1 is None:
        return
    srt = sc.protocol == "srt"
    mapping: dict[bytes, bytes] | None
    if sc.ingest == "srt":
        # The direct receiver holds PES payloads; an RTMP destination gets ffmpeg's TS -> FLV of them.
        mapping = None if srt else ref.tsflv_to_ts
        source = ref.ts_video if srt else ref.tsflv_video
    else:
        mapping = ref.ts_to_flv if srt else None
        source = ref.ts_video if srt else ref.flv_video

    # Start-up.
    direct_first = direct.first_video(t_pub)
    firsts = [d.first_video(t_pub) for d in dests]
    startups = [(f - t_pub) * 1000 for f in firsts if f is not None]
    result.startup_ms = {
        "direct": _r((direct_first - t_pub) * 1000) if direct_first else None,
        "median": _r(pct(startups, 0.5)),
        "max": _r(max(startups, default=None)),
    }
    if direct_first is not None:
        behind = [(f - direct_first) * 1000 for f in firsts if f is not None]
        result.startup_behind_ms = {"median": _r(pct(behind, 0.5)), "max": _r(max(behind, default=None))}
        # Where start-up goes: until the destination's publish began, and from there to the first frame.
        publish = [(d.publishes[0] - direct_first) * 1000 for d in dests if d.publishes]
        after = [(f - d.publishes[0]) * 1000 for d, f in zip(dests, firsts, strict=True) if f and d.publishes]
        result.context["startup_publish_behind_direct_ms"] = summary_ms(publish)
        result.context["startup_publish_to_first_video_ms"] = summary_ms(after)

    # Added delay, loss and identity in the steady window.
    direct_times = times_by_digest(direct.video(t_pub))
    delays: list[float] = []
    unmatched = 0
    expected = missing = 0
    identical = total = 0
    odd: list[dict[str, Any]] = []
    for track in dests:
        for i, a in enumerate(track.video(t_pub, marks.get("kill", float("inf")))):
            total += 1
            if a.digest in source:
                identical += 1
            elif len(odd) < 5:
                odd.append({"dest": track.name, "index": i, "ts_ms": a.ts_ms, "keyframe": a.keyframe})
        window = list(track.video(w0, w1))
        for a in window:
            key = mapping.get(a.digest, a.digest) if mapping is not None else a.digest
            ref_t = nearest(direct_times.get(key, []), a.t)
            if ref_t is None or abs(a.t - ref_t) > 5:
                unmatched += 1
                continue
            delays.append((a.t - ref_t) * 1000)
        got = times_by_digest(track.video(w0 - 1, w1 + 3), mapping)
        for a in direct.video(w0, w1 - 1):
            expected += 1
            t = nearest(got.get(a.digest, []), a.t)
            if t is None or not -0.5 <= t - a.t <= 3:
                missing += 1
    result.context["non_identical_examples"] = odd
    result.delay_ms = {**summary_ms(delays), "unmatched": unmatched}
    result.identical_share = _r(identical / total, 5) if total else None
    result.loss_share = _r(missing / expected, 5) if expected else None

    # Recovery: the others' longest silence around the victim's outage, against the direct receiver's.
    if "kill" in marks and "recovery_end" in marks and len(dests) > 1:
        g0, g1 = marks["kill"] - 1.0, marks["recovery_end"]
        gaps = [max_gap(d.video(g0, g1)) for d in dests[1:]]
        direct_gap = max_gap(direct.video(g0, g1))
        result.others_max_gap_ms = _r(max(gaps) * 1000)
        result.direct_max_gap_ms = _r(direct_gap * 1000)
        result.others_gap_excess_ms = _r((max(gaps) - direct_gap) * 1000)

    # CPU and memory of the system's process tree.
    trees, machine = load_samples(samples_path)
    tree = trees.get("system")
    if tree is not None:
        cpu = tree.cpu_seconds_per_minute(w0, w1)
        root_cpu = tree.cpu_seconds_per_minute(w0, w1, index=6)
        result.cpu_s_per_min = _r(cpu, 2)
        if cpu is not None and root_cpu is not None:
            result.context["cpu_s_per_min_root_process"] = _r(root_cpu, 2)
            result.context["cpu_s_per_min_children_per_dest"] = _r((cpu - root_cpu) / sc.n, 3)
        result.cpu_s_per_min_per_dest = _r(cpu / sc.n, 3) if cpu is not None else None
        rss, pss = tree.peak(2, t_pub, w1), tree.peak(3, t_pub, w1)
        result.rss_mb = _r(rss / 1e6)
        result.pss_mb = _r(pss / 1e6)
        result.pss_mb_per_dest = _r(pss / 1e6 / sc.n, 2)
        result.children_pss_mb_per_dest = _r(tree.peak(5, t_pub, w1) / 1e6 / sc.n, 2)
        result.processes = tree.peak(4, t_pub, w1)
    bench = trees.get("bench")
    result.context.update(
        {
            "machine_busy_share": _r(machine_busy_share(machine, w0, w1), 3),
            "bench_process_cpu_s_per_min": _r(bench.cpu_seconds_per_minute(w0, w1), 2) if bench else None,
            "direct_video_packets_in_window": sum(1 for _ in direct.video(w0, w1)),
            "receiver_errors": {t.name: t.errors for t in [direct, *dests] if t.errors},
            "reconnects": {t.name: len(t.publishes) for t in dests},
        }
    )


# -- report ----------------------------------------------------------------------------------------


def mark(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return f"{value:g} {'✅' if value <= target else '❌'}"


def table(results: Sequence[Result]) -> str:
    head = [
        "scenario",
        "start-up median/max ms",
        "behind direct median/max ms (≤150)",
        "added delay median ms (≤15)",
        "p95 ms (≤40)",
        "bit-identical video",
        "loss",
        "CPU s/min total",
        "CPU s/min per dest (≤0.5)",
        "peak RSS MB",
        "peak PSS MB",
        "PSS MB per dest (≤15)",
        "pusher PSS MB per dest",
        "live add → keyframe s (≤0.5)",
        "recovery s (≤1)",
        "others' gap beyond direct ms (≤100)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if not r.startup_ms:
            lines.append(f"| {r.scenario} | failed: {r.error} |" + " |" * (len(head) - 2))
            continue
        behind = r.startup_behind_ms
        live_add = r.live_add_note if r.live_add_s is None else mark(r.live_add_s, TARGETS["live_add_s"])
        recovery = r.recovery_note if r.recovery_s is None else mark(r.recovery_s, TARGETS["recovery_s"])
        row = [
            r.scenario + ("" if r.ok else f" ⚠ {r.error}"),
            f"{r.startup_ms.get('median')} / {r.startup_ms.get('max')} (direct {r.startup_ms.get('direct')})",
            f"{mark(behind.get('median'), TARGETS['startup_behind_ms'])} / {behind.get('max')}",
            mark(r.delay_ms.get("median"), TARGETS["delay_median_ms"]),
            mark(r.delay_ms.get("p95"), TARGETS["delay_p95_ms"]),
            "n/a" if r.identical_share is None else f"{r.identical_share * 100:.2f}%",
            "n/a" if r.loss_share is None else f"{r.loss_share * 100:.2f}%",
            str(r.cpu_s_per_min),
            mark(r.cpu_s_per_min_per_dest, TARGETS["cpu_s_per_min_per_dest"]),
            str(r.rss_mb),
            str(r.pss_mb),
            mark(r.pss_mb_per_dest, TARGETS["pss_mb_per_dest"]),
            str(r.children_pss_mb_per_dest),
            live_add or "n/a",
            recovery or "n/a",
            "n/a (N=1)"
            if r.others_gap_excess_ms is None
            else mark(r.others_gap_excess_ms, TARGETS["others_gap_excess_ms"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def render(results: Sequence[Result], meta: dict[str, Any]) -> str:
    main = [r for r in results if r.variant == BASELINE.label]
    variants = [r for r in results if r.variant != BASELINE.label]
    parts = [
        "# restream-relay benchmark",
        "",
        f"{meta['started']}: {meta['machine']}; clip {meta['clip']} ({meta['clip_video_kbps']} kbit/s video), "
        f"steady window {meta['options']['window_s']} s, receiver down {meta['options']['down_s']} s for recovery.",
        "Publisher: ffmpeg -re -stream_loop -1 -c copy -f tee to the system and to a direct receiver"
        + (" (RTMP with TCP_NODELAY, as OBS publishes). " if meta["options"]["publisher_tcp_nodelay"] else ". ")
        + "nginx-rtmp: `push` per destination, default push_reconnect (3 s); it has no SRT push and no live add.",
        "",
        table(main),
        "",
        "Start-up: publisher spawn → first video frame at each destination; behind direct = minus the direct "
        "receiver's first frame. Added delay: per video frame, arrival at a destination minus arrival of the same "
        "payload at the direct receiver, steady window. Bit-identical: video payload digests found among the "
        "source clip's (FLV tag bodies; for SRT the PES payloads of the same ffmpeg's -c copy MPEG-TS remux). "
        "Loss: direct frames of the window missing at a destination. CPU and PSS: the system's whole process tree "
        "(relay + ffmpeg pushes, nginx master + worker) from /proc; per dest = total / N; pusher PSS = children "
        "only. Live add: API call returned → first keyframe. Recovery: killed receiver listening again → first "
        "packet. Others' gap: longest inter-frame gap of the untouched destinations around the outage minus the "
        "direct receiver's. SRT receivers: srt-live-transmit with TSBPD off, so SRT's latency window is excluded; "
        "each frame is stamped when its first datagram reaches a UDP relay in front of it, as RTMP bytes are when "
        "read from the socket (srt-live-transmit itself writes out what it got only at libsrt's 10 ms ACK). "
        "srt-in: the publisher sends MPEG-TS over SRT to the relay and to a direct SRT receiver (TSBPD off); the "
        "relay's SRT ingest delivers after its TSBPD latency (120 ms by default), counted in its added delay.",
    ]
    if meta["options"].get("srt_parked_within_s"):
        parts[-1] += (
            " With an RTMP publisher, the relay's scenarios start it once the relay's idle SRT listener has parked "
            "(libsrt's polling threads gone, ~15 s after the relay's start, as on a relay that has run a while)."
        )
    nginx_skip = meta.get("nginx_skipped")
    if nginx_skip:
        parts += ["", f"nginx-rtmp not run: {nginx_skip}"]
    wakes = [float(w) for r in results if (w := r.context.get("host_wake_us")) is not None]
    if wakes:
        parts += [
            "",
            f"Host: a Python thread that only waits 66 ms at a time spent {min(wakes):g}-{max(wakes):g} µs of CPU a "
            "wake-up through the scenarios' windows (`python -m bench.host_wake`; `host_wake_us` of each in "
            "bench.json). On the shared development VM it is ~40 on a quiet host and 70-150 on a busy one, and the "
            "relay's CPU figures move with it: compare runs at like figures.",
        ]
    if variants:
        keys = list(dict.fromkeys((r.protocol, r.n) for r in variants))
        rows = []
        for proto, n in keys:
            rows += [r for r in main if r.system == "relay" and (r.protocol, r.n) == (proto, n)]
            rows += [r for r in variants if (r.protocol, r.n) == (proto, n)]
        parts += [
            "",
            "## ffmpeg flag variants of the relay's pushes (extra flags injected by a wrapper given as "
            "RELAY_FFMPEG; baseline = the row of the same scenario above)",
            "",
            table(rows),
        ]
    return "\n".join(parts) + "\n"


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.relay_bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--rtmp-n", default="1,4,16", help="RTMP destination counts (comma-separated)")
    p.add_argument("--srt-n", default="1,4", help="SRT destination counts (comma-separated, '' or 0 for none)")
    p.add_argument(
        "--ingest",
        default="rtmp",
        help="publisher protocols (comma-separated: rtmp,srt); with srt the "
        "direct receiver is an SRT listener too, and nginx and the flag variants run on rtmp only",
    )
    p.add_argument("--window", type=float, default=15.0, help="steady measurement window, seconds")
    p.add_argument("--warmup", type=float, default=2.0, help="after the last destination's first frame")
    p.add_argument("--down", type=float, default=2.0, help="how long the killed receiver stays down")
    p.add_argument("--srt-latency-ms", type=int, default=20, help="SRT latency of both ends (receiver TSBPD is off)")
    p.add_argument(
        "--srt-parked-within",
        type=float,
        default=SRT_PARKED_WITHIN_S,
        help="with an RTMP publisher, start it once the relay's SRT listener has parked (libsrt's polling threads "
        "gone, ~15 s after the relay's start), waiting up to this long; 0: at once",
    )
    p.add_argument("--no-nginx", action="store_true", help="skip the nginx-rtmp comparison")
    p.add_argument("--no-variants", action="store_true", help="skip the ffmpeg flag variants")
    p.add_argument("--only-variants", action="store_true", help="run only the flag variants (and their baselines)")
    p.add_argument(
        "--variant",
        action="append",
        default=[],
        help="run only the flag variants whose label contains this (repeat it for several)",
    )
    p.add_argument(
        "--srt-push-compare",
        action="store_true",
        help="also run each SRT scenario with RELAY_SRT_PUSH=ffmpeg (ffmpeg's own SRT output) beside the "
        "relay's caller (the default)",
    )
    p.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the relay process through the window (its sampling costs CPU: not for CPU figures)",
    )
    p.add_argument(
        "--publisher-tcp-nodelay",
        action="store_true",
        help="the RTMP publisher (both tee outputs) with TCP_NODELAY, as OBS publishes; ffmpeg's default is Nagle on",
    )
    p.add_argument("--clip-seconds", type=int, default=20)
    p.add_argument("--clip-size", default="1920x1080")
    p.add_argument("--clip-kbps", type=int, default=4500)
    p.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    return p.parse_args(argv)


def counts(text: str) -> list[int]:
    """Destination counts from "1,4,16"; '' or 0 for none (a scenario needs at least one destination)."""
    return [n for x in text.split(",") if x.strip() and (n := int(x)) > 0]


async def amain(args: argparse.Namespace) -> list[Result]:
    opts = Options(
        window_s=args.window,
        warmup_s=args.warmup,
        down_s=args.down,
        clip_seconds=args.clip_seconds,
        clip_size=args.clip_size,
        clip_kbps=args.clip_kbps,
        srt_latency_ms=args.srt_latency_ms,
        profile=args.profile,
        publisher_tcp_nodelay=args.publisher_tcp_nodelay,
        srt_parked_within_s=args.srt_parked_within,
    )
    out: Path = args.out
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    began = time.monotonic()
    print(f"encoding/using the clip ({opts.clip_size}, {opts.clip_seconds} s) ...", flush=True)
    clip = await asyncio.to_thread(encode_clip, out / "clips", opts.clip_seconds, opts.clip_size, opts.clip_kbps)
    ref = await asyncio.to_thread(build_reference, FFMPEG, clip)
    nginx_skip = "--no-nginx" if args.no_nginx else nginx_available()
    ingests = [x.strip() for x in args.ingest.split(",") if x.strip()]
    if not set(ingests) <= {"rtmp", "srt"}:
        raise SystemExit(f"--ingest: rtmp and/or srt, not {args.ingest!r}")
    scenarios = [Scenario("relay", "rtmp", n, ingest=i) for i in ingests for n in counts(args.rtmp_n)]
    scenarios += [Scenario("relay", "srt", n, ingest=i) for i in ingests for n in counts(args.srt_n)]
    if args.srt_push_compare:
        srt_ns = counts(args.srt_n)
        scenarios += [Scenario("relay", "srt", n, SRT_PUSH_FFMPEG, ingest=i) for i in ingests for n in srt_ns]
    runs = [(proto, n, v) for proto, n, v in FLAG_RUNS if any(x in v.label for x in args.variant or [""])]
    if args.only_variants:
        scenarios = list(dict.fromkeys(Scenario("relay", proto, n) for proto, n, _ in runs))
    elif not nginx_skip and "rtmp" in ingests:
        scenarios += [Scenario("nginx-rtmp", "rtmp", n) for n in counts(args.rtmp_n)]
    if not args.no_variants and "rtmp" in ingests:
        scenarios += [Scenario("relay", proto, n, v) for proto, n, v in runs]
    results: list[Result] = []
    for i, sc in enumerate(scenarios):
        print(f"[{i + 1}/{len(scenarios)}] {sc.label} ...", flush=True)
        t0 = time.monotonic()
        slug = sc.label.replace(" ", "_").replace("=", "").replace("[", "").replace("]", "").replace("/", "")
        result = await run_scenario(sc, clip, ref, opts, out / "runs" / slug[:60])
        results.append(result)
        print(
            f"    done in {time.monotonic() - t0:.0f} s: start-up behind direct {result.startup_behind_ms}, "
            f"delay {result.delay_ms}, cpu {result.cpu_s_per_min} s/min, pss {result.pss_mb} MB"
            + (f", ERROR {result.error}" if result.error else ""),
            flush=True,
        )
    meta = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
        "clip": f"{opts.clip_size}p30 {opts.clip_seconds} s H.264 veryfast keyint 60 + AAC 128k",
        "clip_video_kbps": opts.clip_kbps,
        "clip_bytes": clip.stat().st_size,
        "reference_video_packets": ref.video_packets,
        "ts_reference_matched": bool(ref.ts_to_flv),
        "ts_flv_reference_matched": bool(ref.tsflv_to_ts),
        "ingest": args.ingest,
        "ffmpeg": FFMPEG,
        "options": asdict(opts),
        "nginx_skipped": nginx_skip,
        "targets": TARGETS,
        "elapsed_s": round(time.monotonic() - began, 1),
    }
    md = render(results, meta)
    (out / "bench.md").write_text(md)
    (out / "bench.json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=2))
    print()
    print(md)
    print(f"written: {out / 'bench.md'}, {out / 'bench.json'} ({meta['elapsed_s']} s)")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results = asyncio.run(amain(args))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
