"""The relay's SRT caller against a real SRT listener (ffmpeg): what its thread does while nothing flows."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from relay.srt.caller import CallerConfig, CallerEnd
from relay.srt.libsrt import SockOpt
from tests.support import Receiver
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
