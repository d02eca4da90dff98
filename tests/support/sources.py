"""Sources the relay pulls from (`pull: true`): a clip served over RTMP, SRT or HLS by real programs.

    rtmp_source_argv   ffmpeg as an RTMP server (`-listen 1`) playing a clip to the first client
    srt_source_argv    ffmpeg as an SRT listener sending a clip (MPEG-TS) to the first caller
    write_hls          a clip cut into an HLS playlist (MPEG-TS segments) in a directory
    http_server_argv   Python's http.server serving a directory on 127.0.0.1

Each command runs as a `Publisher` (tests/support/publishers.py): its own session, always reaped.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.binaries import FFMPEG


def rtmp_source_argv(clip: Path, port: int, path: str = "live/source") -> list[str]:
    """ffmpeg waiting for one RTMP client on 127.0.0.1:`port`, then playing `clip` (FLV) to it in real time."""
    return [
        *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy"),
        *("-f", "flv", "-listen", "1", "-timeout", "30", f"rtmp://127.0.0.1:{port}/{path}"),
    ]


def srt_source_argv(clip: Path, port: int) -> list[str]:
    """ffmpeg waiting for one SRT caller on 127.0.0.1:`port`, then sending `clip` (MPEG-TS) in real time."""
    return [
        *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-re", "-i", str(clip), "-c", "copy"),
        *("-omit_video_pes_length", "0", "-f", "mpegts"),
        f"srt://127.0.0.1:{port}?mode=listener&latency=120000&listen_timeout=30000000",
    ]


def write_hls(clip: Path, directory: Path, segment_seconds: float = 1.0) -> Path:
    """`clip` cut into MPEG-TS segments of about `segment_seconds` with a complete (VOD) playlist; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    playlist = directory / "index.m3u8"
    subprocess.run(
        [
            *(FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-i", str(clip), "-c", "copy"),
            *("-f", "hls", "-hls_time", f"{segment_seconds:g}", "-hls_list_size", "0"),
            *("-hls_playlist_type", "vod", str(playlist)),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return playlist


def http_server_argv(directory: Path, port: int) -> list[str]:
    """Python's http.server serving `directory` on 127.0.0.1:`port`."""
    return [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(directory), str(port)]
