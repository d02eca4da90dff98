"""Fixtures shared by every suite, and the guard that keeps unmarked tests free of subprocesses.
Area-specific fixtures live in each folder's own conftest.py; helpers in tests/support."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.server import Server
from relay.config import Settings
from tests.support import ADMIN_KEY, Clip, MediaCache, RelayProcess
from tests.support.guard import MARK_IT, refuse_subprocesses
from tests.support.postgres import PostgresServer, why_no_postgres

QUICK_GRACE_SECONDS = 1.0
SERVICE_STORE = os.environ.get("RELAY_TEST_STORE", "sqlite")
"""`postgres`: the `service` fixture's relay keeps its definitions in a fresh PostgreSQL database (run by
hand, e.g. `RELAY_TEST_STORE=postgres pytest tests/api`; `make test` runs the store contract on both)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if SERVICE_STORE == "postgres":  # the PostgreSQL server is a process: those tests start one
        for item in items:
            if "service" in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.integration)


def _guarded(item: pytest.Item) -> Generator[None, object, object]:
    """Run one phase of a test; if the test is not marked integration, with process creation refused."""
    if item.get_closest_marker("integration") is not None:
        return (yield)
    with refuse_subprocesses(item.nodeid) as attempts:
        try:
            return (yield)
        finally:
            if attempts:
                pytest.fail(
                    f"{item.nodeid} tried to start {len(attempts)} subprocess(es), first {attempts[0]}: {MARK_IT}",
                    pytrace=False,
                )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Generator[None, object, object]:
    return (yield from _guarded(item))


@pytest.fixture(scope="session")
def media_cache(tmp_path_factory: pytest.TempPathFactory) -> MediaCache:
    """Test clips, each made once per run (on first use) and shared by every suite that asks for it."""
    return MediaCache(tmp_path_factory.mktemp("media"))


SRT_SAMPLE = Clip(container="mpegts", seconds=3.0, sample_rate=48000, audio_tail_seconds=1.0)
"""75 frames of H.264 (GOP 30) + AAC in MPEG-TS, the audio one second longer: an ffmpeg SRT caller loses the
last kilobytes it writes when it closes, and those must not be video, whose packets the tests compare."""


@pytest.fixture(scope="session")
def src_ts(media_cache: MediaCache) -> Path:
    """The SRT sample: for the SRT ingest (tests/ingest) and the MPEG-TS reader (tests/srt/test_mpegts.py)."""
    return media_cache.clip(SRT_SAMPLE)


def _started_postgres() -> Iterator[PostgresServer]:
    """A started server, removed afterwards; skips with the reason where none can run here."""
    reason = why_no_postgres()
    if reason is not None:
        pytest.skip(reason)
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server for the whole run (started on first use; tests that use it are `integration`).

    Skips with the reason where it cannot run. Tests that restart or kill a server make their own."""
    yield from _started_postgres()


@pytest.fixture
def own_postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server of this test's own, for tests that stop, start or kill it."""
    yield from _started_postgres()


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """A fresh, empty database on the run's PostgreSQL server, for this test alone."""
    return postgres_server.create_database()


@pytest.fixture
async def quick_service(tmp_path: Path) -> AsyncIterator[Server]:
    """The relay and its API in this test's loop; a dropped publisher ends the stream after 1 s."""
    relay_service = Server(service_settings(tmp_path, publisher_grace_seconds=QUICK_GRACE_SECONDS))
    await relay_service.start()
    try:
        yield relay_service
    finally:
        await relay_service.close()


@pytest.fixture
def relay_process(tmp_path: Path) -> Iterator[RelayProcess]:
    """A started `restream-relay serve` subprocess with its own data directory."""
    process = RelayProcess(tmp_path / "data").start()
    try:
        yield process
    finally:
        process.stop()


def service_settings(tmp_path: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": tmp_path / "data",
        "media_bind": "127.0.0.1",
        "api_bind": "127.0.0.1",
        "http_port": 0,
        "rtmp_port": 0,
        "rtmps_port": 0,
        "srt_port": 0,
        "api_key": ADMIN_KEY,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def service_overrides() -> dict[str, object]:
    """Settings the `service` fixture changes; a test module overrides this fixture to set its own."""
    return {}


@pytest.fixture
async def service(
    request: pytest.FixtureRequest, tmp_path: Path, service_overrides: dict[str, object]
) -> AsyncIterator[Server]:
    """The relay and its API running in this test's event loop (on SQLite, or see SERVICE_STORE)."""
    if SERVICE_STORE == "postgres":
        service_overrides = {"database_url": request.getfixturevalue("postgres_dsn"), **service_overrides}
    relay_service = Server(service_settings(tmp_path, **service_overrides))
    await relay_service.start()
    try:
        yield relay_service
    finally:
        await relay_service.close()


class ApiClient:
    """A small JSON client bound to one relay and one key."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, key: str | None) -> None:
        self.session = session
        self.base_url = base_url
        self.key = key

    def as_key(self, key: str | None) -> ApiClient:
        return ApiClient(self.session, self.base_url, key)

    async def call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        """Status, JSON body (None when empty) and headers; never raises on an HTTP error status."""
        all_headers = dict(headers or {})
        if self.key is not None:
            all_headers.setdefault("Authorization", f"APIKey {self.key}")
        kwargs: dict[str, object] = {"headers": all_headers}
        if raw is not None:
            kwargs["data"] = raw
            all_headers.setdefault("Content-Type", "application/json")
        elif body is not None:
            kwargs["json"] = body
        async with self.session.request(method, self.base_url + path, **kwargs) as response:  # type: ignore[arg-type]
            text = await response.text()
            return response.status, (json.loads(text) if text else None), dict(response.headers)


@pytest.fixture
async def api(service: Server) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as session:
        yield ApiClient(session, f"http://127.0.0.1:{service.ports.http}", ADMIN_KEY)
