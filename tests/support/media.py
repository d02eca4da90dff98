"""Test media: one generator of test-pattern clips, a cache that makes each clip once, and per-packet views.

Every clip is `testsrc2` video with a 440 Hz sine, encoded by the imageio ffmpeg; a `Clip` says how. The
suites ask the session's `MediaCache` (the `media_cache` fixture of tests/conftest.py) for the clips they
need, so that a clip two suites share is encoded once per run; `make bench` keeps its cache across runs.
Packets are compared with `framemd5` (`-c copy`): equal lists mean equal bytes, packet by packet.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.support.binaries import FFMPEG, FFPROBE

EXTENSIONS = {"flv": "flv", "mpegts": "ts"}


@dataclass(frozen=True)
class Clip:
    """How to encode one test clip (H.264 or HEVC + AAC); two equal Clips are the same file in a cache."""

    container: str = "flv"
    """"flv" (what RTMP carries) or "mpegts" (what SRT carries)."""
    seconds: float = 3.0
    size: str = "320x240"
    rate: int = 25
    gop: int = 30
    codec: str = "libx264"
    """libx264 (preset `preset`) or libx265."""
    preset: str = "ultrafast"
    zerolatency: bool = False
    fixed_gop: bool = False
    """A keyframe every `gop` frames exactly (no scene-cut keyframes, no shorter GOP)."""
    bframes: int | None = None
    video_kbps: int | None = None
    constant_bitrate: bool = False
    """Cap the rate at `video_kbps` with a two-second buffer (CBR-ish, as an encoder for live streaming)."""
    noise: bool = False
    """Temporal noise over the pattern: frames as costly to code as a camera's."""
    sample_rate: int = 44100
    audio_kbps: int | None = 64
    audio_channels: int | None = None
    audio_tail_seconds: float = 0.0
    """Audio lasting this much longer than the video. An ffmpeg SRT caller loses the last kilobytes it
    writes when it closes: with an audio-only tail those are not video, whose packets the tests compare."""

    def encode_args(self) -> list[str]:
        """The ffmpeg arguments from the inputs to the muxer (the output path goes after them)."""
        video = f"testsrc2=size={self.size}:rate={self.rate}:duration={self.seconds}"
        if self.noise:
            video += ",noise=alls=6:allf=t"
        audio = f"sine=frequency=440:sample_rate={self.sample_rate}:duration={self.seconds + self.audio_tail_seconds}"
        args = ["-f", "lavfi", "-i", video, "-f", "lavfi", "-i", audio, "-c:v", self.codec, "-g", str(self.gop)]
        if self.fixed_gop:
            args += ["-keyint_min", str(self.gop), "-sc_threshold", "0"]
        if self.bframes is not None:
            args += ["-bf", str(self.bframes)]
        args += ["-pix_fmt", "yuv420p"]
        if self.codec == "libx265":
            args += ["-x265-params", f"log-level=error:keyint={self.gop}"]
        else:
            args += ["-preset", self.preset]
        if self.zerolatency:
            args += ["-tune", "zerolatency"]
        if self.video_kbps:
            args += ["-b:v", f"{self.video_kbps}k"]
            if self.constant_bitrate:
                args += ["-maxrate", f"{self.video_kbps}k", "-bufsize", f"{2 * self.video_kbps}k"]
        args += ["-c:a", "aac"]
        if self.audio_kbps:
            args += ["-b:a", f"{self.audio_kbps}k"]
        if self.audio_channels:
            args += ["-ac", str(self.audio_channels)]
        return [*args, "-f", self.container]


def _ffmpeg(args: list[str], ffmpeg: str = FFMPEG, timeout: float = 300.0) -> None:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y", *args],
        check=True,
        capture_output=True,
        timeout=timeout,
    )


def encode(clip: Clip, path: Path) -> Path:
    """Encode `clip` to `path` (through a temporary name: a killed run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    _ffmpeg([*clip.encode_args(), str(tmp)])
    tmp.rename(path)
    return path


def remux(source: Path, container: str, path: Path, *options: str, ffmpeg: str = FFMPEG) -> Path:
    """`ffmpeg -c copy -f <container>` of `source` (with muxer `options`): what a publisher or a push of
    that container (by that `ffmpeg`) makes of the same packets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    _ffmpeg(["-i", str(source), "-c", "copy", *options, "-f", container, str(tmp)], ffmpeg)
    tmp.rename(path)
    return path


class MediaCache:
    """Clips and remuxes made on first use and kept in `directory`, named by a digest of their recipe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def clip(self, clip: Clip) -> Path:
        path = self._path("clip", clip.encode_args(), clip.container)
        return path if path.exists() else encode(clip, path)

    def remux(self, source: Path, container: str, *options: str) -> Path:
        path = self._path(source.stem, [container, *options], container)
        return path if path.exists() else remux(source, container, path, *options)

    def _path(self, stem: str, recipe: list[str], container: str) -> Path:
        digest = hashlib.sha1(" ".join(recipe).encode()).hexdigest()[:10]
        return self.directory / f"{stem}-{digest}.{EXTENSIONS[container]}"


# --- packets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFrame:
    """One video packet as `-f framemd5` reports it."""

    dts: int
    pts: int
    size: int
    md5: str


def framemd5(path: Path, stream: str = "v", *, bsf: str | None = None, check: bool = True) -> list[str]:
    """The packet lines (index, dts, pts, duration, size, md5) of one stream ("v" or "a"), copied without
    decoding; with check=False an unreadable file gives an empty list instead of an error."""
    argv = [FFMPEG, "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", f"0:{stream}", "-c", "copy"]
    if bsf:
        argv += [f"-bsf:{stream}", bsf]
    out = subprocess.run([*argv, "-f", "framemd5", "-"], check=check, capture_output=True, text=True, timeout=60).stdout
    return [line for line in out.splitlines() if line and not line.startswith("#")]


def video_frames(path: Path, *, bsf: str | None = None) -> list[VideoFrame]:
    """The video packets of a file (`-c copy`): equal md5 lists mean equal video bytes."""
    frames = []
    for line in framemd5(path, bsf=bsf):
        parts = [p.strip() for p in line.split(",")]
        frames.append(VideoFrame(int(parts[1]), int(parts[2]), int(parts[4]), parts[5]))
    return frames


def md5s(path: Path) -> list[str]:
    return [f.md5 for f in video_frames(path)]


def stream_kinds(path: Path) -> list[str]:
    """ "codec,type" of each stream of a file, in index order (ffprobe of the system's ffmpeg)."""
    out = subprocess.run(
        [FFPROBE, "-v", "error", "-show_entries", "stream=index,codec_name,codec_type", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    by_index: dict[int, str] = {}  # MPEG-TS lists each stream twice (also under its program)
    for line in out.splitlines():
        if line.strip():
            index, kind = line.strip().split(",", 1)
            by_index[int(index)] = kind
    return [by_index[i] for i in sorted(by_index)]


def is_contiguous_run(part: list[str], whole: list[str]) -> bool:
    """`part` appears in `whole` as one unbroken run (a late joiner starts on some keyframe)."""
    if not part:
        return False
    for start in range(len(whole) - len(part) + 1):
        if whole[start : start + len(part)] == part:
            return True
    return False
