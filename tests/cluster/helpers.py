"""What the cluster tests do through a node's API and event feed, from the test's event loop.

The blocking calls (HTTP to a node, psql, starting or killing processes) run in a thread, so that the
destinations served in the loop (tests/support/rtmp_sink.py) stamp every packet when it arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import aiohttp

from tests.support import ADMIN_KEY
from tests.support.cluster import Cluster, Lease, Node
from tests.support.polling import wait_for
from tests.support.rtmp_sink import RtmpSink

T = TypeVar("T")


async def call(node: Node, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
    result = await asyncio.to_thread(node.api, method, path, body)
    assert result.status == expect, f"{node.node_id}: {method} {path}: {result.status} {result.body}"
    return result.body


async def new_stream(node: Node, name: str) -> dict[str, Any]:
    stream: dict[str, Any] = await call(node, "POST", "/streaming/streams", {"name": name})
    return stream


async def add_restream(node: Node, stream_id: int, sink: RtmpSink) -> dict[str, Any]:
    body = {"restream": {"stream_id": stream_id, "uri": sink.url, "name": sink.name}}
    restream: dict[str, Any] = await call(node, "POST", "/streaming/restreams", body)
    return restream


async def lease(cluster: Cluster, stream_id: int) -> Lease | None:
    return await asyncio.to_thread(cluster.lease, stream_id)


async def owner(cluster: Cluster, stream_id: int, *, within: float = 15.0, other_than: str = "") -> Lease:
    """The stream's valid lease, once one is held (by another node than `other_than`, when given)."""

    async def held() -> Lease | None:
        row = await lease(cluster, stream_id)
        return row if row is not None and row.valid and row.node_id != other_than else None

    return await wait_for(held, within, f"a valid lease of stream {stream_id} (not {other_than or '-'})")


async def video(sink: RtmpSink, since: float, within: float, what: str = "") -> float:
    """When the first video packet after `since` reached `sink`."""

    async def arrived() -> float | None:
        return sink.first_video_since(since)

    return await wait_for(arrived, within, what or f"video at {sink.name} after {since:.1f}", every=0.05)


async def until(check: Callable[[], T], within: float, what: str) -> T:
    async def probe() -> T:
        return check()

    return await wait_for(probe, within, what, every=0.05)


class EventLog:
    """A node's event feed (`GET /streaming/events`, Server-Sent Events) read into `events` as it arrives:
    (arrival time, event name, payload)."""

    def __init__(self, node: Node) -> None:
        self.url = f"{node.relay.base_url}/streaming/events"
        self.events: list[tuple[float, str, dict[str, Any]]] = []
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._hello = asyncio.Event()

    async def __aenter__(self) -> EventLog:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=None))
        self._task = asyncio.create_task(self._read())
        await asyncio.wait_for(self._hello.wait(), 10)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None and self._session is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
            await self._task
        await self._session.close()

    async def _read(self) -> None:
        assert self._session is not None
        headers = {"Accept": "text/event-stream", "Authorization": f"APIKey {ADMIN_KEY}"}
        with contextlib.suppress(aiohttp.ClientError):  # the node was killed: what it sent is kept
            await self._read_from(headers)

    async def _read_from(self, headers: dict[str, str]) -> None:
        assert self._session is not None
        async with self._session.get(self.url, headers=headers) as response:
            assert response.status == 200, await response.text()
            kind = ""
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: "):
                    self.events.append((time.monotonic(), kind, json.loads(line[6:])))
                    if kind == "hello":
                        self._hello.set()

    def live(self, stream_id: int) -> list[tuple[float, dict[str, Any]]]:
        """The stream's `stream.live` events, in order."""
        return [(t, p) for t, kind, p in self.events if kind == "stream.live" and p.get("stream_id") == stream_id]

    def owners(self, stream_id: int) -> list[str]:
        """The owners its `stream.live` events named while live, in order."""
        return [str(p.get("node_id")) for _, p in self.live(stream_id) if p.get("live")]
