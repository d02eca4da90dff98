#!/usr/bin/env python3
"""A stand-in for ffmpeg in supervisor tests: behaves as the output URL's `fake=` query value says.

Modes: run (read stdin, print progress, exit 0 at EOF), refuse (RTMP BadName), exit<N> (exit N at once),
fail<N> (refuse the connection on the first N runs, counted in $FAKE_FFMPEG_DIR, then run),
stall (progress stops while stdin is still read), ignoreint (run, but ignore SIGINT),
noprogress (read stdin, never report progress), trailer (run, then the output breaks: "Error writing
trailer" and a long hang in cleanup, as ffmpeg on a broken SRT socket).
SIGINT ends a run with 255, as ffmpeg does. Progress goes to stdout in `-progress` format.
"""

from __future__ import annotations

import os
import re
import signal
import sys
import threading
import time


def emit_progress(out_us: int, size: int, frames: int, end: bool = False) -> None:
    sys.stdout.write(
        f"frame={frames}\nfps=30.00\nbitrate=1000.0kbits/s\ntotal_size={size}\n"
        f"out_time_us={out_us}\nout_time_ms={out_us}\nspeed=1.00x\nprogress={'end' if end else 'continue'}\n"
    )
    sys.stdout.flush()


def main() -> int:
    url = sys.argv[-1]
    match = re.search(r"fake=([a-z]+)(\d*)", url)
    mode, number = (match.group(1), match.group(2)) if match else ("run", "")
    if mode == "fail":
        state = os.path.join(os.environ.get("FAKE_FFMPEG_DIR", "/tmp"), "fake_ffmpeg_runs")
        runs = int(open(state).read()) if os.path.exists(state) else 0
        with open(state, "w") as f:
            f.write(str(runs + 1))
        if runs < int(number or 1):
            sys.stderr.write(f"[out#0/flv @ 0x1] [fatal] Error opening output {url}: Connection refused\n")
            return 1
        mode = "run"
    if mode == "refuse":
        sys.stderr.write("[rtmp @ 0x55] [error] Server error: NetStream.Publish.BadName\n")
        sys.stderr.write(f"[out#0/flv @ 0x1] [fatal] Error opening output {url}: Input/output error\n")
        return 1
    if mode == "exit":
        sys.stderr.write(f"[fatal] Error opening output {url}: Input/output error\n")
        return int(number or 1)
    interrupted = threading.Event()
    if mode == "ignoreint":
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    else:
        signal.signal(signal.SIGINT, lambda *_: interrupted.set())
    received = [0]
    eof = threading.Event()

    def reader() -> None:
        while True:
            data = os.read(sys.stdin.fileno(), 65536)  # whatever has arrived, like read1
            if not data:
                eof.set()
                return
            received[0] += len(data)

    threading.Thread(target=reader, daemon=True).start()
    start = time.monotonic()
    out_us = 0
    reported = 0
    while True:
        if interrupted.is_set():
            return 255
        if eof.is_set():
            emit_progress(out_us, received[0], 1, end=True)
            return 0
        time.sleep(0.05)
        if mode == "noprogress" or (mode == "stall" and reported >= 3) or received[0] == 0:
            continue
        out_us = int((time.monotonic() - start) * 1_000_000)
        reported += 1
        emit_progress(out_us, received[0], reported)
        if mode == "trailer" and reported == 3:
            sys.stderr.write("[out#0/mpegts @ 0x1] [error] Error writing trailer: Input/output error\n")
            sys.stderr.flush()
            time.sleep(30)  # ffmpeg blocked in its protocol's cleanup
            return 1


if __name__ == "__main__":
    sys.exit(main())
