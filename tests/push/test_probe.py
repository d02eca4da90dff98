"""The push's probe without a video decoder (`-codec_whitelist`, relay/push/command.py): what ffmpeg
writes must not change by a byte, and the decoders it refuses on purpose are not errors of the push."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from relay.media.packets import ContainerFormat
from relay.push.command import CommandSettings, build_command
from relay.push.progress import classify_error
from tests.support import FFMPEG
from tests.support.media import Clip, MediaCache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

CLIPS = {
    "48 kHz AAC": Clip(seconds=2.0, size="640x360", sample_rate=48000, bframes=2),
    "44.1 kHz AAC": Clip(seconds=2.0),
    "no audio": Clip(seconds=2.0, audio_kbps=None),
    "HEVC (enhanced RTMP)": Clip(seconds=2.0, codec="libx265", sample_rate=48000),
}


def push_to_file(source: Path, output: Path, settings: CommandSettings) -> list[str]:
    """The push's real command for an FLV stream whose codec is not known yet (as when a push starts with
    the stream), its output a file instead of the destination; returns ffmpeg's log lines."""
    argv = build_command(FFMPEG, "rtmp://127.0.0.1/live/k", ContainerFormat.FLV, video_codec=None, settings=settings)
    args = argv.argv
    at = args.index("-protocol_whitelist")
    args = [*args[:at], *args[at + 2 : -1], "-y", str(output)]
    done = subprocess.run(args, input=source.read_bytes(), capture_output=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stderr.decode(errors="replace").splitlines()


@pytest.mark.parametrize("name", list(CLIPS))
def test_probing_without_a_video_decoder_changes_no_byte(name: str, media_cache: MediaCache, tmp_path: Path) -> None:
    source = media_cache.clip(CLIPS[name])
    plain, lean = tmp_path / "plain.flv", tmp_path / "lean.flv"
    push_to_file(source, plain, CommandSettings(probe_decoders=None))
    lines = push_to_file(source, lean, CommandSettings())
    assert any("not on whitelist" in line for line in lines), "the probe did not skip the video decoder"
    assert lean.read_bytes() == plain.read_bytes()
    assert [line for line in lines if classify_error(line) is not None] == []


def test_only_flv_with_a_checked_video_codec_skips_decoding() -> None:
    # The codec is usually not known yet when a push starts with the stream (None): FLV's video codecs
    # are then H.264 or, through enhanced RTMP, HEVC; both checked above.
    def whitelisted(container: ContainerFormat, codec: str | None) -> bool:
        argv = build_command("ffmpeg", "srt://h:9000", container, video_codec=codec).argv
        return "-codec_whitelist" in argv[: argv.index("-i")]

    assert all(whitelisted(ContainerFormat.FLV, codec) for codec in (None, "h264", "AVC1", "hevc"))
    assert not whitelisted(ContainerFormat.FLV, "av1") and not whitelisted(ContainerFormat.FLV, "vp6")
    assert not whitelisted(ContainerFormat.MPEGTS, "h264") and not whitelisted(ContainerFormat.MPEGTS, None)
