from __future__ import annotations

import hashlib
import hmac

import pytest

from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.errors import ProtocolError
from relay.rtmp.handshake import (
    CLIENT_FULL_KEY,
    DIGEST_SIZE,
    HANDSHAKE_SIZE,
    SERVER_FULL_KEY,
    SERVER_PARTIAL_KEY,
    HandshakeState,
    ServerHandshake,
    compute_digest,
    digest_offset,
    find_client_digest,
)
from tests.rtmp.wire import digest_c1, digest_c2, simple_c1


def _fixed_random(size: int) -> bytes:
    return bytes(i & 0xFF for i in range(size))


def _run(data: bytes, step: int | None = None) -> tuple[ServerHandshake, bytes, ReceiveBuffer]:
    handshake = ServerHandshake(random_source=_fixed_random)
    buffer = ReceiveBuffer(1 << 20)
    out = b""
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in chunks:
        buffer.append(piece)
        while handshake.state is not HandshakeState.DONE:
            before = handshake.state
            out += handshake.receive(buffer)
            if handshake.state is before:
                break
    return handshake, out, buffer


def test_simple_handshake_echoes_c1_and_keeps_leftovers() -> None:
    c1 = simple_c1()
    handshake, out, buffer = _run(b"\x03" + c1 + simple_c1(9) + b"LEFTOVER")
    assert handshake.state is HandshakeState.DONE and not handshake.digest_form
    assert len(out) == 1 + 2 * HANDSHAKE_SIZE
    assert out[0] == 3
    assert out[5:9] == b"\x00\x00\x00\x00"  # simple S1: zero version
    assert out[1 + HANDSHAKE_SIZE :] == c1  # S2 echoes C1
    assert bytes(buffer.view()) == b"LEFTOVER"  # for the chunk reader


def test_byte_by_byte_gives_the_same_answer_and_nothing_early() -> None:
    data = b"\x03" + simple_c1() + simple_c1(9)
    whole = _run(data)[1]
    handshake = ServerHandshake(random_source=_fixed_random)
    buffer = ReceiveBuffer(1 << 20)
    out = b""
    for index in range(len(data)):
        buffer.append(data[index : index + 1])
        out += handshake.receive(buffer)
        if index < HANDSHAKE_SIZE:  # C0+C1 are 1537 bytes: S0S1S2 only after the last one
            assert out == b""
        if handshake.state is HandshakeState.DONE:
            assert index == len(data) - 1
            break
    assert out == whole


@pytest.mark.parametrize("base", [8, 772])
def test_digest_handshake_at_either_offset(base: int) -> None:
    c1 = digest_c1(base)
    client_digest = find_client_digest(c1)
    assert client_digest is not None
    handshake, out, _ = _run(b"\x03" + c1)
    waiting = handshake.state  # not handshake.state itself: mypy would keep it narrowed past receive()
    assert waiting is HandshakeState.WAIT_C2 and handshake.digest_form
    s1 = out[1 : 1 + HANDSHAKE_SIZE]
    s2 = out[1 + HANDSHAKE_SIZE :]
    assert s1[4:8] != b"\x00\x00\x00\x00"
    # The client checks S1's digest with the server's partial key (digest-first layout).
    offset = digest_offset(s1, 8)
    assert compute_digest(s1, offset, SERVER_PARTIAL_KEY) == s1[offset : offset + DIGEST_SIZE]
    # ... and S2's signature keyed on its own C1 digest.
    key = hmac.new(SERVER_FULL_KEY, client_digest, hashlib.sha256).digest()
    assert hmac.new(key, s2[:-DIGEST_SIZE], hashlib.sha256).digest() == s2[-DIGEST_SIZE:]
    # Finishing with a proper FP9 C2 completes the handshake.
    buffer = ReceiveBuffer(1 << 20)
    buffer.append(digest_c2(s1[offset : offset + DIGEST_SIZE]))
    assert handshake.receive(buffer) == b""
    assert handshake.state is HandshakeState.DONE


def test_a_version_without_valid_digest_falls_back_to_simple() -> None:
    c1 = bytearray(digest_c1(8))
    c1[100] ^= 0xFF  # breaks the digest (byte 100 is outside the offset bytes)
    assert find_client_digest(bytes(c1)) is None
    handshake, out, _ = _run(b"\x03" + bytes(c1))
    assert not handshake.digest_form
    assert out[1 + HANDSHAKE_SIZE :] == bytes(c1)


def test_client_digest_key_is_the_partial_player_key() -> None:
    c1 = digest_c1(772)
    offset = digest_offset(c1, 772)
    assert compute_digest(c1, offset, CLIENT_FULL_KEY) != c1[offset : offset + DIGEST_SIZE]


@pytest.mark.parametrize("version", [0, 6, 8, ord("G")])
def test_wrong_version_is_refused_on_the_first_byte(version: int) -> None:
    handshake = ServerHandshake()
    buffer = ReceiveBuffer(1 << 20)
    buffer.append(bytes([version]))
    with pytest.raises(ProtocolError, match="version"):
        handshake.receive(buffer)
