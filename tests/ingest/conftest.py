"""Fixtures of the ingest servers' tests: a recording gate, RTMP(S) servers on port 0, the RTMP sample."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.ingest.tls import load_server_context, write_self_signed
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.support import Clip, MediaCache

RTMP_SAMPLE = Clip(seconds=3.0, gop=10)
"""A short H.264 + AAC FLV test pattern (small GOP so a late joiner has keyframes to find)."""


@pytest.fixture(scope="session")
def sample_flv(media_cache: MediaCache) -> Path:
    return media_cache.clip(RTMP_SAMPLE)


@pytest.fixture(scope="session")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    cert, key = write_self_signed(tmp_path_factory.mktemp("tls"))
    return load_server_context(cert, key)


@pytest.fixture
def gate(tmp_path: Path) -> RecordingGate:
    return RecordingGate(tmp_path, {STREAM_ID: TOKEN, "13": "other-token"})


@pytest.fixture
def settings() -> RtmpServerSettings:
    return RtmpServerSettings(host="127.0.0.1", port=0, handshake_timeout_seconds=5, idle_timeout_seconds=10)


@pytest.fixture
async def rtmp_server(gate: RecordingGate, settings: RtmpServerSettings) -> AsyncIterator[RtmpServer]:
    async with RtmpServer(gate, settings) as server:
        yield server


@pytest.fixture
async def rtmps_server(
    gate: RecordingGate, settings: RtmpServerSettings, tls_context: ssl.SSLContext
) -> AsyncIterator[RtmpServer]:
    async with RtmpServer(gate, settings, tls_context) as server:
        yield server
