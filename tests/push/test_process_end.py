"""A push that is behind when its stream ends still delivers what was queued before EOF."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from relay.hub.clock import LoopClock
from relay.hub.events import HubSettings
from relay.hub.hub import Hub
from relay.ingest.gate import EndReason, SourceType
from relay.media.packets import ContainerFormat
from relay.push.process import FfmpegProcess
from tests.hub.helpers import audio, config_packets, video

pytestmark = pytest.mark.integration

SLOW_READER = """
import sys, time
total = 0
while True:
    chunk = sys.stdin.buffer.read(4096)
    if not chunk:
        break
    total += len(chunk)
    time.sleep(0.002)
open(sys.argv[1], "w").write(str(total))
"""


async def test_queued_media_reaches_ffmpeg_when_the_stream_ends(tmp_path: Path) -> None:
    hub = Hub(1, HubSettings(), LoopClock(), lambda event: None)
    session = hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
    for packet in config_packets():
        session.write(packet)
    session.write(video(0, key=True, size=2000))
    subscriber = hub.subscribe()
    for n in range(1, 150):  # ~600 KB queued: the slow reader needs ~0.3 s for it
        session.write(video(n * 33, size=4000))
        session.write(audio(n * 33))
    session.close(EndReason.UNPUBLISH)  # the encoder is done; the subscriber has its tail queued
    assert subscriber.end_cause is not None and subscriber.queued_bytes > 500_000
    queued = subscriber.queued_bytes

    script = tmp_path / "slow_reader.py"
    script.write_text(SLOW_READER)
    received = tmp_path / "received"
    process = FfmpegProcess(
        [sys.executable, str(script), str(received)],
        subscriber,
        [],
        on_progress=lambda progress: None,
        on_input_end=lambda cause: None,
        log_prefix="restream test",
    )
    await process.start()
    result = await process.stop(5.0)  # what the supervisor does when the stream ends
    assert result.returncode == 0  # it ended on EOF by itself, no SIGINT needed
    assert int(received.read_text()) >= queued  # header, GOP and every queued packet
