"""The FLV stream on a pull's stdout: tags out whole, whatever the split, nothing early, bad bytes refused."""

from __future__ import annotations

import pytest

from relay.media.flv import FlvFormatError, encode_tag, flv_header
from relay.media.packets import MediaKind
from relay.pull.flv import FlvStreamReader
from relay.rtmp import amf0

METADATA = amf0.encode("onMetaData") + amf0.encode({"width": 640.0, "height": 360.0, "framerate": 30.0})
AVC_CONFIG = bytes([0x17, 0x00, 0, 0, 0]) + b"\x01\x64\x00\x1f\xff"
KEYFRAME = bytes([0x17, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x02\x65\x88"
INTER = bytes([0x27, 0x01, 0, 0, 0]) + b"\x00\x00\x00\x02\x41\x9a"
AAC_CONFIG = bytes([0xAF, 0x00, 0x12, 0x10])
STREAM = (
    flv_header()
    + encode_tag(MediaKind.DATA, 0, METADATA)
    + encode_tag(MediaKind.VIDEO, 0, AVC_CONFIG)
    + encode_tag(MediaKind.AUDIO, 0, AAC_CONFIG)
    + encode_tag(MediaKind.VIDEO, 0, KEYFRAME)
    + encode_tag(MediaKind.VIDEO, 0x01234567, INTER)  # a timestamp past 24 bits
)


def test_whole_stream_gives_every_tag_classified() -> None:
    tags = FlvStreamReader().feed(STREAM)
    kinds = [(t.packet.kind, t.packet.config, t.packet.keyframe) for t in tags]
    assert kinds == [
        (MediaKind.DATA, True, False),
        (MediaKind.VIDEO, True, False),
        (MediaKind.AUDIO, True, False),
        (MediaKind.VIDEO, False, True),
        (MediaKind.VIDEO, False, False),
    ]
    assert tags[0].metadata == {"width": 640.0, "height": 360.0, "framerate": 30.0}
    assert tags[3].packet.payload == KEYFRAME and tags[4].packet.timestamp_ms == 0x01234567


def test_byte_by_byte_gives_the_same_tags_and_none_early() -> None:
    reader = FlvStreamReader()
    tags = []
    for index in range(len(STREAM)):
        tags += reader.feed(STREAM[index : index + 1])
    assert [t.packet for t in tags] == [t.packet for t in FlvStreamReader().feed(STREAM)]
    assert reader.buffered_bytes == 0 and reader.tags == 5


def test_a_partial_tag_is_held_until_complete() -> None:
    reader = FlvStreamReader()
    cut = len(STREAM) - 3
    first = reader.feed(STREAM[:cut])
    assert len(first) == 4 and reader.buffered_bytes > 0
    assert [t.packet.payload for t in reader.feed(STREAM[cut:])] == [INTER]


def test_other_script_data_is_content_not_configuration() -> None:
    cue = amf0.encode("onCuePoint") + amf0.encode({"name": "x"})
    (tag,) = FlvStreamReader().feed(flv_header() + encode_tag(MediaKind.DATA, 5, cue))
    assert tag.metadata is None and not tag.packet.config and tag.packet.payload == cue


@pytest.mark.parametrize(
    "data",
    [
        b"GIF89a" + bytes(20),
        flv_header() + bytes([7]) + bytes(14),  # an unknown tag type
        flv_header() + bytes([0x29]) + bytes(14),  # the encrypted-tag bit
    ],
)
def test_bytes_that_are_not_flv_are_refused(data: bytes) -> None:
    with pytest.raises(FlvFormatError):
        FlvStreamReader().feed(data)


def test_a_tag_over_the_limit_is_refused_before_it_is_buffered() -> None:
    reader = FlvStreamReader(max_tag_bytes=1000)
    header = bytes([9]) + (5000).to_bytes(3, "big") + bytes(7)
    with pytest.raises(FlvFormatError, match="over the limit"):
        reader.feed(flv_header() + header)
