"""MpegTsReader on TS made at test time by ffmpeg, on hostile input, and under hypothesis."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.media.mpegts import MpegTsReader, TsStreamInfo
from relay.media.packets import MediaKind, MediaPacket
from relay.media.psi import crc32_mpeg2
from tests.support import Clip, encode

MAX_HOLD = 64


def make_ts(path: Path, *, seconds: float = 3.0, codec: str = "libx264", size: str = "320x240") -> Path:
    """An MPEG-TS test file: testsrc2 video (GOP 30) + sine AAC audio lasting one second longer.

    The audio-only tail is on purpose: ffmpeg as an SRT caller closes without linger, so the last
    few kilobytes it writes never leave it; they must not be video, whose hashes the tests compare.
    """
    return encode(
        Clip(container="mpegts", seconds=seconds, size=size, codec=codec, sample_rate=48000, audio_tail_seconds=1.0),
        path,
    )


@pytest.fixture(scope="module")
def hevc_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_ts(tmp_path_factory.mktemp("hevc") / "hevc.ts", seconds=2.0, codec="libx265", size="426x240")


def read_all(data: bytes, chunk: int) -> tuple[list[MediaPacket], MpegTsReader]:
    reader = MpegTsReader(max_hold_packets=MAX_HOLD)
    out: list[MediaPacket] = []
    for i in range(0, len(data), chunk):
        out += reader.feed(data[i : i + chunk], i // 1000)
        assert reader.buffered_bytes <= 2 * 188 + MAX_HOLD * 188 + chunk
    out += reader.flush(0)
    return out, reader


def keyframe_offsets(packets: list[MediaPacket]) -> list[int]:
    offsets, pos = [], 0
    for p in packets:
        if p.keyframe:
            offsets.append(pos)
        pos += len(p.payload)
    return offsets


def strip_random_access_indicator(data: bytes) -> bytes:
    out = bytearray(data)
    for i in range(0, len(out), 188):
        if out[i + 3] & 0x20 and out[i + 4] > 0:
            out[i + 5] &= ~0x40 & 0xFF
    return bytes(out)


def pid_of(ts: bytes) -> int:
    return ((ts[1] & 0x1F) << 8) | ts[2]


@pytest.mark.integration  # needs encoder output (ffmpeg)
@pytest.mark.parametrize("chunk", [1316, 1456, 188, 1, 100_000])
def test_packets_cover_the_input_in_order(src_ts: Path, chunk: int) -> None:
    data = src_ts.read_bytes()
    packets, reader = read_all(data, chunk)
    assert b"".join(p.payload for p in packets) == data
    assert all(len(p.payload) % 188 == 0 for p in packets)
    assert reader.skipped_bytes == 0
    # Every MediaPacket is one PID; PAT/PMT are config data, video and audio are what the PMT says.
    for p in packets:
        pids = {pid_of(p.payload[i : i + 188]) for i in range(0, len(p.payload), 188)}
        assert len(pids) == 1
        pid = pids.pop()
        if pid in (0, 0x1000):
            assert p.config and p.kind is MediaKind.DATA
        elif pid == 0x100:
            assert p.kind is MediaKind.VIDEO
        elif pid == 0x101:
            assert p.kind is MediaKind.AUDIO
    assert len(keyframe_offsets(packets)) == 3  # 3 s at 25 fps with GOP 30: frames 0, 30, 60


@pytest.mark.integration  # needs encoder output (ffmpeg)
def test_keyframes_start_with_the_pes_and_match_the_encoder(src_ts: Path) -> None:
    packets, _ = read_all(src_ts.read_bytes(), 1316)
    for p in packets:
        if p.keyframe:
            assert p.kind is MediaKind.VIDEO
            assert p.payload[1] & 0x40  # payload_unit_start_indicator: the PES begins here
            assert p.payload[3] & 0x20 and p.payload[5] & 0x40  # ffmpeg set random_access_indicator


@pytest.mark.integration  # needs encoder output (ffmpeg)
@pytest.mark.parametrize("which", ["h264", "hevc"])
def test_nal_scan_finds_the_same_keyframes_without_the_indicator(which: str, src_ts: Path, hevc_ts: Path) -> None:
    data = (src_ts if which == "h264" else hevc_ts).read_bytes()
    with_rai, _ = read_all(data, 1316)
    stripped = strip_random_access_indicator(data)
    without_rai, _ = read_all(stripped, 1316)
    assert b"".join(p.payload for p in without_rai) == stripped
    assert keyframe_offsets(without_rai) == keyframe_offsets(with_rai)
    assert len(keyframe_offsets(with_rai)) >= 2


@pytest.mark.integration  # needs encoder output (ffmpeg)
def test_stream_info_h264(src_ts: Path) -> None:
    _, reader = read_all(src_ts.read_bytes(), 1316)
    assert reader.info == TsStreamInfo(
        video_codec="h264", audio_codec="aac", width=320, height=240, frame_rate=25.0, video_pid=256,
        audio_pids=(257,),
    )  # fmt: skip
    assert reader.take_info() == reader.info
    assert reader.take_info() is None  # only changes are reported


@pytest.mark.integration  # needs encoder output (ffmpeg)
def test_stream_info_hevc(hevc_ts: Path) -> None:
    _, reader = read_all(hevc_ts.read_bytes(), 1316)
    info = reader.info
    assert (info.video_codec, info.width, info.height, info.frame_rate) == ("hevc", 426, 240, 25.0)


@pytest.mark.integration  # needs encoder output (ffmpeg)
def test_resyncs_after_garbage(src_ts: Path) -> None:
    data = src_ts.read_bytes()
    cut = 188 * 40
    noisy = b"\x47junk\x00" + data[:cut] + b"\x47\x47garbage" + data[cut:]
    packets, reader = read_all(noisy, 1316)
    assert b"".join(p.payload for p in packets) == data
    assert reader.skipped_bytes == 6 + 9


def test_crc32_mpeg2_check_value() -> None:
    assert crc32_mpeg2(b"123456789") == 0x0376E6E7


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=3000), max_size=8))
def test_fuzz_random_bytes(chunks: list[bytes]) -> None:
    reader = MpegTsReader(max_hold_packets=MAX_HOLD)
    total = 0
    for i, chunk in enumerate(chunks):
        total += sum(len(p.payload) for p in reader.feed(chunk, i))
        assert reader.buffered_bytes <= 2 * 188 + MAX_HOLD * 188 + len(chunk)
    total += sum(len(p.payload) for p in reader.flush(0))
    assert total + reader.skipped_bytes + reader.buffered_bytes == sum(len(c) for c in chunks)


@pytest.fixture(scope="module")
def src_sample(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_ts(tmp_path_factory.mktemp("sample") / "s.ts", seconds=1.0).read_bytes()[: 188 * 400]


@pytest.mark.integration  # needs encoder output (ffmpeg)
@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), flips=st.integers(1, 200), chunk=st.integers(1, 4000))
def test_fuzz_mutated_real_stream(src_sample: bytes, seed: int, flips: int, chunk: int) -> None:
    rng = random.Random(seed)
    data = bytearray(src_sample)
    for _ in range(flips):  # corrupt headers, PSI, PES and SPS bytes alike
        data[rng.randrange(len(data))] = rng.randrange(256)
    read_all(bytes(data), chunk)
