"""A publisher that ends normally: its SRT destination gets (nearly) every video frame, like an RTMP one.

ffmpeg's libsrt socket is non-blocking, so libsrt never transmits the packets queued right before
`srt_close` (`-linger` or not): whatever the push's ffmpeg still holds when its stdin ends is lost.
Without `-max_interleave_delta 1` an SRT-ingested stream lost its last 7 video frames of 120 (the video
waited for a later audio PES); with it only the last PES, which the MPEG-TS demuxer completes at EOF.

An ffmpeg SRT *publisher* loses its own tail the same way: on a loaded machine the relay received up to
four 1316-byte messages fewer (the last video PES cut short) and the RTMP destination 119 frames. So the
SRT publisher here is ffmpeg writing MPEG-TS into the relay's own caller, which delivers its tail: what
the test judges is the relay's end (its drain of libsrt's buffer, the pushes' EOF), not ffmpeg's close.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.destinations import parse_destination
from relay.srt.caller import CallerConfig
from tests.support import (
    FFMPEG,
    Clip,
    MediaCache,
    RelayProcess,
    ffmpeg_publish_argv,
    framemd5,
    free_port,
    listener_argv,
)
from tests.support.srt_caller import PipedCaller

pytestmark = pytest.mark.integration

FRAMES = 120
SRT_TAIL = 2
"""At most the last video PES of an MPEG-TS source (complete only at EOF) and one cut short."""
CLIP = Clip(seconds=4.0, rate=30, gop=30, bframes=0, audio_kbps=None)
"""120 video frames; the audio ends with the video (no audio-only tail to shield the last video packets)."""


def video_frames(path: Path) -> int:
    return len(framemd5(path, check=False))


@pytest.fixture(scope="module")
def clips(media_cache: MediaCache) -> dict[str, Path]:
    flv = media_cache.clip(CLIP)
    ts = media_cache.remux(flv, "mpegts")
    assert video_frames(flv) == FRAMES
    return {"rtmp": flv, "srt": ts}


@pytest.fixture
def relay(tmp_path: Path) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()


def _reap(proc: subprocess.Popen[bytes], within: float) -> int:
    try:
        return proc.wait(timeout=within)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=5)


def _publish_through_a_tail_keeping_caller(ts: Path, push_url_srt: str) -> None:
    """ffmpeg sends `ts` in real time into the relay's SRT caller, which publishes it to `push_url_srt` and,
    at the end of the pipe, waits until the relay has acknowledged every message before it closes."""
    caller = PipedCaller(CallerConfig.from_destination(parse_destination(push_url_srt)))
    caller.start()
    try:
        argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(ts)]
        argv += ["-c", "copy", "-f", "mpegts", "pipe:1"]
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=caller.write_fd) as ffmpeg:
            caller.close_pipe()  # ffmpeg holds the write end now: its exit is the end of the stream
            assert ffmpeg.wait(timeout=30) == 0
        assert caller.ended.wait(timeout=15), "the caller did not end after its pipe did"
        assert caller.ends[0].connected and caller.ends[0].error is None, caller.ends[0]
    finally:
        caller.stop()


@pytest.mark.parametrize("ingest", ["rtmp", "srt"])
def test_srt_destination_gets_the_tail_on_a_clean_end(
    relay: RelayProcess, clips: dict[str, Path], tmp_path: Path, ingest: str
) -> None:
    stream = relay.api("POST", "/streaming/streams", {"name": "end"}).body
    srt_port, rtmp_port = free_port(socket.SOCK_DGRAM), free_port()
    srt_out, rtmp_out = tmp_path / "srt.ts", tmp_path / "rtmp.flv"
    receivers = [
        subprocess.Popen(
            listener_argv(f"srt://127.0.0.1:{srt_port}?mode=listener", srt_out, "mpegts"), stdin=subprocess.DEVNULL
        ),
        subprocess.Popen(
            listener_argv(f"rtmp://127.0.0.1:{rtmp_port}/live/k", rtmp_out, "flv"), stdin=subprocess.DEVNULL
        ),
    ]
    publisher: subprocess.Popen[bytes] | None = None
    try:
        time.sleep(0.3)
        for uri in (f"srt://127.0.0.1:{srt_port}?mode=caller", f"rtmp://127.0.0.1:{rtmp_port}/live/k"):
            assert relay.api(
                "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"], "active": True}}
            ).status in (200, 201)
        if ingest == "rtmp":
            publisher = subprocess.Popen(
                ffmpeg_publish_argv(clips["rtmp"], stream["push_url"]), stdin=subprocess.DEVNULL
            )
            assert publisher.wait(timeout=30) == 0
        else:
            _publish_through_a_tail_keeping_caller(clips["srt"], stream["push_url_srt"])
        # The SRT receiver notices the end at its peer idle timeout (~5 s after the push's close).
        for receiver in receivers:
            _reap(receiver, 15)
    finally:
        for proc in [*receivers, *([publisher] if publisher else [])]:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=5)
    assert video_frames(rtmp_out) == FRAMES
    got = video_frames(srt_out)
    assert FRAMES - SRT_TAIL <= got <= FRAMES, f"SRT destination got {got} of {FRAMES} video frames"
