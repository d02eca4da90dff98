"""`make bench-capacity`: how many streams x destinations one node carries, relay and nginx-rtmp in one run.

    .venv/bin/python -m bench.capacity [--streams 1,2,4,8,12,16,20,24] [--destinations 4] [--no-nginx]
                                       [--clip-size 1280x720] [--clip-kbps 2500] [--window 15]
                                       [--push-ffmpeg PATH] [--event-loop uvloop] [--merge-interval-ms 66]
                                       [--max-delay-p95-ms 100]

Each step starts afresh: `streams` looping publishers (`ffmpeg -re -stream_loop -1 -c copy`, a tee that
also sends the same packets to a direct receiver of the stream's), `destinations` RTMP receivers per
stream, and the system under test in between (the relay: `restream-relay serve`, its restreams through
the API; nginx-rtmp: an application per stream with a `push` per destination). In the steady window:
- each destination's bitrate against its stream's direct receiver (the source as sent);
- the added delay: per video frame, arrival at the destination minus arrival of the same payload at the
  direct receiver (p50, p95);
- restarts: a destination connected to more than once;
- the API (relay only): /healthz and a list of restreams called in turn every 100 ms, p50 and p99;
- CPU (s per wall minute) of the system's whole process tree and of its top process alone (the relay's
  pushes are the difference), and the PSS of the tree, peak.
A step is over the limit when a destination gets less than 95 % of its source's bitrate, any restart,
the added delay's p95 passes 100 ms, or the API's p99 passes 1 s. The knee is the last step within every
limit; a system stops at the first step over one. Results: bench-results/capacity/capacity.{md,json}.
`--push-ffmpeg`, `--event-loop` and `--merge-interval-ms` set the relay's `RELAY_PUSH_FFMPEG`,
`RELAY_EVENT_LOOP` and `RELAY_MERGE_INTERVAL_MS` (all three: `make bench`'s "all three" variant; with the
merge interval, raise `--max-delay-p95-ms`: the relay holds media up to an interval by design).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.fleet import Fleet, Timings, latency_summary, percentile, wait_until
from bench.media import encode_clip
from bench.procstat import load_samples, machine_busy_share
from bench.receivers import Arrival
from bench.systems import nginx_available, relay_settings_env
from tests.support import ROOT

RESULTS = ROOT / "bench-results" / "capacity"
MIN_BITRATE_SHARE = 0.95
MAX_DELAY_P95_MS = 100.0
MAX_API_P99_MS = 1000.0
API_PROBE_SECONDS = 0.1


@dataclass(frozen=True)
class CapacityOptions:
    streams: tuple[int, ...] = (1, 2, 4, 8, 12, 16, 20, 24)
    destinations: int = 4
    window_seconds: float = 15.0
    warmup_seconds: float = 3.0
    start_timeout_seconds: float = 30.0
    clip_size: str = "1280x720"
    clip_kbps: int = 2500
    clip_seconds: int = 20
    nginx: bool = True
    sample_interval_seconds: float = 1.0
    max_delay_p95_ms: float = MAX_DELAY_P95_MS
    """The added delay's limit: with `RELAY_MERGE_INTERVAL_MS` the relay holds media up to an interval by
    design (~80 ms p95 at 66 ms, `make bench`), so a run with it raises this."""
    relay_env: tuple[tuple[str, str], ...] = ()
    """The relay's settings for every step (`RELAY_...` variables), besides the bench's own limits."""


@dataclass
class Step:
    system: str
    streams: int
    destinations: int
    ok: bool = True
    limits: list[str] = field(default_factory=list)
    error: str | None = None
    bitrate_share_min: float | None = None
    source_kbps: float | None = None
    dest_kbps_min: float | None = None
    delay_ms: dict[str, float | int | None] = field(default_factory=dict)
    restarts: int = 0
    api_ms: dict[str, dict[str, float | int | None]] = field(default_factory=dict)
    cpu_s_per_min: float | None = None
    cpu_s_per_min_top: float | None = None
    cpu_s_per_min_children: float | None = None
    pss_mb: float | None = None
    top_pss_mb: float | None = None
    machine_busy_share: float | None = None

    @property
    def pairs(self) -> int:
        return self.streams * self.destinations


async def run_step(system: str, streams: int, clip: Path, o: CapacityOptions, workdir: Path) -> Step:
    step = Step(system, streams, o.destinations)
    fleet = Fleet(
        workdir, clip, streams=streams, destinations=o.destinations, system=system, direct=True, env=dict(o.relay_env)
    )
    samples = workdir / "samples.jsonl"
    sampler: asyncio.subprocess.Process | None = None
    timings = Timings()
    w0 = w1 = 0.0
    try:
        await asyncio.to_thread(workdir.mkdir, parents=True, exist_ok=True)
        samples.unlink(missing_ok=True)
        await fleet.start()
        assert fleet.root_pid is not None
        sampler = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.procstat",
            str(samples),
            str(o.sample_interval_seconds),
            f"system={fleet.root_pid}",
            cwd=ROOT,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        tracks = [d.receiver.track for d in fleet.destinations]
        await wait_until(lambda: all(t.first_video() for t in tracks), time.monotonic() + o.start_timeout_seconds)
        firsts = [d.receiver.track.first_video() for d in fleet.destinations]
        if not all(firsts):
            missing = sum(1 for f in firsts if not f)
            raise RuntimeError(f"{missing} destinations got no video within {o.start_timeout_seconds:g} s")
        w0 = max(f for f in firsts if f) + o.warmup_seconds
        w1 = w0 + o.window_seconds
        await asyncio.sleep(max(0.0, w0 - time.monotonic()))
        if system == "relay":
            # Paced: a call every API_PROBE_SECONDS, /healthz and the list in turn (a monitor and a
            # dashboard), not a load test of the API.
            n = 0
            while time.monotonic() < w1:
                path = "/healthz" if n % 2 == 0 else "/streaming/restreams"
                n += 1
                started = time.monotonic()
                await fleet.call("GET", path, timings=timings)
                await asyncio.sleep(max(0.0, API_PROBE_SECONDS - (time.monotonic() - started)))
        await asyncio.sleep(max(0.0, w1 - time.monotonic()) + 1.0)
    except Exception as exc:
        step.ok = False
        step.error = f"{type(exc).__name__}: {exc}"
    finally:
        await fleet.close()
        if sampler is not None and sampler.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                sampler.kill()
            await sampler.wait()
    if step.error is None:
        analyse(step, fleet, timings, samples, w0, w1, o.max_delay_p95_ms)
    else:
        step.limits.append("error")
    return step


def analyse(
    step: Step,
    fleet: Fleet,
    timings: Timings,
    samples: Path,
    w0: float,
    w1: float,
    max_delay_p95_ms: float = MAX_DELAY_P95_MS,
) -> None:
    seconds = w1 - w0
    direct_bytes = [sum(a.size_bytes for a in r.track.arrivals if w0 <= a.t < w1) for r in fleet.directs]
    direct_times: list[dict[bytes, list[float]]] = []
    for r in fleet.directs:
        by_digest: dict[bytes, list[float]] = {}
        for a in r.track.video(w0 - 5, w1 + 5):
            by_digest.setdefault(a.digest, []).append(a.t)
        direct_times.append(by_digest)
    shares, kbps, delays = [], [], []
    for d in fleet.destinations:
        arrivals: list[Arrival] = d.receiver.track.arrivals
        got = sum(a.size_bytes for a in arrivals if w0 <= a.t < w1)
        kbps.append(got * 8 / 1000 / seconds)
        if direct_bytes[d.stream]:
            shares.append(got / direct_bytes[d.stream])
        for a in d.receiver.track.video(w0, w1):
            times = direct_times[d.stream].get(a.digest, [])
            i = bisect.bisect_right(times, a.t)
            if i:
                delays.append((a.t - times[i - 1]) * 1000)
        if len(d.receiver.track.publishes) > 1:
            step.restarts += len(d.receiver.track.publishes) - 1
    step.source_kbps = round(sum(direct_bytes) * 8 / 1000 / seconds / max(len(direct_bytes), 1), 1)
    step.dest_kbps_min = round(min(kbps, default=0.0), 1)
    step.bitrate_share_min = round(min(shares), 3) if shares else None
    step.delay_ms = latency_summary(delays)
    step.delay_ms["p95"] = None if not delays else round(percentile(delays, 0.95) or 0.0, 1)
    step.api_ms = timings.summary()
    trees, machine = load_samples(samples)
    tree = trees.get("system")
    if tree is not None:
        total = tree.cpu_seconds_per_minute(w0, w1)
        top = tree.cpu_seconds_per_minute(w0, w1, index=6)
        step.cpu_s_per_min = None if total is None else round(total, 2)
        step.cpu_s_per_min_top = None if top is None else round(top, 2)
        if total is not None and top is not None:
            step.cpu_s_per_min_children = round(total - top, 2)
        step.pss_mb = round(tree.peak(3, w0, w1) / 1e6, 1)
        step.top_pss_mb = round((tree.peak(3, w0, w1) - tree.peak(5, w0, w1)) / 1e6, 1)
    busy = machine_busy_share(machine, w0, w1)
    step.machine_busy_share = None if busy is None else round(busy, 3)
    if step.bitrate_share_min is None or step.bitrate_share_min < MIN_BITRATE_SHARE:
        step.limits.append(f"bitrate {step.bitrate_share_min} of the source")
    if step.restarts:
        step.limits.append(f"{step.restarts} restarts")
    p95 = step.delay_ms.get("p95")
    if p95 is None or float(p95) > max_delay_p95_ms:
        step.limits.append(f"delay p95 {p95} ms")
    for name, s in step.api_ms.items():
        p99 = s.get("p99")
        if p99 is not None and float(p99) > MAX_API_P99_MS:
            step.limits.append(f"{name} p99 {p99} ms")
    step.ok = not step.limits


async def run(o: CapacityOptions, out: Path) -> dict[str, Any]:
    await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
    clip = await asyncio.to_thread(encode_clip, out.parent / "clips", o.clip_seconds, o.clip_size, o.clip_kbps)
    nginx_skip = None if o.nginx else "--no-nginx"
    if nginx_skip is None:
        nginx_skip = nginx_available()
    systems = ["relay"] + ([] if nginx_skip else ["nginx"])
    steps: list[Step] = []
    stopped: set[str] = set()
    for n in o.streams:
        for system in systems:
            if system in stopped:
                continue
            print(f"{system} {n} x {o.destinations} ...", flush=True)
            step = await run_step(system, n, clip, o, out / "runs" / f"{system}-{n}x{o.destinations}")
            steps.append(step)
            print(f"    {summary_line(step)}", flush=True)
            if not step.ok:
                stopped.add(system)
        if stopped >= set(systems):
            break
    knees = {s: knee(steps, s) for s in systems}
    result = {
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": f"{os.cpu_count()} CPUs, {os.uname().release}",
        "options": asdict(o),
        "nginx_skipped": nginx_skip,
        "knees": knees,
        "steps": [asdict(s) for s in steps],
    }
    await asyncio.to_thread((out / "capacity.json").write_text, json.dumps(result, indent=2))
    await asyncio.to_thread((out / "capacity.md").write_text, render(o, steps, knees, nginx_skip))
    return result


def knee(steps: Sequence[Step], system: str) -> str | None:
    passed = [s for s in steps if s.system == system and s.ok]
    return f"{passed[-1].streams}x{passed[-1].destinations}" if passed else None


def summary_line(s: Step) -> str:
    api = {name: v.get("p99") for name, v in s.api_ms.items()}
    return (
        f"{'ok' if s.ok else 'LIMIT ' + '; '.join(s.limits)}: share {s.bitrate_share_min}, delay p95 "
        f"{s.delay_ms.get('p95')} ms, cpu {s.cpu_s_per_min} s/min (top {s.cpu_s_per_min_top}), pss {s.pss_mb} MB, "
        f"api p99 {api}" + (f", error {s.error}" if s.error else "")
    )


def render(o: CapacityOptions, steps: Sequence[Step], knees: dict[str, str | None], nginx_skip: str | None) -> str:
    lines = [
        "# restream-relay capacity",
        "",
        f"{time.strftime('%Y-%m-%d %H:%M')} on {os.cpu_count()} CPUs (publishers, receivers and the system share "
        f"them); clip {o.clip_size}p30 {o.clip_kbps} kbit/s H.264 + AAC, {o.destinations} RTMP destinations per "
        f"stream, steady window {o.window_seconds:g} s. Limits: a destination under {MIN_BITRATE_SHARE:.0%} of its "
        f"source's bitrate, a restart, added delay p95 over {o.max_delay_p95_ms:g} ms, API p99 over "
        f"{MAX_API_P99_MS:g} ms.",
        "",
        "Relay settings: " + (", ".join(f"`{k}={v}`" for k, v in o.relay_env) or "the defaults"),
        "",
        "Knee (last step within every limit): "
        + ", ".join(f"{system} {value or 'none'}" for system, value in knees.items()),
        "",
        "| system | streams x dests | within limits | min dest/source | delay p50 / p95 ms | restarts "
        "| CPU s/min tree | top process | pushes | PSS MB tree | top process "
        "| /healthz p50 / p99 ms | list restreams p50 / p99 ms | machine busy |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in steps:
        health = s.api_ms.get("GET /healthz", {})
        listing = s.api_ms.get("GET /streaming/restreams", {})
        verdict = "yes" if s.ok else "no: " + "; ".join(s.limits) + (f" ({s.error})" if s.error else "")
        lines.append(
            f"| {s.system} | {s.streams}x{s.destinations} | {verdict} | {s.bitrate_share_min} "
            f"| {s.delay_ms.get('p50')} / {s.delay_ms.get('p95')} | {s.restarts} | {s.cpu_s_per_min} "
            f"| {s.cpu_s_per_min_top} | {s.cpu_s_per_min_children} | {s.pss_mb} | {s.top_pss_mb} "
            f"| {health.get('p50', '-')} / {health.get('p99', '-')} | {listing.get('p50', '-')} / "
            f"{listing.get('p99', '-')} | {s.machine_busy_share} |"
        )
    lines += [
        "",
        "top process: the relay's own process (the pushes are its ffmpeg children: the difference), or nginx's "
        "master (its worker, which pushes, is the child). API: /healthz and GET /streaming/restreams called in "
        "turn, one every 100 ms, through the window (relay only). machine busy: the whole box's CPU share in the "
        "window (other work on it included).",
    ]
    if nginx_skip:
        lines.append(f"\nnginx-rtmp not run: {nginx_skip}")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.capacity", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    d = CapacityOptions()
    p.add_argument("--streams", default=",".join(map(str, d.streams)), help="the steps: streams (comma-separated)")
    p.add_argument("--destinations", type=int, default=d.destinations, help="destinations per stream")
    p.add_argument("--window", type=float, default=d.window_seconds)
    p.add_argument("--clip-size", default=d.clip_size)
    p.add_argument("--clip-kbps", type=int, default=d.clip_kbps)
    p.add_argument("--no-nginx", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--max-delay-p95-ms", type=float, default=d.max_delay_p95_ms, help="the added delay's limit (p95)")
    p.add_argument("--push-ffmpeg", default=None, help="the relay's RELAY_PUSH_FFMPEG (e.g. make lean-ffmpeg's)")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None, help="the relay's RELAY_EVENT_LOOP")
    p.add_argument("--merge-interval-ms", type=int, default=None, help="the relay's RELAY_MERGE_INTERVAL_MS")
    a = p.parse_args(argv)
    push_ffmpeg = str(Path(a.push_ffmpeg).resolve()) if a.push_ffmpeg else None
    relay_env = relay_settings_env(push_ffmpeg, a.event_loop, a.merge_interval_ms)
    o = CapacityOptions(
        streams=tuple(int(x) for x in a.streams.split(",") if x.strip()),
        destinations=a.destinations,
        window_seconds=a.window,
        clip_size=a.clip_size,
        clip_kbps=a.clip_kbps,
        nginx=not a.no_nginx,
        relay_env=tuple(relay_env.items()),
        max_delay_p95_ms=a.max_delay_p95_ms,
    )
    result = asyncio.run(run(o, a.out))
    print((a.out / "capacity.md").read_text())
    return 0 if any(result["knees"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
