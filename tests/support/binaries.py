"""Where the external programs the tests drive are, resolved once (None: not installed, the test skips)."""

from __future__ import annotations

import shutil
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
"""The static ffmpeg of the imageio-ffmpeg package: the one the relay pushes with, and every test's default."""

SYSTEM_FFMPEG = "/usr/bin/ffmpeg" if Path("/usr/bin/ffmpeg").exists() else None
"""Debian's ffmpeg (shared libraries, another version): a second real-world publisher."""

FFPROBE = shutil.which("ffprobe") or "ffprobe"
"""The system's ffprobe (imageio-ffmpeg ships no ffprobe)."""

GST_LAUNCH = shutil.which("gst-launch-1.0")
SRT_LIVE_TRANSMIT = shutil.which("srt-live-transmit")
