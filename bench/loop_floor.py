"""What a wake-up costs before any of the relay's code runs: an event loop that reads a socket and does nothing.

    .venv/bin/python -m bench.loop_floor [--rate 65] [--seconds 12] [--mode asyncio --mode uvloop --mode blocking]

A 1080p30 publisher read as its data comes wakes the relay's loop ~65 times a second (docs/benchmarks.md). A
child process writes 9,000 bytes (a frame's worth) to a socket pair `--rate` times a second; this process
reads them, doing nothing else, and its reading thread's CPU time is printed, per minute and per wake-up:
`asyncio` (a `BufferedProtocol` on asyncio's loop, as the RTMP ingest reads), `uvloop` (the same on
uvloop's) and `blocking` (`recv_into` in a loop, no event loop at all). The relay's own CPU at N=0 or N=1
cannot go below its loop's figure here while it wakes as often.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import time
from collections.abc import Sequence

from api.loops import loop_factory

FRAME_BYTES = 9000
MODES = ("asyncio", "uvloop", "blocking")


def _write_for(sock: socket.socket, rate: float, seconds: float) -> None:
    """In the child: write a frame `rate` times a second until `seconds` have passed or the reader left."""
    frame = b"x" * FRAME_BYTES
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            sock.sendall(frame)
        except OSError:
            return
        time.sleep(1 / rate)


class _Reader(asyncio.BufferedProtocol):
    def __init__(self, buffer: memoryview) -> None:
        self._buffer = buffer

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        pass

    def eof_received(self) -> bool:
        return False


def reading_cpu_seconds(mode: str, rate: float, seconds: float) -> float:
    """The reading thread's CPU time over `seconds` of a writer at `rate` frames a second."""
    ours, theirs = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # the writer: nothing of the parent's runs here
        ours.close()
        _write_for(theirs, rate, seconds + 1)
        os._exit(0)
    theirs.close()
    buffer = memoryview(bytearray(65536))
    try:
        if mode == "blocking":
            ours.settimeout(1)
            started, end = time.thread_time(), time.monotonic() + seconds
            while time.monotonic() < end:
                try:
                    ours.recv_into(buffer)
                except TimeoutError:
                    pass
            return time.thread_time() - started

        async def read() -> float:
            await asyncio.get_running_loop().connect_accepted_socket(lambda: _Reader(buffer), ours)
            started = time.thread_time()
            await asyncio.sleep(seconds)
            return time.thread_time() - started

        loop = loop_factory(mode)()
        try:
            return loop.run_until_complete(read())
        finally:
            loop.close()
    finally:
        ours.close()
        os.waitpid(pid, 0)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.loop_floor", description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=65.0, help="wake-ups a second")
    p.add_argument("--seconds", type=float, default=12.0)
    p.add_argument("--mode", action="append", choices=MODES, help="default: all three")
    args = p.parse_args(argv)
    for mode in args.mode or MODES:
        cpu = reading_cpu_seconds(mode, args.rate, args.seconds)
        print(
            f"{mode}: {cpu / args.seconds * 60:.3f} CPU s/min at {args.rate:g} wake-ups a second "
            f"({cpu / args.seconds / args.rate * 1e6:.0f} us each)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
