"""The control API's connection limits, through the relay's own wiring (api/server.py) on loopback: slow
headers, bodies that never come, idle keep-alive, and the connection cap with its eviction order; and
what /metrics says of them (relay_http_connections_refused_total, _cut_total, relay_http_open_connections)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.server import Server
from tests.conftest import service_settings
from tests.support import ADMIN_KEY
from tests.support.scrape import Scraper

pytestmark = pytest.mark.timeout(30)

HEADER_SECONDS = 0.5
BODY_SECONDS = 0.5
KEEPALIVE_SECONDS = 1.0
MAX_CONNECTIONS = 4


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[Server]:
    server = Server(
        service_settings(
            tmp_path,
            http_header_timeout_seconds=HEADER_SECONDS,
            http_body_timeout_seconds=BODY_SECONDS,
            http_keepalive_timeout_seconds=KEEPALIVE_SECONDS,
            http_max_connections=MAX_CONNECTIONS,
        )
    )
    await server.start()
    try:
        yield server
    finally:
        await server.close()


class Raw:
    """One TCP connection to the API, written and read by hand."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server) -> Raw:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.ports.http)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_until_closed(self, limit_seconds: float = 5.0) -> bytes:
        """All the server sends until it closes the connection."""
        got = b""
        async with asyncio.timeout(limit_seconds):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return got
                if not data:
                    return got
                got += data

    async def response(self) -> bytes:
        """One whole response (bodies here always have a Content-Length), or the head of a streamed one."""
        async with asyncio.timeout(5):
            head = await self.reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    return head + await self.reader.readexactly(int(value))
            return head

    async def still_open(self) -> bool:
        try:
            async with asyncio.timeout(0.1):
                return bool(await self.reader.read(1))
        except TimeoutError:
            return True
        except ConnectionError:
            return False

    def close(self) -> None:
        self.writer.close()


async def doors(server: Server) -> dict[str, float]:
    """The API's connection series as a scrape shows them: `name{label}` -> value (the scrape's own
    connection, open while it is answered, is in relay_http_open_connections)."""
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        samples = await Scraper(http, f"http://127.0.0.1:{server.ports.http}").scrape()
    return {
        name + "".join(f"{{{value}}}" for _, value in labels): sample
        for (name, labels), sample in samples.items()
        if name.startswith("relay_http_")
    }


def healthz(keep_alive: bool = True) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + (b"" if keep_alive else b"Connection: close\r\n") + b"\r\n"


async def test_headers_sent_byte_by_byte_are_cut_off(limited: Server) -> None:
    client = await Raw.open(limited)
    request = healthz()
    started = time.monotonic()
    with pytest.raises(ConnectionError):  # never silent for long, but the headers never end in time
        for index in range(len(request) - 2):
            await client.send(request[index : index + 1])
            await asyncio.sleep(0.05)
    assert time.monotonic() - started < HEADER_SECONDS + 1.0


async def test_a_connection_that_sends_nothing_is_closed(limited: Server) -> None:
    client = await Raw.open(limited)
    started = time.monotonic()
    assert await client.read_until_closed() == b""
    assert time.monotonic() - started < HEADER_SECONDS + 1.0
    assert (await doors(limited))["relay_http_connections_cut_total{header_timeout}"] == 1


async def test_a_body_that_never_comes_gets_408_and_the_connection_closes(limited: Server) -> None:
    client = await Raw.open(limited)
    head = (
        b"POST /streaming/streams HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Authorization: APIKey " + ADMIN_KEY.encode() + b"\r\nContent-Length: 100\r\n\r\n"
    )
    await client.send(head + b'{"name": ')
    started = time.monotonic()
    answer = await client.read_until_closed()
    assert answer.startswith(b"HTTP/1.1 408 ")
    assert answer.endswith(b'{"status":408,"error":"request body not received in time"}')
    assert BODY_SECONDS - 0.1 < time.monotonic() - started < BODY_SECONDS + 1.0
    assert (await limited.store.list_streams(1, 0, 10)).items == []
    assert (await doors(limited))["relay_http_connections_cut_total{body_timeout}"] == 1

    # Without a valid key, the body is not even waited for.
    anonymous = await Raw.open(limited)
    await anonymous.send(head.replace(ADMIN_KEY.encode(), b"1$nope"))
    assert (await anonymous.response()).startswith(b"HTTP/1.1 401 ")
    anonymous.close()


async def test_idle_keepalive_connections_are_closed_after_a_while(limited: Server) -> None:
    client = await Raw.open(limited)
    await client.send(healthz())
    assert (await client.response()).startswith(b"HTTP/1.1 200 ")
    await client.send(healthz())  # kept alive: a second request on it is fine
    assert (await client.response()).startswith(b"HTTP/1.1 200 ")
    started = time.monotonic()
    await client.read_until_closed()
    assert KEEPALIVE_SECONDS - 0.3 < time.monotonic() - started < KEEPALIVE_SECONDS + 1.5


async def test_the_cap_evicts_the_longest_waiting_and_refuses_only_when_all_are_in_requests(limited: Server) -> None:
    idle = [await Raw.open(limited) for _ in range(MAX_CONNECTIONS)]
    await asyncio.sleep(0.05)
    newcomer = await Raw.open(limited)  # the API is full of silent connections: the oldest makes room
    await newcomer.send(healthz(keep_alive=False))
    assert (await newcomer.response()).startswith(b"HTTP/1.1 200 ")
    assert await idle[0].read_until_closed() == b""
    assert [await c.still_open() for c in idle[1:]] == [True] * (MAX_CONNECTIONS - 1)
    for client in idle[1:]:
        client.close()

    feeds = []
    for _ in range(MAX_CONNECTIONS):  # event feeds: connections inside a request for as long as they last
        feed = await Raw.open(limited)
        await feed.send(
            b"GET /streaming/events HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n"
            b"Authorization: APIKey " + ADMIN_KEY.encode() + b"\r\n\r\n"
        )
        assert (await feed.response()).startswith(b"HTTP/1.1 200 ")
        feeds.append(feed)
    refused = await Raw.open(limited)
    await refused.send(healthz())
    assert await refused.read_until_closed() == b""  # closed at once, no answer
    assert all([await f.still_open() for f in feeds])
    feeds.pop().close()
    await asyncio.sleep(0.1)
    welcome = await Raw.open(limited)
    await welcome.send(healthz(keep_alive=False))
    assert (await welcome.response()).startswith(b"HTTP/1.1 200 ")
    feeds.pop().close()  # room for the scrape: the open ones are two feeds and the scrape itself
    await asyncio.sleep(0.1)
    seen = await doors(limited)
    assert seen["relay_http_connections_refused_total{max_connections}"] == 1
    assert seen["relay_http_connections_cut_total{evicted}"] == 1
    assert seen["relay_http_connections_cut_total{header_timeout}"] == 0
    assert seen["relay_http_open_connections"] == MAX_CONNECTIONS - 1
    for feed in feeds:
        feed.close()
