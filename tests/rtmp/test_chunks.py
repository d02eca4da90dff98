from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.chunks import (
    ChunkLimits,
    ChunkReader,
    ChunkWriter,
    RawMessage,
    encode_basic_header,
    encode_chunk_header,
)
from relay.rtmp.errors import ProtocolError


def read_all(
    data: bytes, *, step: int | None = None, reader: ChunkReader | None = None, chunk_size: int = 128
) -> list[RawMessage]:
    reader = reader or ChunkReader()
    reader.chunk_size = chunk_size
    buffer = ReceiveBuffer(1 << 24)
    out: list[RawMessage] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        buffer.append(piece)
        while (message := reader.next_message(buffer)) is not None:
            out.append(message)
    return out


def check_all_ways(data: bytes, expected: list[RawMessage], chunk_size: int = 128) -> None:
    """Whole, byte by byte (nothing early), and with trailing bytes of a next header."""
    assert read_all(data, chunk_size=chunk_size) == expected
    assert read_all(data, step=1, chunk_size=chunk_size) == expected
    # Byte by byte, no message may appear before its last byte arrived.
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    buffer = ReceiveBuffer(1 << 24)
    got = 0
    for index in range(len(data)):
        buffer.append(data[index : index + 1])
        while reader.next_message(buffer) is not None:
            got += 1
        if index < len(data) - 1:
            assert got < len(expected) or not expected
    assert got == len(expected)
    trailing = b"\x03\x00"  # a partial type 0 header of the next message
    assert read_all(data + trailing, chunk_size=chunk_size) == expected


def test_type0_single_chunk() -> None:
    data = bytes.fromhex("03 000064 000005 14 01000000") + b"hello"
    check_all_ways(data, [RawMessage(3, 20, 1, 100, b"hello")])


def test_all_four_header_types() -> None:
    data = (
        bytes.fromhex("04 0003e8 000003 09 01000000")
        + b"abc"  # fmt 0: ts 1000, len 3, video, stream 1
        + bytes.fromhex("44 000028 000002 08")
        + b"de"  # fmt 1: +40, len 2, audio (same stream)
        + bytes.fromhex("84 000014")
        + b"fg"  # fmt 2: +20, same length and type
        + bytes.fromhex("c4")
        + b"hi"  # fmt 3: repeat the +20 delta
    )
    check_all_ways(
        data,
        [
            RawMessage(4, 9, 1, 1000, b"abc"),
            RawMessage(4, 8, 1, 1040, b"de"),
            RawMessage(4, 8, 1, 1060, b"fg"),
            RawMessage(4, 8, 1, 1080, b"hi"),
        ],
    )


def test_type3_after_type0_repeats_its_timestamp_as_delta() -> None:
    data = bytes.fromhex("05 00000a 000001 09 01000000") + b"a" + b"\xc5" + b"b"
    assert read_all(data) == [RawMessage(5, 9, 1, 10, b"a"), RawMessage(5, 9, 1, 20, b"b")]


def test_continuation_chunks_and_interleaving() -> None:
    body_a = bytes(range(200))
    body_b = b"B" * 10
    data = (
        bytes.fromhex("06 000000 0000c8 09 01000000")
        + body_a[:128]
        + bytes.fromhex("07 000005 00000a 08 01000000")
        + body_b  # another stream in between
        + b"\xc6"
        + body_a[128:]
    )
    check_all_ways(data, [RawMessage(7, 8, 1, 5, body_b), RawMessage(6, 9, 1, 0, body_a)])


def _chunked(body: bytes, csid: int, cuts: list[tuple[int, bytes]], chunk_size: int = 128) -> bytes:
    """`body` as one video message on `csid` in chunks of `chunk_size`, with `cuts` (chunk index, bytes)
    put in front of the given continuation chunks."""
    header = encode_chunk_header(0, csid, timestamp=0, length=len(body), type_id=9, stream_id=1)
    out = header + body[:chunk_size]
    extra = dict(cuts)
    for index, start in enumerate(range(chunk_size, len(body), chunk_size), start=1):
        out += extra.get(index, b"") + encode_basic_header(3, csid) + body[start : start + chunk_size]
    return out


def test_a_run_of_continuations_gives_the_same_message_whole_or_cut() -> None:
    # 40 chunks of 128 bytes and a short last one, as ffmpeg or GStreamer publish at 128: read whole (the run
    # taken at once), byte by byte (chunk by chunk) and cut everywhere in between.
    body = bytes(i % 251 for i in range(40 * 128 + 77))
    data = _chunked(body, 6, [])
    expected = [RawMessage(6, 9, 1, 0, body)]
    check_all_ways(data, expected)
    for step in (2, 127, 128, 129, 130, 300, 1000, 4096):
        assert read_all(data, step=step) == expected
    assert type(read_all(data)[0].payload) is bytes


def test_another_chunk_stream_inside_a_run_of_continuations() -> None:
    # Another stream's whole message, and a ping's, between two continuations of the message in progress.
    body = bytes(i % 253 for i in range(10 * 128))
    audio = encode_chunk_header(0, 4, timestamp=3, length=5, type_id=8, stream_id=1) + b"AAAAA"
    control = encode_chunk_header(0, 2, length=6, type_id=4) + b"\x00\x06\x00\x00\x00\x01"
    data = _chunked(body, 6, [(3, audio), (7, control)])
    ping = RawMessage(2, 4, 0, 0, b"\x00\x06\x00\x00\x00\x01")
    check_all_ways(data, [RawMessage(4, 8, 1, 3, b"AAAAA"), ping, RawMessage(6, 9, 1, 0, body)])


def test_a_run_stops_at_a_chunk_stream_past_63_or_an_extended_timestamp() -> None:
    # Continuations with a two-byte basic header (csid 64+), and with the extended timestamp repeated: the
    # chunk-by-chunk path reads them, the result is the same.
    body = bytes(range(256)) * 8
    assert read_all(_chunked(body, 70, [])) == [RawMessage(70, 9, 1, 0, body)]
    writer = ChunkWriter(128)
    data = writer.write(6, 9, 1, 0x1000000, body)
    assert read_all(data) == [RawMessage(6, 9, 1, 0x1000000, body)]
    assert read_all(data, step=1000) == [RawMessage(6, 9, 1, 0x1000000, body)]


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from([1, 2, 3, 128, 129, 4096]),
    st.lists(
        st.tuples(st.sampled_from([3, 4, 6, 63, 64, 400]), st.integers(0, 9000), st.sampled_from([0, 40, 0x1000000])),
        min_size=1,
        max_size=6,
    ),
    st.lists(st.integers(1, 5000), min_size=1, max_size=20),
)
def test_any_messages_in_any_reads(chunk_size: int, messages: list[tuple[int, int, int]], reads: list[int]) -> None:
    writer = ChunkWriter(chunk_size)
    expected = [
        RawMessage(csid, 9, 1, ts, bytes((i * 7 + csid) % 256 for i in range(size))) for csid, size, ts in messages
    ]
    data = b"".join(writer.write(m.chunk_stream_id, 9, 1, m.timestamp, m.payload) for m in expected)
    reader = ChunkReader()
    reader.chunk_size = chunk_size
    buffer = ReceiveBuffer(1 << 24)
    got: list[RawMessage] = []
    pos = 0
    for size in reads * (len(data) // sum(reads) + 1):
        buffer.append(data[pos : pos + size])
        pos += size
        while (message := reader.next_message(buffer)) is not None:
            got.append(message)
    assert got == expected
    assert not buffer and not reader.in_message


@pytest.mark.parametrize("csid", [2, 63, 64, 319, 320, 65599])
def test_basic_header_forms(csid: int) -> None:
    data = encode_chunk_header(0, csid, timestamp=7, length=1, type_id=8, stream_id=1) + b"x"
    assert len(encode_basic_header(0, csid)) == (1 if csid < 64 else 2 if csid < 320 else 3)
    check_all_ways(data, [RawMessage(csid, 8, 1, 7, b"x")])


def test_extended_timestamp_and_the_type3_rule() -> None:
    ts = 0x01000000
    body = b"x" * 200
    # Writer: type 0 with extended field, then a type 3 continuation repeating the 4 bytes.
    data = ChunkWriter(128).write(4, 9, 1, ts, body)
    assert data[1:4] == b"\xff\xff\xff"
    assert data[12:16] == struct.pack(">I", ts)
    cont = 16 + 128
    assert data[cont] == 0xC4 and data[cont + 1 : cont + 5] == struct.pack(">I", ts)
    check_all_ways(data, [RawMessage(4, 9, 1, ts, body)])
    # A new message by type 3 after an extended header also carries the field (as the delta).
    nxt = encode_chunk_header(3, 4, timestamp=ts, extended=True) + b"y" * 200
    messages = read_all(data + nxt[:5] + b"y" * 128 + nxt[:5] + b"y" * 72)
    assert messages[1] == RawMessage(4, 9, 1, 2 * ts, b"y" * 200)


def test_extended_delta_in_type1() -> None:
    data = (
        bytes.fromhex("04 000000 000001 09 01000000")
        + b"a"
        + bytes.fromhex("44 ffffff 000001 09")
        + struct.pack(">I", 0x01000005)
        + b"b"
    )
    assert read_all(data)[1].timestamp == 0x01000005


def test_timestamp_wrap_keeps_increasing() -> None:
    near = 0xFFFFFFF0
    data = (
        encode_chunk_header(0, 4, timestamp=near, length=1, type_id=9, stream_id=1)
        + b"a"
        + encode_chunk_header(0, 4, timestamp=0x10, length=1, type_id=9, stream_id=1)
        + b"b"
        + encode_chunk_header(2, 4, timestamp=0x20)
        + b"c"
    )
    stamps = [m.timestamp for m in read_all(data)]
    assert stamps == [near, (1 << 32) + 0x10, (1 << 32) + 0x30]
    # A small step back (B-frame-like reordering across streams) is not a wrap.
    back = (
        encode_chunk_header(0, 4, timestamp=1000, length=1, type_id=9, stream_id=1)
        + b"a"
        + encode_chunk_header(0, 4, timestamp=990, length=1, type_id=9, stream_id=1)
        + b"b"
    )
    assert [m.timestamp for m in read_all(back)] == [1000, 990]


def test_larger_chunk_size_and_zero_length_message() -> None:
    body = bytes(range(256)) * 20
    data = ChunkWriter(4096).write(6, 9, 1, 0, body) + ChunkWriter().write(3, 20, 0, 0, b"")
    check_all_ways(data, [RawMessage(6, 9, 1, 0, body), RawMessage(3, 20, 0, 0, b"")], chunk_size=4096)


def test_set_chunk_size_bounds() -> None:
    reader = ChunkReader(ChunkLimits(max_chunk_size_bytes=65536))
    reader.set_chunk_size(65536)
    for bad in (0, -1, 65537, 0x7FFFFFFF):
        with pytest.raises(ProtocolError):
            reader.set_chunk_size(bad)


def test_abort_drops_the_partial_message() -> None:
    reader = ChunkReader()
    buffer = ReceiveBuffer(1 << 20)
    buffer.append(bytes.fromhex("06 000000 0000c8 09 01000000") + b"a" * 128)
    assert reader.next_message(buffer) is None
    assert reader.partial_bytes == 128
    reader.abort(6)
    assert reader.partial_bytes == 0
    buffer.append(bytes.fromhex("06 000000 000001 09 01000000") + b"z")
    assert reader.next_message(buffer) == RawMessage(6, 9, 1, 0, b"z")


def test_limits() -> None:
    with pytest.raises(ProtocolError, match="over the limit"):
        read_all(bytes.fromhex("04 000000 100000 09 01000000"), reader=ChunkReader(ChunkLimits(max_message_bytes=1000)))
    many = b"".join(encode_chunk_header(0, csid, length=1, type_id=9) + b"x" for csid in range(2, 20))
    with pytest.raises(ProtocolError, match="too many chunk streams"):
        read_all(many, reader=ChunkReader(ChunkLimits(max_chunk_streams=8)))
    partial = b"".join(encode_chunk_header(0, csid, length=1000, type_id=9) + b"x" * 128 for csid in range(2, 6))
    with pytest.raises(ProtocolError, match="partial"):
        read_all(partial, reader=ChunkReader(ChunkLimits(max_partial_bytes=2500)))


def test_a_whole_message_on_a_known_chunk_stream_is_held_to_the_limits() -> None:
    # One chunk, whole in the buffer, on a chunk stream already open: refused as any message over the limit.
    first = ChunkWriter(4096).write(6, 9, 1, 0, b"a")
    big = encode_chunk_header(1, 6, timestamp=40, length=2000, type_id=9) + bytes(2000)
    with pytest.raises(ProtocolError, match="over the limit"):
        read_all(first + big, reader=ChunkReader(ChunkLimits(max_message_bytes=1000)), chunk_size=4096)
    assert read_all(first + big, chunk_size=4096)[1] == RawMessage(6, 9, 1, 40, bytes(2000))


def test_non_type0_on_a_new_chunk_stream_is_refused() -> None:
    with pytest.raises(ProtocolError):
        read_all(b"\xc9")
    with pytest.raises(ProtocolError):
        read_all(bytes.fromhex("49 000000 000001 09"))


def test_a_large_chunk_body_is_taken_as_it_arrives() -> None:
    # The receive buffer never needs to hold a whole chunk, whatever the chunk size.
    reader = ChunkReader()
    reader.chunk_size = 1 << 20
    buffer = ReceiveBuffer(64 * 1024)
    data = ChunkWriter(1 << 20).write(4, 9, 1, 0, b"v" * 500_000)
    got = None
    for start in range(0, len(data), 60_000):
        buffer.append(data[start : start + 60_000])
        got = reader.next_message(buffer) or got
        assert len(buffer) < 64
    assert got is not None and len(got.payload) == 500_000


def test_raise_limits_widens_and_never_narrows() -> None:
    reader = ChunkReader(ChunkLimits(max_message_bytes=1000, max_partial_bytes=1500))
    buffer = ReceiveBuffer(1 << 20)
    buffer.append(encode_chunk_header(0, 4, length=900, type_id=9) + b"a" * 128)
    assert reader.next_message(buffer) is None  # a message begun under the small limits...
    reader.raise_limits(ChunkLimits(max_message_bytes=4000, max_partial_bytes=8000))
    buffer.append(b"".join(encode_chunk_header(3, 4) + b"a" * 128 for _ in range(6)) + encode_chunk_header(3, 4))
    buffer.append(b"a" * 4)
    assert reader.next_message(buffer) == RawMessage(4, 9, 0, 0, b"a" * 900)  # ...completes under the wider ones
    buffer.append(encode_chunk_header(0, 4, length=3000, type_id=9))
    assert reader.next_message(buffer) is None  # over the old bound, within the new one
    reader.raise_limits(ChunkLimits(max_message_bytes=10, max_partial_bytes=10, max_chunk_streams=2))
    assert reader.limits == ChunkLimits(max_message_bytes=4000, max_partial_bytes=8000)  # nothing lowered
