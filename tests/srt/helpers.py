"""Test media for tests/srt/test_mpegts.py: an MPEG-TS test pattern through the shared generator."""

from __future__ import annotations

from pathlib import Path

from tests.support import Clip, encode


def make_ts(path: Path, *, seconds: float = 3.0, codec: str = "libx264", size: str = "320x240") -> Path:
    """An MPEG-TS test file: testsrc2 video (GOP 30) + sine AAC audio lasting one second longer.

    The audio-only tail is on purpose: ffmpeg as an SRT caller closes without linger, so the last
    few kilobytes it writes never leave it; they must not be video, whose hashes the tests compare.
    """
    return encode(Clip(container="mpegts", seconds=seconds, size=size, codec=codec, sample_rate=48000,
                       audio_tail_seconds=1.0), path)
