"""The NAL payload bit reader and the TS packet helpers, on literal bytes."""

from __future__ import annotations

import pytest

from relay.media.bits import BitReader, BitstreamError, unescape_rbsp
from relay.media.mpegts import packet_pid, without_continuity


def test_unescape_removes_emulation_prevention_bytes_only() -> None:
    assert unescape_rbsp(b"\x00\x00\x03\x01\x00\x00\x03\x00") == b"\x00\x00\x01\x00\x00\x00"
    assert unescape_rbsp(b"\x00\x03\x00\x00\x03") == b"\x00\x03\x00\x00"
    plain = b"\x67\x42\x00\x1f"
    assert unescape_rbsp(plain) is plain


def test_bits_and_exp_golomb() -> None:
    # 1 | 010 | 011 | 00100 | 00101 | 0000000: ue 0, ue 1, ue 2, se +2, se -2, then seven zero bits
    r = BitReader(bytes([0b10100110, 0b01000010, 0b10000000]))
    assert [r.ue(), r.ue(), r.ue(), r.se(), r.se()] == [0, 1, 2, 2, -2]
    assert r.bits(0) == 0
    r.skip(5)
    with pytest.raises(BitstreamError):
        r.bits(3)


def test_reading_past_the_end_raises() -> None:
    r = BitReader(b"\xff")
    assert r.bits(8) == 0xFF
    with pytest.raises(BitstreamError):
        r.skip(1)
    with pytest.raises(BitstreamError):
        BitReader(b"\x00\x00\x00\x00\x00").ue()  # more than 32 leading zeros


def test_ts_packet_pid_and_continuity() -> None:
    packet = bytes([0x47, 0x41, 0x00, 0x1A]) + bytes(184)
    assert packet_pid(packet) == 0x100
    assert without_continuity(packet) == bytes([0x47, 0x41, 0x00, 0x10]) + bytes(184)
