"""The relay's SRT caller against a real SRT listener (ffmpeg): what its thread does while nothing flows."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from pathlib import Path

import pytest

from relay.srt.caller import CallerConfig, CallerEnd
from relay.srt.libsrt import SockOpt
from tests.support import Receiver, threads_named
from tests.support.srt_caller import PipedCaller

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def test_an_idle_caller_ends_at_once_when_aborted(tmp_path: Path) -> None:
    """With nothing in flight the caller looks at its link only once a second; `abort()` must not wait
    for that: it wakes the thread (what a push's stop or kill relies on)."""
    passphrase = "srt-destination-5ecret"
    async with Receiver(tmp_path / "received.ts", srt=True, key=passphrase) as receiver:
        config = CallerConfig(
            host="127.0.0.1",
            port=receiver.port,
            text_options=((SockOpt.PASSPHRASE, passphrase),),
            int_options=((SockOpt.LATENCY, 120),),
        )
        piped = PipedCaller(config)
        caller = piped.caller
        piped.start()
        try:
            assert await asyncio.to_thread(piped.connected.wait, 10), "the caller did not connect"
            assert threads_named("self", "srt-caller"), "the caller's thread is not named in /proc"
            await asyncio.sleep(1.5)  # idle: past a first sample, the thread sleeps until the next second
            asked = time.monotonic()
            caller.abort()
            assert await asyncio.to_thread(piped.ended.wait, 5), "the caller did not end"
            took = time.monotonic() - asked
        finally:
            piped.stop()
    assert piped.ends == [CallerEnd(error=None, connected=True)]
    assert took < 0.25, f"abort took {took:.3f}s"
    assert not [t for t in threading.enumerate() if t.name == "srt-caller"]


NULL_TS = (b"\x47\x1f\xff\x10" + b"\xff" * 184) * 7
"""Seven MPEG-TS null packets: one message of the caller's."""


@pytest.mark.parametrize("flowing", [True, False], ids=["media-flowing", "pipe-quiet-after"])
async def test_a_destination_killed_mid_stream_ends_the_caller_within_its_peer_idle_timeout(
    tmp_path: Path, flowing: bool
) -> None:
    """A destination that stops answering (killed: no shutdown message) ends the caller once nothing has
    acknowledged its packets for the peer idle timeout, whether ffmpeg's writes go on (the link is judged at
    the thread's reads of the pipe) or stop after one last write (judged when the thread wakes on its own)."""
    idle_ms = 500
    async with Receiver(tmp_path / "received.ts", srt=True, key="srt-destination-5ecret") as receiver:
        config = CallerConfig(
            host="127.0.0.1",
            port=receiver.port,
            text_options=((SockOpt.PASSPHRASE, receiver.key),),
            int_options=((SockOpt.LATENCY, 120),),
            peer_idle_timeout_ms=idle_ms,
        )
        piped = PipedCaller(config)
        piped.start()
        try:
            assert await asyncio.to_thread(piped.connected.wait, 10), "the caller did not connect"
            for _ in range(25):  # half a second of media, acknowledged as it goes
                os.write(piped.write_fd, NULL_TS)
                await asyncio.sleep(0.02)
            assert receiver.proc is not None
            receiver.proc.kill()
            await receiver.proc.wait()
            killed = time.monotonic()
            os.write(piped.write_fd, NULL_TS)  # in flight, never acknowledged
            with contextlib.suppress(BrokenPipeError):  # the caller closes the pipe as it ends
                while flowing and not piped.ended.is_set() and time.monotonic() - killed < 5:
                    os.write(piped.write_fd, NULL_TS)
                    await asyncio.sleep(0.02)
            assert await asyncio.to_thread(piped.ended.wait, 5), "the caller did not notice the destination gone"
            took = time.monotonic() - killed
        finally:
            piped.stop()
    assert len(piped.ends) == 1 and piped.ends[0].connected
    assert piped.ends[0].error == f"srt: connection lost (nothing from the destination for {idle_ms} ms)"
    # The timeout, then up to a check's interval (0.1 s) and its slack after a read (0.1 s) for the silence to be
    # seen and as much for the verdict, and room for a loaded machine; a check skipped for a second (a send
    # read as nothing in flight) is over.
    assert idle_ms / 1000 <= took + 0.05 and took <= idle_ms / 1000 + 0.45, f"ended {took:.3f}s after the kill"
