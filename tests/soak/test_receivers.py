"""The soak's SRT destination counts connections right: every caller that connects to a listener, and every
listener started again after a kill, begins a new timeline, and a timestamp going back across that boundary
is not a regression. The 2-hour soak once reported one, at a destination that had counted 2 connections for
3: srt-live-transmit writes its "Accepted SRT source connection" line in pieces (an unbuffered `cerr`, one
write per `<<`), and a line split across two reads of the pipe was never counted."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import time
from pathlib import Path

import pytest

from bench.fleet import Watch
from bench.receivers import SrtReceiver, _PipeProtocol
from tests.support.net import free_port
from tests.support.processes import run_process
from tests.support.publishers import ffmpeg_publish_argv


async def _send(source: Path, receiver: SrtReceiver) -> None:
    """One SRT caller sending the sample in real time, then hanging up; 10 s to connect, not libsrt's 3 (a
    loaded machine), and should it fail, the message says how long it took and what the listener logged
    (that log found why two fresh-clone runs failed here: `SrtReceiver._exited`)."""
    started = time.monotonic()
    url = f"{receiver.url()}&connect_timeout=10000"
    code, output = await run_process(ffmpeg_publish_argv(source, url, pes_lengths=True), limit_seconds=30)
    took = time.monotonic() - started
    assert code == 0, (
        f"caller exited {code} after {took:.2f} s: {output}\nlistener: {receiver.log.decode(errors='replace')}"
    )


def _counting_receiver() -> tuple[SrtReceiver, Watch]:
    """A soak SRT destination that counts each caller's connection, and the watch over what it received."""
    receiver = SrtReceiver("d", free_port(socket.SOCK_DGRAM), latency_ms=20, track_connections=True)
    watch = Watch(receiver.track)
    receiver.track.arrivals = watch
    return receiver, watch


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_each_caller_and_each_restarted_listener_is_a_new_connection(src_ts: Path) -> None:
    receiver, watch = _counting_receiver()
    frames: list[int] = []

    async def main() -> None:
        await receiver.start()
        for _ in range(2):  # two callers, one after the other, to the same listener
            await _send(src_ts, receiver)
            await asyncio.sleep(0.3)
            frames.append(watch.video_frames)
        for _ in range(2):  # the destination crashes and comes back, twice
            await receiver.kill()
            await receiver.start()
            await _send(src_ts, receiver)
            await asyncio.sleep(0.3)
            frames.append(watch.video_frames)
        await receiver.kill()

    asyncio.run(main())
    assert watch.connections_seen == 4, receiver.track.publishes
    assert watch.violations == [] and watch.violation_count == 0
    # Every connection delivered the sample's video (75 frames; the last PES of each may be cut short).
    per_connection = [b - a for a, b in zip([0, *frames], frames, strict=False)]
    assert all(n >= 70 for n in per_connection), per_connection


def test_a_line_split_across_reads_is_counted_once() -> None:
    receiver = SrtReceiver("d", 9, track_connections=True)

    async def main() -> None:
        protocol = _PipeProtocol(receiver)
        for chunk in (b"Accepted SRT ", b"source", b" connection", b"\n"):  # as srt-live-transmit writes it
            protocol.pipe_data_received(2, chunk)
        protocol.pipe_data_received(2, b"SRT source disconnected\nAccepted SRT source connection\nAccepted SRT")
        protocol.pipe_data_received(2, b" source connection\n")
        await asyncio.sleep(0)

    asyncio.run(main())
    assert len(receiver.track.publishes) == 3


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_a_listener_that_ends_by_itself_is_started_again_for_the_next_caller(src_ts: Path) -> None:
    # srt-live-transmit exits when a caller's end reaches its read before its poll (fresh-clone runs: the
    # next caller found nothing listening). Killed here from outside, as if it had.
    receiver, watch = _counting_receiver()
    before = 0

    async def main() -> None:
        nonlocal before
        await receiver.start()
        await _send(src_ts, receiver)
        # The caller's end may have ended srt-live-transmit by itself already (the crash this is about):
        # kill the one running now, once its replacement has started.
        if receiver._respawning is not None:
            await receiver._respawning
        before = receiver.respawns
        assert receiver._transport is not None
        with contextlib.suppress(ProcessLookupError):  # it may have just ended by itself: counted once
            os.kill(receiver._transport.get_pid(), signal.SIGKILL)
        await asyncio.sleep(0.3)
        await _send(src_ts, receiver)
        await asyncio.sleep(0.3)
        await receiver.kill()

    asyncio.run(main())
    assert receiver.respawns >= before + 1  # the second caller's end may end it by itself too
    assert watch.connections_seen == 2, receiver.track.publishes
    assert watch.video_frames >= 140
