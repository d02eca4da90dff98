"""How long the event loop stands still while it starts a child, on asyncio's loop and on uvloop's.

    .venv/bin/python -m bench.spawn [--children 16] [--ballast-mb 100] [--loop asyncio --loop uvloop]

A stream going live with 16 destinations starts 16 pushes in a row on the node's loop; while one is being
started, the loop serves nothing else (the hub does not feed the pushes started before it). This starts
`--children` children (`sleep`, with the three pipes a push has) one after the other through
`relay.spawn.spawn`, as the relay does, from a process holding `--ballast-mb` of touched memory (a relay
process is ~100 MB), and prints the wall time each start held the loop: median, max and total.
`--libuv` starts them with `asyncio.create_subprocess_exec` on uvloop, libuv's own fork(), as the relay
did before `relay.spawn`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import time
from collections.abc import Sequence

from api.loops import loop_factory
from relay.spawn import Child, spawn


async def spawn_times_ms(children: int, *, libuv: bool = False) -> list[float]:
    """The wall time of each start, in ms; every child is reaped before returning."""
    times: list[float] = []
    started: list[Child] = []
    try:
        for _ in range(children):
            before = time.perf_counter()
            child: Child
            if libuv:
                child = await asyncio.create_subprocess_exec(
                    "sleep", "30", stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE, start_new_session=True,
                )  # fmt: skip
            else:
                child = await spawn(["sleep", "30"], stdin=asyncio.subprocess.PIPE, env={"PATH": "/usr/bin:/bin"})
            times.append((time.perf_counter() - before) * 1000)
            started.append(child)
    finally:
        for child in started:
            assert child.stdin is not None
            child.stdin.close()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            await child.wait()
    return times


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.spawn", description=__doc__.splitlines()[0])
    p.add_argument("--children", type=int, default=16)
    p.add_argument("--ballast-mb", type=int, default=100, help="memory the process touches first")
    p.add_argument("--loop", action="append", choices=("asyncio", "uvloop"), help="default: both")
    p.add_argument("--libuv", action="store_true", help="on uvloop, also libuv's own spawn (the relay before)")
    args = p.parse_args(argv)
    ballast = [bytearray(1 << 20) for _ in range(args.ballast_mb)]
    for page in ballast:
        page[::4096] = b"\1" * len(range(0, len(page), 4096))
    runs = [(name, False) for name in args.loop or ("asyncio", "uvloop")]
    if args.libuv:
        runs.append(("uvloop", True))
    for name, libuv in runs:
        loop = loop_factory(name)()
        try:
            times = loop.run_until_complete(spawn_times_ms(args.children, libuv=libuv))
        finally:
            loop.close()
        how = "libuv's spawn" if libuv else "relay.spawn"
        print(
            f"{name} ({how}): {args.children} children, the loop held {statistics.median(times):.2f} ms median, "
            f"{max(times):.2f} ms max, {sum(times):.1f} ms in all ({args.ballast_mb} MB touched)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
