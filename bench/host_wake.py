"""What a wake-up costs on this host right now, before any of the relay's code runs.

    .venv/bin/python -m bench.host_wake [--seconds 5] [--interval-ms 66]

A Python thread that does nothing but wait on an empty epoll, `--interval-ms` at a time, as the relay's main
thread waits between a publisher's merged reads: its own CPU (`time.thread_time`) per wake-up, in µs. On the
shared 2-core development VM this moved from ~40 µs (a quiet host) to 70-150 µs (a busy one) within one
evening, and the relay's figures with it: at one destination the relay process took 0.21-0.26 CPU s/min when
it was ~40 and 0.5-0.8 when it was over 70 (docs/benchmarks.md). `make bench` takes it through each
scenario's window (`host_wake_us` in bench.json, the range in bench.md), so that a reader can tell a busy host
from a change of the relay's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import select
import sys
import time
from collections.abc import Sequence

INTERVAL_S = 0.066
"""The wait between wake-ups: `RELAY_MERGE_INTERVAL_MS`'s 66 ms, the relay's read interval with it."""


def wake_cost_us(seconds: float, interval_s: float = INTERVAL_S) -> float:
    """CPU µs of this thread per wake-up, over `seconds` of waking every `interval_s` and doing nothing."""
    poller = select.epoll()
    try:
        count = max(1, round(seconds / interval_s))
        started = time.thread_time()
        for _ in range(count):
            poller.poll(interval_s)
        return (time.thread_time() - started) / count * 1e6
    finally:
        poller.close()


async def measure(seconds: float, interval_s: float = INTERVAL_S) -> float | None:
    """`wake_cost_us` in a process of its own (not the bench's, whose loop and receivers would share its
    GIL), rounded to the µs; None if it could not run."""
    try:
        proc = await asyncio.create_subprocess_exec(
            *(sys.executable, "-m", "bench.host_wake", "--seconds", str(seconds)),
            *("--interval-ms", str(interval_s * 1000)),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )
    except OSError:
        return None
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        return None
    with contextlib.suppress(ValueError):
        return round(float(out.decode().strip()))
    return None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.host_wake", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=5.0, help="how long to measure")
    p.add_argument("--interval-ms", type=float, default=INTERVAL_S * 1000, help="the wait between wake-ups")
    args = p.parse_args(argv)
    print(f"{wake_cost_us(args.seconds, args.interval_ms / 1000):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
