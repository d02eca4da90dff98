"""Two relay nodes (two `Server`s in this process) on one PostgreSQL database: what is written through one
node's API acts on the other node's engine at once. A real encoder publishes to node B; a token reset
and then a deactivation made through node A cut it off on B (the change reached B's engine by NOTIFY)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.server import Server
from tests.conftest import ApiClient, service_settings
from tests.support import ADMIN_KEY, pattern_publisher
from tests.support.polling import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def two_nodes(postgres_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    nodes = [Server(service_settings(tmp_path / name, database_url=postgres_dsn)) for name in ("a", "b")]
    for node in nodes:
        await node.start()
    try:
        async with aiohttp.ClientSession() as session:
            yield (
                ApiClient(session, f"http://127.0.0.1:{nodes[0].ports.http}", ADMIN_KEY),
                ApiClient(session, f"http://127.0.0.1:{nodes[1].ports.http}", ADMIN_KEY),
            )
    finally:
        for node in reversed(nodes):
            await node.close()


async def publishing(api: ApiClient, stream_id: int) -> bool:
    return bool((await api.call("GET", f"/streaming/streams/{stream_id}"))[1]["live"])


async def ended_within(encoder: subprocess.Popen[bytes], seconds: float) -> bool:
    try:
        await asyncio.wait_for(asyncio.to_thread(encoder.wait), seconds)
        return True
    except TimeoutError:
        return False
    finally:
        if encoder.poll() is None:
            encoder.kill()
            encoder.wait()


async def test_writes_through_one_node_cut_off_a_publisher_on_the_other(two_nodes: tuple[ApiClient, ApiClient]) -> None:
    a, b = two_nodes
    _, created, _ = await a.call("POST", "/streaming/streams", {"name": "on two nodes"})
    stream_id = created["id"]
    _, on_b, _ = await b.call("GET", f"/streaming/streams/{stream_id}")  # B's push URL: its own port

    encoder = pattern_publisher(on_b["push_url"], 40)
    await wait_for(lambda: publishing(b, stream_id), within=15, what="the encoder publishes on B")
    started = time.monotonic()
    status, reset, _ = await a.call("POST", f"/streaming/streams/{stream_id}/reset_push_token")
    assert status == 200
    assert await ended_within(encoder, 15), "B kept the publisher of the old token"
    print(f"B cut the encoder off {time.monotonic() - started:.2f} s after A's reset")
    assert not await publishing(b, stream_id)

    _, on_b, _ = await b.call("GET", f"/streaming/streams/{stream_id}")
    assert on_b["push_url"].endswith(reset["token"])
    encoder = pattern_publisher(on_b["push_url"], 40)  # the new token publishes on B
    await wait_for(lambda: publishing(b, stream_id), within=15, what="the new token publishes on B")
    assert (await a.call("PATCH", f"/streaming/streams/{stream_id}", {"active": False}))[0] == 200
    assert await ended_within(encoder, 15), "B kept the publisher of a deactivated stream"
