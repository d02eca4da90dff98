"""The source clip (encoded once, cached) and what its packets look like at each kind of destination."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.receivers import digest, ts_video_packets
from relay.media.flv import is_video_config
from tests.support import Clip, MediaCache

CLIP_SECONDS = 20


@dataclass(frozen=True)
class Reference:
    """Digests of the clip's video packets: as FLV tag bodies (what RTMP carries) and as the PES payloads
    of the same ffmpeg's `-c copy -f mpegts` remux (what an SRT destination should receive)."""

    flv_video: frozenset[bytes]
    ts_video: frozenset[bytes]
    ts_to_flv: dict[bytes, bytes]
    """PES digest -> digest of the same frame as an FLV tag body (matched by order)."""
    video_packets: int
    tsflv_video: frozenset[bytes] = frozenset()
    """The TS remux taken back to FLV by the same ffmpeg: what an RTMP destination of an SRT-ingested stream
    should receive (Annex B -> AVCC, parameter sets in band)."""
    tsflv_to_ts: dict[bytes, bytes] = field(default_factory=dict)
    """FLV-of-TS digest -> PES digest of the same frame (matched by order)."""


def encode_clip(directory: Path, seconds: int = CLIP_SECONDS, size: str = "1920x1080", video_kbps: int = 4500) -> Path:
    """H.264 (libx264 veryfast, CBR-ish, 30 fps, keyint 60, noise so that frames cost what a camera's do)
    + AAC 128k stereo, as FLV; kept in `directory` across runs, by its parameters."""
    clip = Clip(
        seconds=seconds,
        size=size,
        rate=30,
        gop=60,
        fixed_gop=True,
        preset="veryfast",
        video_kbps=video_kbps,
        constant_bitrate=True,
        noise=True,
        sample_rate=48000,
        audio_kbps=128,
        audio_channels=2,
    )
    return MediaCache(directory).clip(clip)


def flv_video_tags(data: bytes) -> list[bytes]:
    """Bodies of the video tags of a whole FLV file."""
    pos = int.from_bytes(data[5:9], "big") + 4
    out = []
    while pos + 11 <= len(data):
        tag_type = data[pos] & 0x1F
        size = int.from_bytes(data[pos + 1 : pos + 4], "big")
        body = data[pos + 11 : pos + 11 + size]
        if tag_type == 9:
            out.append(body)
        pos += 11 + size + 4
    return out


def build_reference(ffmpeg: str, clip: Path) -> Reference:
    tags = flv_video_tags(clip.read_bytes())
    # Coded frames only: not the sequence header, not the AVC end-of-sequence tag (ffmpeg drops it on read).
    frames = [t for t in tags if not is_video_config(t) and not (len(t) > 1 and t[0] & 0x0F == 7 and t[1] == 2)]
    ts = subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-i",
            str(clip),
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "mpegts",
            "pipe:1",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    pes = [payload for _, payload in ts_video_packets(ts)]
    ts_to_flv = {}
    if len(pes) == len(frames):
        ts_to_flv = {digest(p): digest(f) for p, f in zip(pes, frames, strict=True)}
    back = subprocess.run(
        [
            ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "mpegts",
            "-i",
            "pipe:0",
            "-map",
            "0",
            "-c",
            "copy",
            "-f",
            "flv",
            "pipe:1",
        ],
        input=ts,
        check=True,
        capture_output=True,
        timeout=120,
    ).stdout
    back_frames = [
        t
        for t in flv_video_tags(back)
        if not is_video_config(t) and not (len(t) > 1 and t[0] & 0x0F == 7 and t[1] == 2)
    ]
    tsflv_to_ts = {}
    if len(back_frames) == len(pes):
        tsflv_to_ts = {digest(f): digest(p) for f, p in zip(back_frames, pes, strict=True)}
    return Reference(
        frozenset(digest(t) for t in tags),
        frozenset(digest(p) for p in pes),
        ts_to_flv,
        len(frames),
        frozenset(digest(f) for f in back_frames),
        tsflv_to_ts,
    )
