"""The RTMP handshake, server side: C0 C1 -> S0 S1 S2 -> C2, simple or FP9 digest ("complex") form.

A Flash Player 9+ style client puts an HMAC-SHA256 digest inside C1 at an offset computed from four
bytes of C1 itself, in one of two layouts (digest block first at byte 8, or key block first with
the digest block at byte 772).  Such a client checks that S1 carries a server digest and that S2
ends with a signature keyed on its own digest; a simple client just wants C1 echoed in S2.  We
answer in kind: digest if C1's digest verifies at either offset, else the simple echo.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from collections.abc import Callable
from enum import Enum

from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.errors import LocalProtocolError, ProtocolError

RTMP_VERSION = 3
HANDSHAKE_SIZE = 1536
DIGEST_SIZE = 32

_GENUINE_FP = b"Genuine Adobe Flash Player 001"
_GENUINE_FMS = b"Genuine Adobe Flash Media Server 001"
_KEY_TAIL = bytes.fromhex("F0EEC24A8068BEE82E00D0D1029E7E576EEC5D2D29806FAB93B8E636CFEB31AE")
CLIENT_PARTIAL_KEY = _GENUINE_FP
CLIENT_FULL_KEY = _GENUINE_FP + _KEY_TAIL
SERVER_PARTIAL_KEY = _GENUINE_FMS
SERVER_FULL_KEY = _GENUINE_FMS + _KEY_TAIL

# What we report as our version in S1 bytes 4..7 (any non-zero value tells FP9 clients "digest").
SERVER_VERSION = bytes([0x0D, 0x0E, 0x0A, 0x0D])

DIGEST_BASES = (8, 772)
"""Start of the digest block in the two C1 layouts (scheme 0: 8, scheme 1: 772)."""


def digest_offset(packet: bytes, base: int) -> int:
    """Where the 32-byte digest sits when its block starts at `base` (the four offset bytes first)."""
    return (sum(packet[base : base + 4]) % 728) + base + 4


def compute_digest(packet: bytes, offset: int, key: bytes) -> bytes:
    """HMAC-SHA256 over the 1536-byte packet with the 32 digest bytes at `offset` left out."""
    message = packet[:offset] + packet[offset + DIGEST_SIZE :]
    return hmac.new(key, message, hashlib.sha256).digest()


def find_client_digest(c1: bytes) -> bytes | None:
    """The client's digest if it verifies in either layout, else None."""
    for base in (772, 8):  # the order nginx-rtmp and SRS try them
        offset = digest_offset(c1, base)
        expected = compute_digest(c1, offset, CLIENT_PARTIAL_KEY)
        if hmac.compare_digest(expected, c1[offset : offset + DIGEST_SIZE]):
            return c1[offset : offset + DIGEST_SIZE]
    return None


def make_digest_packet(head: bytes, random_bytes: bytes, key: bytes, base: int = 8) -> bytes:
    """A 1536-byte C1/S1 with `head` (8 bytes) and a digest at the `base` layout's offset."""
    packet = bytearray(head + random_bytes[: HANDSHAKE_SIZE - 8])
    offset = digest_offset(bytes(packet), base)
    packet[offset : offset + DIGEST_SIZE] = compute_digest(bytes(packet), offset, key)
    return bytes(packet)


def make_digest_response(peer_digest: bytes, random_bytes: bytes, full_key: bytes) -> bytes:
    """S2 (or C2) for the digest form: random bytes ending in a signature keyed on the peer's digest."""
    body = random_bytes[: HANDSHAKE_SIZE - DIGEST_SIZE]
    key = hmac.new(full_key, peer_digest, hashlib.sha256).digest()
    return body + hmac.new(key, body, hashlib.sha256).digest()


class HandshakeState(Enum):
    """Where the server handshake is."""

    WAIT_C0C1 = "wait C0+C1"
    WAIT_C2 = "wait C2"
    DONE = "done"


class ServerHandshake:
    """Owns the server side of one handshake; reads from a shared buffer, leaves the rest to chunks.

    `random_source` is injected so tests can make S1/S2 deterministic.
    """

    def __init__(self, *, epoch_ms: int = 0, random_source: Callable[[int], bytes] = os.urandom) -> None:
        self.state = HandshakeState.WAIT_C0C1
        self.digest_form = False
        """True once C1 carried a valid FP9 digest and we answered in that form."""
        self._epoch_ms = epoch_ms
        self._random = random_source

    def receive(self, buffer: ReceiveBuffer) -> bytes:
        """Consume what the handshake needs from `buffer`; returns bytes to send (maybe empty)."""
        if self.state is HandshakeState.WAIT_C0C1:
            if len(buffer) < 1 + HANDSHAKE_SIZE:
                # Refuse a wrong version as soon as the first byte is there, not 1536 bytes later.
                first = buffer.peek(1)
                if first is not None:
                    self._check_version(first[0])
                return b""
            self._check_version(buffer.consume(1)[0])
            c1 = buffer.consume(HANDSHAKE_SIZE)
            self.state = HandshakeState.WAIT_C2
            return bytes([RTMP_VERSION]) + self._answer(c1)
        if self.state is HandshakeState.WAIT_C2:
            if len(buffer) < HANDSHAKE_SIZE:
                return b""
            # C2 is not checked: many encoders send junk there, and it proves nothing to us.
            buffer.consume(HANDSHAKE_SIZE)
            self.state = HandshakeState.DONE
            return b""
        raise LocalProtocolError("handshake already done")

    @staticmethod
    def _check_version(version: int) -> None:
        if version != RTMP_VERSION:
            # 6 and 8 are RTMPE (encrypted); anything else is not RTMP at all.
            raise ProtocolError(f"unsupported RTMP version byte {version}")

    def _answer(self, c1: bytes) -> bytes:
        head = struct.pack(">I", self._epoch_ms & 0xFFFFFFFF)
        client_digest = find_client_digest(c1) if c1[4:8] != b"\x00\x00\x00\x00" else None
        if client_digest is None:
            s1 = head + b"\x00\x00\x00\x00" + self._random(HANDSHAKE_SIZE - 8)
            return s1 + c1
        self.digest_form = True
        s1 = make_digest_packet(head + SERVER_VERSION, self._random(HANDSHAKE_SIZE - 8), SERVER_PARTIAL_KEY)
        s2 = make_digest_response(client_digest, self._random(HANDSHAKE_SIZE), SERVER_FULL_KEY)
        return s1 + s2
