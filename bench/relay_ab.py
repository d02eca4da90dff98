"""Two checkouts' relays side by side, each with its own publisher and pushes, their CPU over the same windows.

    .venv/bin/python -m bench.relay_ab --a /path/to/checkout-a --b /path/to/checkout-b [--n 1] [--windows 4]
        [--seconds 30] [--push-ffmpeg PATH] [--event-loop uvloop] [--merge-interval-ms 66] [--clip PATH]
        [--streams K]

A before/after figure of the relay process taken one run after the other (`bench.relay_cpu` from each
checkout in turn) moves with the shared machine's other load: ~0.1 CPU s/min between runs, more than most
changes to the media path are worth. Here both relays run at once, each publishing the clip (`ffmpeg -re
-stream_loop -1 -c copy`, 1080p30 4.5 Mbit/s by default) to its own N RTMP receivers, so every window finds
both in the same conditions, and the difference is read window by window. The relay started first was
measured ~0.03 CPU s/min dearer than the second in the same run, whichever checkout it was: each pass runs
twice, A first and then B first, and the figures are the means over both orders.

Each relay's figure is its process's own CPU (utime and stime, not its children's), in CPU s/min, with the
video frames a second its receivers got (the fewest any of them got: that each push delivered, not what it
cost). Both relays and both publishers share the machine: the figures are higher than one relay's alone
(`bench.relay_cpu`), and only their difference is the comparison.

`--streams K`: each relay has K streams, each with its own publisher and N destinations (the cost of a
stream rather than of a destination); each relay's publishers start `PUBLISHER_STAGGER_S` apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.media import encode_clip
from bench.receivers import RtmpReceiver
from bench.relay_bench import RESULTS
from bench.relay_cpu import cpu_ticks
from bench.systems import SRT_PARKED_WITHIN_S, RelaySystem, relay_settings_env
from tests.support import FFMPEG, free_port

_HZ = os.sysconf("SC_CLK_TCK")
PUBLISHER_STAGGER_S = 0.45
"""With `--streams`, each relay's publishers start this far apart (the two relays' i-th at once): the clip's
keyframes, which fill a read and set when a publisher is read next, then come at different times, as
independent encoders' do."""


@dataclass
class _Side:
    """One checkout's relay, its receivers and its publisher, and its figures of each window."""

    label: str
    checkout: Path
    system: RelaySystem
    receivers: list[RtmpReceiver]
    publishers: list[asyncio.subprocess.Process] = field(default_factory=list)
    ingest_urls: list[str] = field(default_factory=list)
    """Each stream's RTMP push URL (one publisher each)."""
    cpu: list[float] = field(default_factory=list)
    """CPU s/min of the relay process, each window."""
    frames: list[float] = field(default_factory=list)
    """Video frames a second that the receiver that got the fewest got, each window."""

    def frame_counts(self) -> list[int]:
        return [sum(1 for _ in r.track.video()) for r in self.receivers]


async def run_pass(
    order: Sequence[tuple[str, Path]],
    n: int,
    windows: int,
    seconds: float,
    clip: Path,
    env: dict[str, str],
    workdir: Path,
    warmup: float = 6.0,
    srt_parked_within: float = SRT_PARKED_WITHIN_S,
    streams: int = 1,
) -> list[_Side]:
    """Both relays started in `order`, published to, then measured over `windows` windows of `seconds`; each
    relay has `streams` streams, each with its publisher and `n` destinations."""
    sides: list[_Side] = []
    try:
        for label, checkout in order:
            receivers = [RtmpReceiver(f"{label}{i}", free_port()) for i in range(n * streams)]
            for receiver in receivers:
                await receiver.start()
            system = RelaySystem(workdir / label, env=env, checkout=checkout)
            side = _Side(label, checkout, system, receivers)
            sides.append(side)
            await system.start([r.url() for r in receivers[:n]])
            side.ingest_urls.append(system.ingest_url)
            for index in range(1, streams):
                urls = [r.url() for r in receivers[index * n : (index + 1) * n]]
                side.ingest_urls.append(await system.add_stream(f"bench{index}", urls))
        for side in sides:  # libsrt's polling threads of a relay's first seconds gone (bench.systems)
            if srt_parked_within > 0:
                await side.system.wait_srt_parked(srt_parked_within)
        for index in range(streams):
            if index:  # encoders that started together would send their keyframes together, read together
                await asyncio.sleep(PUBLISHER_STAGGER_S)
            for side in sides:
                publisher = await asyncio.create_subprocess_exec(
                    *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-stream_loop", "-1"),
                    *("-i", str(clip), "-c", "copy", "-f", "flv", side.ingest_urls[index]),
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                )
                side.publishers.append(publisher)
        await asyncio.sleep(warmup)  # every push started and past its first keyframe
        for _ in range(windows):
            t0 = time.monotonic()
            ticks0 = [sum(cpu_ticks(side.system.root_pid)) for side in sides]
            frames0 = [side.frame_counts() for side in sides]
            await asyncio.sleep(seconds)
            elapsed = time.monotonic() - t0
            for side, ticks, frames in zip(sides, ticks0, frames0, strict=True):
                side.cpu.append((sum(cpu_ticks(side.system.root_pid)) - ticks) / _HZ / elapsed * 60)
                got = [after - before for after, before in zip(side.frame_counts(), frames, strict=True)]
                side.frames.append(min(got, default=0) / elapsed)
        return sides
    finally:
        for side in sides:
            for publisher in side.publishers:
                if publisher.returncode is None:
                    publisher.terminate()
                    await publisher.wait()
        for side in sides:
            await side.system.stop()
            for receiver in side.receivers:
                await receiver.close()


async def amain(args: argparse.Namespace) -> int:
    env = relay_settings_env(args.push_ffmpeg, args.event_loop, args.merge_interval_ms)
    clip = args.clip or await asyncio.to_thread(encode_clip, RESULTS / "clips", 20, "1920x1080", 4500)
    a, b = ("A", args.a), ("B", args.b)
    cpu: dict[str, list[float]] = {"A": [], "B": []}
    frames: dict[str, list[float]] = {"A": [], "B": []}
    workdir = Path(tempfile.mkdtemp(prefix="relay-ab-"))
    try:
        for order in ((a, b), (b, a)):
            sides = await run_pass(
                order,
                args.n,
                args.windows,
                args.seconds,
                clip,
                env,
                workdir,
                args.warmup,
                args.srt_parked_within,
                args.streams,
            )
            first = sides[0].label
            for side in sides:
                cpu[side.label] += side.cpu
                frames[side.label] += side.frames
            for index in range(args.windows):
                row = "  ".join(f"{s.label} {s.cpu[index]:.3f}" for s in sorted(sides, key=lambda s: s.label))
                print(f"{first} first, window {index + 1}: {row} CPU s/min", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for label, (_, checkout) in (("A", a), ("B", b)):
        print(
            f"{label} ({checkout}): {statistics.fmean(cpu[label]):.3f} CPU s/min, the relay process at N={args.n}"
            f"{f' x {args.streams} streams' if args.streams > 1 else ''}"
            f" (mean of {len(cpu[label])} windows of {args.seconds:g} s, both orders);"
            f" {statistics.fmean(frames[label]):.1f} video frames a second at each destination (the fewest any got)"
        )
    diffs = [bb - aa for aa, bb in zip(cpu["A"], cpu["B"], strict=True)]
    print(f"B - A: {statistics.fmean(diffs):+.3f} CPU s/min (window by window: {min(diffs):+.3f} to {max(diffs):+.3f})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.relay_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--a", type=Path, required=True, help="checkout A (the before)")
    p.add_argument("--b", type=Path, required=True, help="checkout B (the after)")
    p.add_argument("--n", type=int, default=1, help="RTMP destinations of each relay")
    p.add_argument("--streams", type=int, default=1, help="streams of each relay, each with its publisher and N")
    p.add_argument("--windows", type=int, default=4, help="measurement windows a pass (two passes)")
    p.add_argument("--seconds", type=float, default=30.0, help="length of a window")
    p.add_argument("--warmup", type=float, default=6.0, help="seconds from the publishers' start to the first window")
    p.add_argument(
        "--srt-parked-within",
        type=float,
        default=SRT_PARKED_WITHIN_S,
        help="wait this long for each relay's idle SRT listener to park (0: do not wait)",
    )
    p.add_argument("--clip", type=Path, default=None, help="FLV clip (default: make bench's 1080p30 clip)")
    p.add_argument("--push-ffmpeg", default=None, help="RELAY_PUSH_FFMPEG of both (e.g. make lean-ffmpeg's)")
    p.add_argument("--event-loop", choices=("asyncio", "uvloop"), default=None, help="RELAY_EVENT_LOOP of both")
    p.add_argument("--merge-interval-ms", type=int, default=None, help="RELAY_MERGE_INTERVAL_MS of both")
    args = p.parse_args(argv)
    args.a, args.b = args.a.resolve(), args.b.resolve()  # the relays run from there, whatever the working directory
    if args.push_ffmpeg:
        args.push_ffmpeg = str(Path(args.push_ffmpeg).resolve())
    return asyncio.run(amain(args))


if __name__ == "__main__":
    raise SystemExit(main())
