"""The relay process's own CPU, split by what it does: no destination (ingest alone), then N destinations.

    .venv/bin/python -m bench.relay_cpu [--n 0,1,16] [--seconds 12] [--clip PATH] [--profile] [--event-loop uvloop]
        [--dest srt] [--merge-interval-ms 66] [--wake-costs] [--wake-stages]

One publisher (`ffmpeg -re -stream_loop -1 -c copy` of the `make bench` clip) to a real relay process, its
destinations the bench's RTMP (or `--dest srt`: SRT) receivers; the relay process's utime and stime (not its
children's), split between its main thread (the event loop) and its others (the SRT callers', the SRT
listener's, libsrt's), each kind of thread with its CPU and its wake-ups a second (voluntary context
switches: /proc/<pid>/task), over `--seconds` after `--warmup` (4 s), the publisher started once the relay's idle SRT
listener has parked (`--srt-parked-within`: libsrt's polling threads, ~0.3 CPU s/min of a relay's first ~15
s, are gone, as on a relay that has run a while), then its pushes' (the rest of its tree: `--push-ffmpeg`
against another build) and their PSS, per push, in 1/100 s ticks (0.04 s/min over 15 s). For a before/after
figure, run it from two checkouts in turn (each runs its own relay), several times: the machine's other load
moves the figures by ~0.2 s/min.
`--profile`: py-spy (GIL-holding samples) of the relay through the window, the top functions on stdout.
`--wake-costs`: what each read of the publisher (a "wake": the read and all it sets off, up to the pushes'
pipe writes) costs the relay's main thread in CPU time, and how many messages it brought, through the
window (bench/wake_probe: ~1 µs a wake and ~0.3 µs a message of its own, counted in the figures above),
and what the main thread spent outside them (the loop's other callbacks: the pushes' probe and progress,
timers). `--wake-stages` (implies `--wake-costs`): each wake's CPU by stage (the socket read, the session's
parse, the hub's fan-out, the writes to the pushes, the next interval's re-arm, the rest), ~20 µs a
wake more of the probe's own (~1.7 µs a timed call, warm).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import re
import signal
import socket
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import relay
from bench.media import encode_clip
from bench.procstat import tree_point
from bench.receivers import RtmpReceiver, SrtReceiver
from bench.relay_bench import RESULTS
from bench.systems import SRT_PARKED_WITHIN_S, RelaySystem, relay_settings_env
from bench.wake_probe.sitecustomize import STAGES
from tests.support import FFMPEG, free_port, wait_for

CLK_TCK = 100
RELAY_PACKAGE = Path(relay.__file__).resolve().parent
"""The relay package this bench runs (its checkout's), which the wake probe must have timed too."""
WAKE_PROBE = Path(__file__).with_name("wake_probe")
"""The directory whose `sitecustomize` times the relay's wakes (`--wake-costs`)."""


@dataclass(frozen=True)
class ThreadPoint:
    """One of the process's threads at one reading."""

    kind: str
    """Its kernel name with the digits as `N` (`SRT:SndQ:wN`, `srt-push:N`, `python`): one per kind of thread."""
    ticks: int
    """utime + stime."""
    wakes: int
    """Voluntary context switches: the times it slept and was woken."""


def thread_points(pid: int) -> dict[int, ThreadPoint]:
    """Each of the process's threads by id (a thread that ended between two readings is missing from the
    second: its ticks are in the process's figures, not in any thread's share)."""
    points: dict[int, ThreadPoint] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, StopIteration):
            name = (task / "comm").read_text().strip()
            status = (task / "status").read_text().splitlines()
            wakes = int(next(line for line in status if line.startswith("voluntary_ctxt_switches")).split()[1])
            points[int(task.name)] = ThreadPoint(re.sub(r"\d+", "N", name), sum(_stat_ticks(task / "stat")), wakes)
    return points


def other_threads(
    before: dict[int, ThreadPoint], after: dict[int, ThreadPoint], main: int, seconds: float
) -> dict[str, tuple[int, float, float]]:
    """The threads besides `main` that ran through the window, by kind: (how many, CPU s/min, wake-ups a
    second), the busiest first."""
    kinds: dict[str, tuple[int, int, int]] = {}
    for tid, point in after.items():
        if tid == main or tid not in before:
            continue
        count, ticks, wakes = kinds.get(point.kind, (0, 0, 0))
        kinds[point.kind] = (
            count + 1,
            ticks + point.ticks - before[tid].ticks,
            wakes + point.wakes - before[tid].wakes,
        )
    figures = {
        kind: (count, ticks * 60.0 / CLK_TCK / seconds, wakes / seconds)
        for kind, (count, ticks, wakes) in kinds.items()
    }
    return dict(sorted(figures.items(), key=lambda item: -item[1][1]))


def threads_line(kinds: dict[str, tuple[int, float, float]]) -> str:
    """`other threads by kind: SRT:SndQ:wN x1 0.20 CPU s/min, 105 wake-ups/s; ...` (those that woke or ran)."""
    shown = [
        f"{kind} x{count} {cpu:.2f} CPU s/min, {wakes:.0f} wake-ups/s"
        for kind, (count, cpu, wakes) in kinds.items()
        if cpu > 0 or wakes >= 0.5
    ]
    return "other threads by kind: " + ("; ".join(shown) or "none that ran")


def cpu_ticks(pid: int) -> tuple[int, int]:
    """(utime, stime) of the process itself, in clock ticks."""
    return _stat_ticks(Path(f"/proc/{pid}/stat"))


def _stat_ticks(stat: Path) -> tuple[int, int]:
    """(utime, stime) from a process's or a thread's /proc `stat` file."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])


async def measure(
    n: int,
    clip: Path,
    seconds: float,
    warmup: float,
    workdir: Path,
    profile: bool,
    push_ffmpeg: str | None = None,
    event_loop: str = "asyncio",
    dest: str = "rtmp",
    merge_interval_ms: int = 0,
    srt_parked_within: float = SRT_PARKED_WITHIN_S,
    wake_costs: bool = False,
    wake_stages: bool = False,
) -> tuple[dict[str, float], dict[str, tuple[int, float, float]]]:
    """The relay process's figures (CPU s/min, its main thread's wake-ups a second, its pushes', and with
    `wake_costs` the probe's), and its other threads by kind (`other_threads`)."""
    env = relay_settings_env(push_ffmpeg, event_loop, merge_interval_ms)
    wakes_file = workdir / f"wakes-n{n}.json"
    if wake_costs:
        wakes_file.unlink(missing_ok=True)
        env["RELAY_BENCH_WAKES"] = str(wakes_file)
        if wake_stages:
            env["RELAY_BENCH_WAKE_STAGES"] = "1"
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(WAKE_PROBE), os.environ.get("PYTHONPATH", "")) if p)
    system = RelaySystem(workdir / f"n{n}", env=env)
    dests: list[RtmpReceiver | SrtReceiver] = [
        RtmpReceiver(f"d{i}", free_port()) if dest == "rtmp" else SrtReceiver(f"d{i}", free_port(socket.SOCK_DGRAM))
        for i in range(n)
    ]
    publisher: asyncio.subprocess.Process | None = None
    try:
        for d in dests:
            await d.start()
        await system.start([d.url() for d in dests])
        parked_after = await system.wait_srt_parked(srt_parked_within) if srt_parked_within > 0 else None
        publisher = await asyncio.create_subprocess_exec(
            *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1"),
            *("-i", str(clip), "-c", "copy", "-f", "flv", system.ingest_url),
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        await asyncio.sleep(warmup)
        spy = None
        if profile:
            spy = await asyncio.create_subprocess_exec(
                *(str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(system.root_pid)),
                *("--format", "raw", "--gil", "--rate", "250", "--duration", str(int(seconds))),
                *("-o", str(workdir / f"profile-n{n}.txt")),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
        t0, (u0, s0), tree0 = time.monotonic(), cpu_ticks(system.root_pid), tree_point(system.root_pid)
        threads0 = thread_points(system.root_pid)
        if wake_costs:
            os.kill(system.root_pid, signal.SIGUSR1)
        await asyncio.sleep(seconds)
        t1, (u1, s1), tree1 = time.monotonic(), cpu_ticks(system.root_pid), tree_point(system.root_pid)
        threads1 = thread_points(system.root_pid)
        wakes: dict[str, float] = {}
        if wake_costs:
            os.kill(system.root_pid, signal.SIGUSR2)
            await wait_for(lambda: asyncio.to_thread(wakes_file.exists), 5.0, f"the wake probe's {wakes_file}", 0.05)
            wakes = await asyncio.to_thread(wake_figures, wakes_file)
        if spy is not None:
            await spy.wait()
        per_min = 60.0 / CLK_TCK / (t1 - t0)
        # The whole tree's ticks (reaped children included) less the relay's own: its pushes.
        children = (tree1[0] - tree0[0]) - (u1 - u0 + s1 - s0) if tree0 and tree1 else 0
        pss_mb = tree1[4] / 1e6 if tree1 else 0.0
        main = system.root_pid
        others = sum(
            point.ticks - (threads0[tid].ticks if tid in threads0 else 0)
            for tid, point in threads1.items()
            if tid != main
        )
        figures = {
            "user": (u1 - u0) * per_min,
            "sys": (s1 - s0) * per_min,
            "children": children * per_min,
            "pss": pss_mb,
            "main_thread": (threads1[main].ticks - threads0[main].ticks) * per_min,
            "main_wakes": (threads1[main].wakes - threads0[main].wakes) / (t1 - t0),
            "other_threads": others * per_min,
            "srt_parked_after": math.nan if parked_after is None else parked_after,
            **wakes,
        }
        return figures, other_threads(threads0, threads1, main, t1 - t0)
    finally:
        if publisher is not None and publisher.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                publisher.kill()
            await publisher.wait()
        await system.stop()
        for d in dests:
            await d.close()


def wake_figures(path: Path) -> dict[str, float]:
    """The wake probe's figures (bench/wake_probe) from what it wrote to `path` (asked by SIGUSR2): wakes a
    second, messages a wake, CPU µs a wake (median, mean) and CPU s/min in wakes; per messages-a-wake count
    `by_<k>`: median µs, and how many (`count_<k>`); with stages, per stage (and "rest", what no stage
    timed) `stage_<name>`: median µs a wake, and `stage_cpu_<name>`: CPU s/min. Raises RuntimeError when the
    probe says it timed another checkout's relay than this one's."""
    data = json.loads(path.read_text())
    timed = data.get("relay")
    if timed is not None and Path(timed) != RELAY_PACKAGE:
        raise RuntimeError(f"the wake probe timed the relay of {timed}, not this checkout's {RELAY_PACKAGE}")
    window, wakes = float(data["window_s"]), [(wake[0] / 1000, wake[1]) for wake in data["wakes"]]
    if not wakes:
        return {"wakes_per_s": 0.0}
    stages = [{name: ns / 1000 for name, ns in wake[2].items()} for wake in data["wakes"] if len(wake) > 2]
    micros = [us for us, _ in wakes]
    out = {
        "wakes_per_s": len(wakes) / window,
        "messages_per_wake": sum(m for _, m in wakes) / len(wakes),
        "wake_us_median": statistics.median(micros),
        "wake_us_mean": statistics.fmean(micros),
        "wakes_cpu": sum(micros) / 1e6 * 60.0 / window,
    }
    for count in sorted({m for _, m in wakes}):
        same = [us for us, m in wakes if m == count]
        out[f"by_{count}"] = statistics.median(same)
        out[f"count_{count}"] = len(same)
    if stages:
        for by_stage, (us, _) in zip(stages, wakes, strict=True):
            by_stage["rest"] = us - sum(by_stage.values())
        for name in STAGE_ORDER:
            spent = [by_stage.get(name, 0.0) for by_stage in stages]
            out[f"stage_{name}"] = statistics.median(spent)
            out[f"stage_cpu_{name}"] = sum(spent) / 1e6 * 60.0 / window
    return out


def top_functions(path: Path, count: int = 12) -> list[tuple[float, str]]:
    own: dict[str, int] = {}
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if stack and samples.isdigit():
            leaf = stack.rsplit(";", 1)[-1]
            own[leaf] = own.get(leaf, 0) + int(samples)
    total = sum(own.values()) or 1
    return [(n / total, name) for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:count]]


STAGE_ORDER = (*STAGES, "rest")
"""The wake probe's stages, in the order a read goes through them, and what none of them timed."""


def stage_line(cpu: dict[str, float]) -> str:
    """The wake probe's stages in a line: median µs a wake and CPU s/min of each."""
    names = [name for name in STAGE_ORDER if f"stage_{name}" in cpu]
    return "stages a wake (median µs, CPU s/min): " + ", ".join(
        f"{name} {cpu[f'stage_{name}']:.0f} ({cpu[f'stage_cpu_{name}']:.2f})" for name in names
    )


def wake_line(cpu: dict[str, float]) -> str:
    """The wake probe's figures in a line: per wake, and by how many messages it brought."""
    if not cpu.get("wakes_per_s"):
        return "wakes: none (no RTMP publisher read in the window)"
    counts = [int(key[6:]) for key in cpu if key.startswith("count_")]
    common = sorted(counts, key=lambda k: -cpu[f"count_{k}"])[:6]
    by = ", ".join(f"{k}: {cpu[f'by_{k}']:.0f} µs ({cpu[f'count_{k}']:.0f})" for k in sorted(common))
    share = cpu["wakes_cpu"] / cpu["main_thread"] if cpu["main_thread"] else math.nan
    outside = max(0.0, cpu["main_thread"] - cpu["wakes_cpu"])
    return (
        f"wakes: {cpu['wakes_per_s']:.1f}/s, {cpu['messages_per_wake']:.1f} messages each; CPU a wake median"
        f" {cpu['wake_us_median']:.0f} µs, mean {cpu['wake_us_mean']:.0f}; {cpu['wakes_cpu']:.2f} CPU s/min"
        f" ({share:.0%} of the main thread, {outside:.2f} outside the wakes); by messages a wake (median,"
        f" wakes): {by}"
    )


async def amain(args: argparse.Namespace) -> None:
    out: Path = args.out
    clip = args.clip or await asyncio.to_thread(encode_clip, RESULTS / "clips", 20, "1920x1080", 4500)
    for n in [int(x) for x in args.n.split(",") if x.strip()]:
        cpu, kinds = await measure(
            n,
            clip,
            args.seconds,
            args.warmup,
            out,
            args.profile,
            args.push_ffmpeg,
            args.event_loop,
            args.dest,
            args.merge_interval_ms,
            args.srt_parked_within,
            args.wake_costs,
            args.wake_stages,
        )
        total = cpu["user"] + cpu["sys"]
        split = f"main thread {cpu['main_thread']:.2f} ({cpu['main_wakes']:.0f} wake-ups/s)"
        split += f", other threads {cpu['other_threads']:.2f}"
        parked = cpu["srt_parked_after"]
        if args.srt_parked_within > 0:
            split += "; SRT listener not parked" if math.isnan(parked) else f"; SRT listener parked in {parked:.1f} s"
        print(
            f"N={n} ({args.dest}): relay process {total:.2f} CPU s/min (user {cpu['user']:.2f}, sys {cpu['sys']:.2f};"
            f" {split})",
            flush=True,
        )
        print(f"    {threads_line(kinds)}", flush=True)
        if n:
            per_push = f"{cpu['children'] / n:.3f} CPU s/min and {cpu['pss'] / n:.1f} MB PSS per push"
            print(f"    its pushes {cpu['children']:.2f} CPU s/min: {per_push}", flush=True)
        if args.wake_costs:
            print(f"    {wake_line(cpu)}", flush=True)
        if args.wake_stages and "stage_rest" in cpu:
            print(f"    {stage_line(cpu)}", flush=True)
        profile = out / f"profile-n{n}.txt"
        if args.profile and profile.exists():
            for share, name in top_functions(profile):
                print(f"    {share:6.1%} {name}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_cpu", description=__doc__)
    p.add_argument("--n", default="0,1,16", help="destination counts (comma-separated)")
    p.add_argument("--seconds", type=float, default=12.0, help="measurement window")
    p.add_argument("--warmup", type=float, default=4.0, help="after the publisher starts")
    p.add_argument("--clip", type=Path, default=None, help="FLV clip (default: make bench's 1080p30 clip)")
    p.add_argument("--profile", action="store_true", help="py-spy the relay through the window")
    p.add_argument("--push-ffmpeg", default=None, help="the pushes' ffmpeg (RELAY_PUSH_FFMPEG)")
    p.add_argument("--event-loop", default="asyncio", choices=("asyncio", "uvloop"), help="RELAY_EVENT_LOOP")
    p.add_argument("--merge-interval-ms", type=int, default=0, help="RELAY_MERGE_INTERVAL_MS")
    p.add_argument("--dest", default="rtmp", choices=("rtmp", "srt"), help="the destinations' protocol")
    p.add_argument(
        "--srt-parked-within",
        type=float,
        default=SRT_PARKED_WITHIN_S,
        help="start the publisher once the relay's SRT listener has parked (libsrt's polling threads gone, ~15 s "
        "after the relay's start), waiting up to this long; 0: at once",
    )
    p.add_argument(
        "--wake-costs",
        action="store_true",
        help="time each read of the publisher in the relay (bench/wake_probe): CPU a wake, messages a wake",
    )
    p.add_argument(
        "--wake-stages",
        action="store_true",
        help="the wake costs, and each wake's CPU by stage (read, parse, fan-out, writes, re-arm, rest)",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "relay_cpu")
    args = p.parse_args(argv)
    args.wake_costs = args.wake_costs or args.wake_stages  # the stages are of the wakes
    args.out.mkdir(parents=True, exist_ok=True)
    asyncio.run(amain(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
