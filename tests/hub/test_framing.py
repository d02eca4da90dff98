"""Each framing alone, on literal bytes: the header a joiner gets, the same-configuration check, the rebase."""

from __future__ import annotations

from relay.hub.framing import FlvFraming, Framing, MpegTsFraming, framing_for
from relay.media.flv import flv_header
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from tests.hub.helpers import (
    AUDIO_CONFIG,
    METADATA,
    VIDEO_CONFIG,
    audio,
    config_packets,
    tags,
    ts_packet,
    ts_pat,
    ts_pmt,
    video,
)

# The AAC sequence header as an FLV tag at 0 ms: type 8, size 4, timestamp 0, stream 0, body, back pointer 15.
AUDIO_CONFIG_TAG = b"\x08\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00" + AUDIO_CONFIG + b"\x00\x00\x00\x0f"


def framed(framing: Framing, packet: MediaPacket) -> tuple[bytes, int]:
    """What `frame` gives a packet: its bytes (the parts it appended, joined) and its timestamp out."""
    parts: list[bytes] = []
    ts = framing.frame(packet, parts)
    return b"".join(parts), ts


def test_framing_for_picks_the_class_of_the_container() -> None:
    assert isinstance(framing_for(ContainerFormat.FLV, resume_gap_ms=33), FlvFraming)
    assert isinstance(framing_for(ContainerFormat.MPEGTS, resume_gap_ms=33), MpegTsFraming)


# -- FLV -------------------------------------------------------------------------------------------


def flv(*packets: MediaPacket, resume_gap_ms: int = 33) -> FlvFraming:
    framing = FlvFraming(resume_gap_ms=resume_gap_ms)
    for packet in packets:
        framed(framing, packet)
    return framing


def header_bytes(framing: FlvFraming | MpegTsFraming) -> bytes:
    return b"".join(chunk.data for chunk in framing.header_chunks())


def test_flv_header_before_any_configuration_announces_audio_and_video() -> None:
    assert header_bytes(flv()) == b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00"


def test_flv_header_is_file_header_metadata_then_video_before_audio() -> None:
    framing = flv(MediaPacket(MediaKind.AUDIO, 0, AUDIO_CONFIG, config=True), *config_packets()[:2])
    chunks = framing.header_chunks()
    assert all(c.config and not c.sync for c in chunks)
    got = tags(header_bytes(framing))
    assert [(p.kind, p.payload) for p in got] == [
        (MediaKind.DATA, METADATA),
        (MediaKind.VIDEO, VIDEO_CONFIG),
        (MediaKind.AUDIO, AUDIO_CONFIG),
    ]
    assert chunks[0].data == flv_header(has_audio=True, has_video=True)


def test_flv_audio_only_header_is_literal() -> None:
    framing = flv(MediaPacket(MediaKind.AUDIO, 0, AUDIO_CONFIG, config=True))
    assert header_bytes(framing) == flv_header(has_audio=True, has_video=False) + AUDIO_CONFIG_TAG
    assert header_bytes(framing)[4] == 0x04


def test_flv_frame_makes_a_tag_and_keeps_the_latest_sequence_header() -> None:
    framing = flv()
    assert framed(framing, MediaPacket(MediaKind.AUDIO, 0, AUDIO_CONFIG, config=True)) == (AUDIO_CONFIG_TAG, 0)
    newer = b"\xaf\x00\x11\x90"
    framed(framing, MediaPacket(MediaKind.AUDIO, 40, newer, config=True))
    assert [p.payload for p in tags(header_bytes(framing))] == [newer]


def test_flv_has_video_once_a_video_packet_was_framed() -> None:
    framing = flv()
    framed(framing, audio(0))
    assert not framing.has_video  # no video yet: the hub lets a joiner start on audio
    framed(framing, video(10, key=True))
    assert framing.has_video


def test_flv_timestamps_never_go_back_per_kind() -> None:
    framing = flv()
    assert framed(framing, video(100, key=True))[1] == 100
    assert framed(framing, video(90))[1] == 100
    assert framed(framing, audio(20))[1] == 20  # audio has its own clock


def test_flv_same_configuration_compares_sequence_headers_not_metadata() -> None:
    current = flv(*config_packets())
    same = FlvFraming(resume_gap_ms=33)
    same.keep_configuration(MediaPacket(MediaKind.DATA, 0, METADATA + b"\x00", config=True))
    for packet in config_packets()[1:]:
        same.keep_configuration(packet)
    assert current.same_configuration(same)
    changed = FlvFraming(resume_gap_ms=33)
    for packet in config_packets(video_config=b"\x17\x00\x00\x00\x00\x01\x4d\x00\x1f"):
        changed.keep_configuration(packet)
    assert not current.same_configuration(changed)
    assert not current.same_configuration(MpegTsFraming())


def test_flv_kept_configuration_is_not_video_yet() -> None:
    newcomer = FlvFraming(resume_gap_ms=33)
    for packet in config_packets():
        newcomer.keep_configuration(packet)
    assert not newcomer.has_video and newcomer.ready_to_compare
    assert len(newcomer.header_chunks()) == 4


def test_flv_resume_rebases_after_the_last_timestamp_sent() -> None:
    current = flv(*config_packets(), video(5000, key=True), audio(5010), video(5033))
    newcomer = FlvFraming(resume_gap_ms=33)
    new_metadata = MediaPacket(MediaKind.DATA, 0, METADATA + b"\x01", config=True)
    newcomer.keep_configuration(new_metadata)
    offset = current.resume(newcomer, video(0, key=True))
    assert offset == 5033 + 33 - 0
    assert [framed(current, p)[1] for p in (video(0, key=True), audio(10), video(33))] == [5066, 5076, 5099]
    # The newcomer's onMetaData replaces ours in the header; the sequence headers stay ours.
    assert [p.payload for p in tags(header_bytes(current))] == [new_metadata.payload, VIDEO_CONFIG, AUDIO_CONFIG]


def test_flv_resume_before_any_media_keeps_timestamps() -> None:
    current = flv(*config_packets())
    assert current.resume(FlvFraming(resume_gap_ms=33), video(700, key=True)) == 0
    assert framed(current, video(700, key=True))[1] == 700


# -- MPEG-TS ---------------------------------------------------------------------------------------


def tables(pat_cc: int = 0, pmt_cc: int = 0, stream_type: int = 0x1B) -> MediaPacket:
    return MediaPacket(MediaKind.DATA, 0, ts_pat(pat_cc) + ts_pmt(pmt_cc, stream_type), config=True)


def test_ts_header_is_the_latest_pat_and_pmt_in_first_seen_order() -> None:
    framing = MpegTsFraming()
    assert framing.header_chunks() == [] and not framing.ready_to_compare
    framed(framing, tables())
    framed(framing, MediaPacket(MediaKind.DATA, 40, ts_pat(1), config=True))
    assert header_bytes(framing) == ts_pat(1) + ts_pmt(0)
    assert framing.ready_to_compare
    assert all(c.config and not c.sync for c in framing.header_chunks())


def test_ts_frame_passes_bytes_and_time_unchanged() -> None:
    framing = MpegTsFraming()
    key = MediaPacket(MediaKind.VIDEO, 1234, ts_packet(0x100, 7, b"k", rai=True), keyframe=True)
    assert framed(framing, key) == (key.payload, 1234)
    assert framing.has_video


def test_ts_same_configuration_ignores_continuity_counters_only() -> None:
    current = MpegTsFraming()
    framed(current, tables())
    restarted = MpegTsFraming()
    restarted.keep_configuration(tables(pat_cc=5, pmt_cc=9))
    assert current.same_configuration(restarted)
    hevc = MpegTsFraming()
    hevc.keep_configuration(tables(stream_type=0x24))
    assert not current.same_configuration(hevc)
    assert not current.same_configuration(flv(*config_packets()))


def test_ts_resume_keeps_bytes_and_timestamps() -> None:
    current = MpegTsFraming()
    framed(current, tables())
    newcomer = MpegTsFraming()
    newcomer.keep_configuration(tables(pat_cc=5, pmt_cc=9))
    first = MediaPacket(MediaKind.VIDEO, 3, ts_packet(0x100, 3, b"k2", rai=True), keyframe=True)
    assert current.resume(newcomer, first) == 0
    assert framed(current, first) == (first.payload, 3)
    assert header_bytes(current) == ts_pat(0) + ts_pmt(0)  # the header stays the source's
