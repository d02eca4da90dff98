"""A relay process frozen with SIGSTOP past its lease: another node takes the stream over, and when the
frozen one runs again it stops its pushes within one renewal period, before anything else."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import asyncpg
import pytest

from tests.e2e.helpers import push_pids
from tests.support.polling import wait_for
from tests.support.publishers import Publisher, pattern_publish_argv
from tests.support.receivers import Receiver
from tests.support.relay_process import RelayProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

LEASE_SECONDS = 3.0
RENEW_SECONDS = 0.5


def cluster_env(dsn: str, node_id: str) -> dict[str, str]:
    return {
        "RELAY_DATABASE_URL": dsn,
        "RELAY_NODE_ID": node_id,
        "RELAY_LEASE_SECONDS": str(LEASE_SECONDS),
        "RELAY_LEASE_RENEW_SECONDS": str(RENEW_SECONDS),
        "RELAY_LEASE_MARGIN_SECONDS": "1",
        "RELAY_RECONCILE_INTERVAL_SECONDS": "0.5",
        "RELAY_PUBLISHER_GRACE_SECONDS": "1",
    }


async def lease_of(dsn: str, stream_id: int) -> tuple[str, int, bool] | None:
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT node_id, epoch, expires_at > now() AS valid FROM leases WHERE stream_id = $1", stream_id
        )
    finally:
        await connection.close()
    return (row["node_id"], row["epoch"], row["valid"]) if row is not None else None


async def test_a_frozen_node_stops_its_pushes_when_it_resumes(tmp_path: Path, postgres_dsn: str) -> None:
    a = RelayProcess(tmp_path / "a", env_extra=cluster_env(postgres_dsn, "a")).start()
    b = RelayProcess(tmp_path / "b", env_extra=cluster_env(postgres_dsn, "b")).start()
    assert a.process is not None
    frozen = a.process
    try:
        async with Receiver(tmp_path / "dest.flv") as receiver:
            stream = a.api("POST", "/streaming/streams", {"name": "show"}).body
            body = {"restream": {"stream_id": stream["id"], "uri": receiver.uri(), "name": "dest"}}
            restream_id = a.api("POST", "/streaming/restreams", body).body["id"]
            async with Publisher(pattern_publish_argv(stream["push_url"], 60)):

                async def a_pushes() -> bool:
                    status = a.api("GET", f"/streaming/restreams/{restream_id}").body["status"]
                    return bool(status["state"] == "running" and status["frames"] > 0)

                await wait_for(a_pushes, 20, "a pushes")
                pushing = push_pids(frozen.pid, receiver.port)
                assert len(pushing) == 1

                frozen.send_signal(signal.SIGSTOP)
                try:

                    async def expired() -> bool:
                        lease = await lease_of(postgres_dsn, stream["id"])
                        return lease is not None and not lease[2]

                    await wait_for(expired, LEASE_SECONDS + 3, "a's lease expired while it is frozen")
                    b_url = stream["push_url"].replace(f":{a.rtmp_port}/", f":{b.rtmp_port}/")
                    async with Publisher(pattern_publish_argv(b_url, 60)):  # the encoder, through the balancer

                        async def b_owns() -> bool:
                            return await lease_of(postgres_dsn, stream["id"]) == ("b", 2, True)

                        await wait_for(b_owns, 10, "b took the stream over")
                        b_stream = b.api("GET", f"/streaming/streams/{stream['id']}").body
                        assert (b_stream["live"], b_stream["node_id"]) == (True, "b")

                        frozen.send_signal(signal.SIGCONT)
                        resumed = asyncio.get_running_loop().time()

                        async def a_stopped() -> bool:
                            return not push_pids(frozen.pid, receiver.port)

                        await wait_for(a_stopped, RENEW_SECONDS + 3, "a's push stopped after it resumed", every=0.05)
                        took = asyncio.get_running_loop().time() - resumed
                        assert "lost its lease" in a.log()
                        assert await lease_of(postgres_dsn, stream["id"]) == ("b", 2, True)

                        async def a_shows_b() -> bool:
                            seen = a.api("GET", f"/streaming/streams/{stream['id']}").body
                            return bool(seen["live"] and seen["node_id"] == "b")

                        await wait_for(a_shows_b, 10, "a's API shows the stream live on b")
                        print(f"frozen node's push gone {took:.2f} s after SIGCONT")
                finally:
                    if frozen.poll() is None:
                        frozen.send_signal(signal.SIGCONT)
    finally:
        a.stop()
        b.stop()
