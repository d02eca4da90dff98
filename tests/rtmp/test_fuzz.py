"""Fuzz the sans-I/O core: only ProtocolError may escape, and buffers stay under their caps."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.rtmp.chunks import ChunkLimits
from relay.rtmp.errors import ProtocolError
from relay.rtmp.session import ServerSession, SessionConfig
from tests.rtmp.sessions import drain, handshake, publishing_session_bytes

CONFIG = SessionConfig(
    chunk_limits=ChunkLimits(
        max_chunk_size_bytes=4096, max_message_bytes=20_000, max_chunk_streams=8, max_partial_bytes=30_000
    ),
    max_buffered_bytes=8192,
)
FEED_BYTES = 4096
VALID = publishing_session_bytes()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run(data: bytes, splits: list[int]) -> None:
    """Feed `data` cut at `splits` like the server does; assert the bounds after every step."""
    session = ServerSession(CONFIG)
    cuts = sorted({0, len(data), *(s % (len(data) + 1) for s in splits)})
    pieces = []
    for start, end in itertools.pairwise(cuts):
        pieces += [data[i : min(end, i + FEED_BYTES)] for i in range(start, end, FEED_BYTES)]
    try:
        for piece in pieces:
            session.receive_data(piece)
            drain(session)
            session.data_to_send()
            assert session.buffered_bytes <= CONFIG.max_buffered_bytes + CONFIG.chunk_limits.max_partial_bytes
            assert session._reader.partial_bytes <= CONFIG.chunk_limits.max_partial_bytes
            assert session._reader.chunk_stream_count <= CONFIG.chunk_limits.max_chunk_streams
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=5000), st.lists(st.integers(0, 10_000), max_size=5))
def test_random_bytes(data: bytes, splits: list[int]) -> None:
    run(data, splits)


@FUZZ
@given(st.binary(max_size=5000), st.lists(st.integers(0, 10_000), max_size=5))
def test_random_bytes_after_a_valid_handshake(data: bytes, splits: list[int]) -> None:
    run(handshake() + data, splits)


@st.composite
def mutated_session(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 8))):
        # Mostly after the handshake (3073 bytes), where the chunk and command layers live.
        low = 0 if draw(st.integers(0, 9)) == 0 else min(3073, len(data) - 1)
        position = draw(st.integers(low, len(data) - 1))
        action = draw(st.sampled_from(["flip", "set", "insert", "delete", "duplicate"]))
        if action == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x03, 0xC3, 0x11, 0x0A]))
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=16))
        elif action == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            data[position:position] = data[position : position + draw(st.integers(1, 64))]
    return bytes(data)


@FUZZ
@given(mutated_session(), st.lists(st.integers(0, 10_000), max_size=5))
def test_mutated_valid_sessions(data: bytes, splits: list[int]) -> None:
    run(data, splits)


def test_the_valid_session_itself_passes() -> None:
    run(VALID, [])
