"""Real publishers (ffmpeg builds, GStreamer) over RTMP and RTMPS; the relay's FLV must be packet-identical."""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path

import pytest

from relay.ingest.gate import EndReason
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.support import GST_LAUNCH, SYSTEM_FFMPEG, ffmpeg_publish_argv, framemd5, gst_publish_argv, run_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PUBLISHERS = ["imageio-ffmpeg", "system-ffmpeg", "gstreamer"]


def _argv(publisher: str, sample: Path, port: int, tls: bool) -> list[str]:
    scheme = "rtmps" if tls else "rtmp"
    url = f"{scheme}://127.0.0.1:{port}/live/{STREAM_ID}?{TOKEN}"
    if publisher == "imageio-ffmpeg":
        return ffmpeg_publish_argv(sample, url, realtime=False)
    if publisher == "system-ffmpeg":
        if SYSTEM_FFMPEG is None:
            pytest.skip("no /usr/bin/ffmpeg on this machine")
        return ffmpeg_publish_argv(sample, url, ffmpeg=SYSTEM_FFMPEG, realtime=False)
    if GST_LAUNCH is None:
        pytest.skip("gst-launch-1.0 (GStreamer tools) is not installed")
    return gst_publish_argv(sample, port=port, stream=f"{STREAM_ID}?{TOKEN}", tls=tls)


def assert_same_packets(source: Path, relayed: Path) -> None:
    for stream in ("v", "a"):
        expected = framemd5(source, stream)
        got = framemd5(relayed, stream)
        assert expected, f"source has no {stream} packets"
        assert got == expected, f"{stream} packets differ ({len(got)} relayed vs {len(expected)} sent)"


@pytest.mark.parametrize("tls", [False, True], ids=["rtmp", "rtmps"])
@pytest.mark.parametrize("publisher", PUBLISHERS)
async def test_publisher_end_to_end(
    publisher: str,
    tls: bool,
    sample_flv: Path,
    gate: RecordingGate,
    settings: RtmpServerSettings,
    tls_context: ssl.SSLContext,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="relay.ingest.rtmp")
    async with RtmpServer(gate, settings, tls_context if tls else None) as server:
        argv = _argv(publisher, sample_flv, server.port, tls)
        code, stderr = await run_process(argv, limit_seconds=30)
        assert code == 0, stderr
        sinks = gate.sinks.get(STREAM_ID, [])
        assert len(sinks) == 1, f"publish did not reach the gate: {stderr}"
        sink = sinks[0]
        await asyncio.wait_for(sink.closed.wait(), 10)
    assert "publishing" in caplog.text  # NetStream.Publish.Start was sent
    assert sink.close_reasons == [EndReason.UNPUBLISH]
    info = sink.infos[-1]
    assert (info.video_width, info.video_height) == (320, 240)
    assert info.frame_rate == pytest.approx(25)
    assert info.video_codec == "h264" and info.audio_codec == "aac"
    assert_same_packets(sample_flv, sink.path)
    assert TOKEN not in caplog.text
