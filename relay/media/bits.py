"""The bits of a NAL unit's payload: emulation prevention removed, read MSB first with Exp-Golomb codes.

What the H.264 and HEVC parameter-set parsers (relay.media.sps) read with; no I/O, bounded by its input.
"""

from __future__ import annotations


class BitstreamError(Exception):
    """A header or parameter set ended early or holds an impossible value."""


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00) from a NAL unit."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes; raises `BitstreamError` past the end."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self._pos = 0

    def bits(self, n: int) -> int:
        """Read an n-bit unsigned integer."""
        if n == 0:
            return 0
        if self._pos + n > self._bits:
            raise BitstreamError("read past the end of a parameter set")
        self._pos += n
        return (self._value >> (self._bits - self._pos)) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        """Skip n bits."""
        if self._pos + n > self._bits:
            raise BitstreamError("skip past the end of a parameter set")
        self._pos += n

    def ue(self) -> int:
        """Unsigned Exp-Golomb."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """Signed Exp-Golomb."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)
