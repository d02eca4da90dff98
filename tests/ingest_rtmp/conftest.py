from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.ingest.tls import load_server_context, write_self_signed
from tests.ingest_rtmp.helpers import IMAGEIO_FFMPEG, RecordingGate, make_sample

STREAM_ID = "12"
TOKEN = "s3cr3t-t0ken"


@pytest.fixture(scope="session")
def sample_flv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_sample(IMAGEIO_FFMPEG, tmp_path_factory.mktemp("media") / "sample.flv")


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
async def rtmps_server(gate: RecordingGate, settings: RtmpServerSettings,
                       tls_context: ssl.SSLContext) -> AsyncIterator[RtmpServer]:
    async with RtmpServer(gate, settings, tls_context) as server:
        yield server
