"""A node started before its PostgreSQL (docker compose starts both at once; a machine reboots): it keeps
trying for RELAY_DATABASE_WAIT_SECONDS with one log line a try, then serves; past that time it exits with one
line, its password in no output."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from api.server import Server
from tests.conftest import ApiClient, service_settings
from tests.support import ADMIN_KEY, ROOT, RelayProcess
from tests.support.postgres import PostgresServer, why_no_postgres

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def stopped_database() -> Iterator[tuple[PostgresServer, str]]:
    """A PostgreSQL with a database created, then stopped; and that database's DSN."""
    if (reason := why_no_postgres()) is not None:
        pytest.skip(reason)
    database = PostgresServer()
    try:
        database.start()
        dsn = database.create_database()
        database.stop()
        yield database, dsn
    finally:
        database.cleanup()


async def test_a_node_waits_for_a_database_that_comes_up_after_it(
    tmp_path: Path, stopped_database: tuple[PostgresServer, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    database, dsn = stopped_database
    node = Server(service_settings(tmp_path, database_url=dsn, node_id="a", database_wait_seconds=60.0))
    starting = asyncio.create_task(node.start())
    try:
        await asyncio.sleep(2.0)
        assert not starting.done(), "the node gave up (or started) without its database"
        tries = [r for r in caplog.records if "cannot reach the database" in r.getMessage()]
        assert len(tries) >= 2, caplog.text  # 0.5 s, then 1 s apart
        assert all("trying again for" in r.getMessage() and r.exc_info is None for r in tries)
        await asyncio.to_thread(database.start)
        await asyncio.wait_for(starting, 15)
        async with aiohttp.ClientSession() as session:
            api = ApiClient(session, f"http://127.0.0.1:{node.ports.http}", ADMIN_KEY)
            status, created, _ = await api.call("POST", "/streaming/streams", {"name": "after the wait"})
            assert status == 200, created
            _, listed, _ = await api.call("GET", "/streaming/streams")
            assert [s["name"] for s in listed] == ["after the wait"]
        assert [r.getMessage() for r in caplog.records if r.exc_info is not None] == []
    finally:
        if not starting.done():
            starting.cancel()
        await asyncio.gather(starting, return_exceptions=True)
        await node.close()


def test_a_node_whose_database_stays_away_exits_with_one_line(
    tmp_path: Path, stopped_database: tuple[PostgresServer, str]
) -> None:
    _, dsn = stopped_database
    password = "pw-never-shown-7c1e"
    with_password = dsn.replace("@", f":{password}@", 1)
    relay = RelayProcess(
        tmp_path / "data",
        env_extra={"RELAY_DATABASE_URL": with_password, "RELAY_DATABASE_WAIT_SECONDS": "2", "RELAY_NODE_ID": "a"},
    )
    began = time.monotonic()
    finished = subprocess.run(
        [sys.executable, "-m", "api", "serve"], env=relay.env(), capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    took = time.monotonic() - began
    output = finished.stdout + finished.stderr
    assert finished.returncode == 1, output
    assert 2.0 <= took < 30, took
    assert password not in output and "Traceback" not in output, output
    [last] = [line for line in output.splitlines() if "cannot start" in line]
    assert "cannot reach the database postgresql://127.0.0.1:" in last, last
    assert sum("trying again for" in line for line in output.splitlines()) >= 2, output
