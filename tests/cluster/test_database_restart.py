"""PostgreSQL restarted while a node pushes: shorter than the lease, the push rides through untouched and
renewals resume; new publishers are refused as `database_unavailable` while it is down. The log says so in lines,
not tracebacks (asyncpg's pool wrote one at every reconnection try)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import aiohttp
import pytest

from api.server import Server
from relay.supervisor.states import PushState
from tests.conftest import ApiClient, service_settings
from tests.support import ADMIN_KEY
from tests.support.polling import wait_for
from tests.support.postgres import PostgresServer, why_no_postgres
from tests.support.publishers import Publisher, pattern_publish_argv
from tests.support.receivers import Receiver

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def test_a_database_restart_shorter_than_the_lease_leaves_the_pushes_running(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if (reason := why_no_postgres()) is not None:
        pytest.skip(reason)
    database = PostgresServer()
    try:
        await asyncio.to_thread(database.start)
        dsn = await asyncio.to_thread(database.create_database)
        settings = service_settings(
            tmp_path,
            database_url=dsn,
            node_id="a",
            # Long enough that the outage below (stop, a refused publisher's whole ffmpeg run, start) stays
            # shorter than the lease even on a loaded box: past it the node must stop (by design).
            lease_seconds=20.0,
            lease_renew_seconds=0.5,
            lease_margin_seconds=1.5,
        )
        caplog.set_level(logging.INFO)
        node = Server(settings)
        await node.start()
        try:
            async with aiohttp.ClientSession() as session, Receiver(tmp_path / "dest.flv") as receiver:
                api = ApiClient(session, f"http://127.0.0.1:{node.ports.http}", ADMIN_KEY)
                _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "show"})
                body = {"restream": {"stream_id": stream["id"], "uri": receiver.uri(), "name": "dest"}}
                _, restream, _ = await api.call("POST", "/streaming/restreams", body)
                supervisor = node.engine.supervisor
                async with Publisher(pattern_publish_argv(stream["push_url"], 60)):

                    async def pushing() -> bool:
                        status = supervisor.status(restream["id"])
                        return status.state is PushState.RUNNING and status.frames > 25

                    await wait_for(pushing, 15, "pushing")
                    assert node.cluster is not None
                    ownership = node.cluster.ownership

                    _, second, _ = await api.call("POST", "/streaming/streams", {"name": "other"})
                    await asyncio.to_thread(database.stop)
                    refused = Publisher(pattern_publish_argv(second["push_url"], 5))
                    async with refused:
                        code, _ = await refused.wait(within=15)
                    assert code != 0
                    assert node.engine.admission.refusals[("rtmp", "database_unavailable")] >= 1
                    await asyncio.to_thread(database.start)
                    renewed = ownership.renewals

                    async def renewing() -> bool:
                        return ownership.renewals > renewed + 1

                    await wait_for(renewing, 8, "renewals resumed")
                    frames = supervisor.status(restream["id"]).frames
                    await asyncio.sleep(1.0)
                    status = supervisor.status(restream["id"])
                    assert status.state is PushState.RUNNING and status.restarts == 0
                    assert status.frames > frames, "the push stopped moving"
                    assert node.engine.is_live(stream["id"]) and receiver.running

                    pool_lines = [r for r in caplog.records if r.name == "asyncpg.pool"]
                    assert all(r.exc_info is None and "\n" not in r.getMessage() for r in pool_lines)
                    tracebacks = [r.getMessage() for r in caplog.records if r.exc_info is not None]
                    assert tracebacks == [], tracebacks
        finally:
            await node.close()
    finally:
        database.cleanup()
