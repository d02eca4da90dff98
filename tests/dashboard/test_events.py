"""The event feed /streaming/events: scoped to the caller's client, live with a real publisher, periodic
stats, heartbeats, bounded readers, and an end when the relay stops."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any, cast

import aiohttp
import pytest
from aiohttp import web

from api.app import create_app
from api.routes.common import Node
from api.routes.events import RESYNC, STATS, EventFeed, FeedFull, FeedSettings, Subscription
from api.server import Server
from tests.support import ADMIN_KEY, Publisher, pattern_publish_argv, wait_for

Event = tuple[str, Any]


class FeedReader:
    """Reads an SSE response into (event, data) pairs; comments come out as ("comment", text)."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.seen: list[Event] = []
        self.raw = ""

    async def next(self) -> Event | None:
        lines: list[str] = []
        while True:
            line_bytes = await self.response.content.readline()
            if not line_bytes:
                return None
            line = line_bytes.decode().rstrip("\n")
            self.raw += line + "\n"
            if line:
                lines.append(line)
                continue
            if not lines:
                continue
            if lines[0].startswith(":"):
                event: Event = ("comment", lines[0][1:].strip())
            else:
                fields = dict(entry.split(": ", 1) for entry in lines)
                event = (fields.get("event", "message"), json.loads(fields["data"]))
            self.seen.append(event)
            return event

    async def until(self, kind: str, seconds: float = 10.0, **match: Any) -> Any:
        """The data of the next `kind` event whose fields equal `match`."""
        async with asyncio.timeout(seconds):
            while (event := await self.next()) is not None:
                name, data = event
                if name == kind and all(data.get(k) == v for k, v in match.items()):
                    return data
        raise AssertionError(f"feed ended before a {kind} event")

    async def drain(self, seconds: float) -> None:
        """Read whatever comes for `seconds`."""
        try:
            async with asyncio.timeout(seconds):
                while await self.next() is not None:
                    pass
        except TimeoutError:
            pass


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_read=30)) as session:
        yield session


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"APIKey {key}"}


def sse(key: str) -> dict[str, str]:
    return {**auth(key), "Accept": "text/event-stream"}


async def open_feed(http: aiohttp.ClientSession, base: str, key: str) -> FeedReader:
    response = await http.get(f"{base}/streaming/events", headers=sse(key))
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    reader = FeedReader(response)
    hello = await reader.until("hello")
    assert hello["stats_interval_seconds"] == 2.0
    return reader


async def test_feed_needs_a_valid_key(quick_service: Server, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    for headers in ({"Accept": "text/event-stream"}, sse("1$not-a-key")):
        async with http.get(f"{base}/streaming/events", headers=headers) as response:
            assert response.status == 401
            assert await response.json() == {"errors": {"auth": ["invalid api key"]}}
    # A client that did not ask for an endless event stream does not get one.
    async with http.get(f"{base}/streaming/events", headers=auth(ADMIN_KEY)) as response:
        assert response.status == 406


@pytest.mark.integration
async def test_live_events_and_stats_reach_only_the_owner(quick_service: Server, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    other_key, _ = await quick_service.store.create_api_key(2, "other tenant")
    async with http.post(f"{base}/streaming/streams", json={"name": "mine"}, headers=auth(ADMIN_KEY)) as response:
        stream = await response.json()
    mine = await open_feed(http, base, ADMIN_KEY)
    theirs = await open_feed(http, base, other_key)

    async with Publisher(pattern_publish_argv(stream["push_url"], seconds=30)) as encoder:
        started = await mine.until("stream.live", stream_id=stream["id"], live=True)
        assert started["client_id"] == 1 and started["state"] == "live"
        info = await mine.until("stream.info", stream_id=stream["id"])
        assert (info["video_width"], info["video_height"]) == (320, 240)
        # Stats every ~2 s, with the ingest figures growing.
        first = await mine.until("stats", seconds=5)
        second = await mine.until("stats", seconds=5)
        [before] = [s for s in first["streams"] if s["id"] == stream["id"]]
        [after] = [s for s in second["streams"] if s["id"] == stream["id"]]
        assert after["live"] is True and after["status"]["bytes_in"] > before["status"]["bytes_in"] > 0
        assert after["video_width"] == 320
        encoder.sigkill()
        await encoder.wait(within=10)
        ended = await mine.until("stream.live", stream_id=stream["id"], live=False)
        assert ended["client_id"] == 1

    # The other client's feed ran all along: its stats came, and nothing of client 1's stream did.
    await theirs.drain(0.5)
    kinds = {name for name, _ in theirs.seen}
    assert STATS in kinds and not any(name.startswith("stream.") for name in kinds), kinds
    for name, data in theirs.seen:
        if name == STATS:
            assert data["client_id"] == 2 and data["streams"] == [] and data["restreams"] == []
    # No secret travels on the feed: the token and the key never appear.
    assert stream["token"] not in mine.raw and ADMIN_KEY not in mine.raw
    mine.response.close()
    theirs.response.close()


async def test_stopping_the_relay_ends_open_feeds_promptly(quick_service: Server, http: aiohttp.ClientSession) -> None:
    reader = await open_feed(http, f"http://127.0.0.1:{quick_service.ports.http}", ADMIN_KEY)
    started = time.monotonic()
    await quick_service.close()
    assert time.monotonic() - started < 3.0  # not the 10 s grace aiohttp gives running handlers
    async with asyncio.timeout(3):
        while await reader.next() is not None:
            pass


async def test_heartbeats_and_the_subscription_limit(quick_service: Server, http: aiohttp.ClientSession) -> None:
    app = create_app(
        quick_service.engine,
        quick_service.store,
        quick_service.addresses,
        feed_settings=FeedSettings(heartbeat_seconds=0.2, stats_interval_seconds=60, max_subscriptions_per_client=1),
    )
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        response = await http.get(f"{base}/streaming/events", headers=sse(ADMIN_KEY))
        reader = FeedReader(response)
        assert (await reader.next() or ("", None))[0] == "hello"
        assert await reader.next() == ("comment", "heartbeat")
        assert await reader.next() == ("comment", "heartbeat")
        async with http.get(f"{base}/streaming/events", headers=sse(ADMIN_KEY)) as second:
            assert second.status == 503
        response.close()
    finally:
        await runner.cleanup()


async def test_every_client_keeps_a_reserve_of_feeds_when_others_took_the_shared_pool(
    quick_service: Server, http: aiohttp.ClientSession
) -> None:
    settings = FeedSettings(
        heartbeat_seconds=0.2, max_subscriptions=2, max_subscriptions_per_client=3, reserved_subscriptions_per_client=1
    )
    app = create_app(quick_service.engine, quick_service.store, quick_service.addresses, feed_settings=settings)
    runner = web.AppRunner(app, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    key_b, _ = await quick_service.store.create_api_key(2, "client B")
    key_c, _ = await quick_service.store.create_api_key(3, "client C")
    base = f"http://127.0.0.1:{runner.addresses[0][1]}"

    async def status_of_another(key: str) -> int:
        async with http.get(f"{base}/streaming/events", headers=sse(key)) as response:
            return response.status

    try:
        # Client A takes its reserved feed and the whole shared pool, then hits its own cap.
        a_feeds = [await open_feed(http, base, ADMIN_KEY) for _ in range(3)]
        assert await status_of_another(ADMIN_KEY) == 503
        # B and C still get their reserved feed; beyond it the shared pool is taken.
        b_feed = await open_feed(http, base, key_b)
        c_feed = await open_feed(http, base, key_c)
        assert await status_of_another(key_b) == 503
        # A gives one back: that shared place is B's to take.
        a_feeds.pop().response.close()

        async def b_gets_a_second() -> FeedReader | None:
            response = await http.get(f"{base}/streaming/events", headers=sse(key_b))
            if response.status == 200:
                return FeedReader(response)
            response.close()
            return None

        b_second = await wait_for(b_gets_a_second, 5, "a shared feed for B once A closed one", every=0.1)
        assert await status_of_another(key_c) == 503
        for reader in (*a_feeds, b_feed, c_feed, b_second):
            reader.response.close()
    finally:
        await runner.cleanup()


def test_feed_accounting_follows_any_order_of_opening_and_closing() -> None:
    settings = FeedSettings(max_subscriptions=5, max_subscriptions_per_client=4, reserved_subscriptions_per_client=2)
    feed = EventFeed(cast(Node, None), settings)  # subscribe/unsubscribe never touch the node
    rng = random.Random(7)
    open_: list[Subscription] = []
    for _ in range(2000):
        if open_ and rng.random() < 0.45:
            feed.unsubscribe(open_.pop(rng.randrange(len(open_))))
        else:
            client = rng.randrange(4)
            per_client = Counter(s.client_id for s in open_)
            shared = sum(max(0, n - 2) for n in per_client.values())
            allowed = per_client[client] < 4 and (per_client[client] < 2 or shared < 5)
            try:
                open_.append(feed.subscribe(client))
                assert allowed
            except FeedFull:
                assert not allowed
    assert feed.subscriptions == len(open_)


# The mailbox itself: bounded, stats coalesced, a reader that falls behind is told to reload.


def test_only_the_latest_stats_snapshot_is_kept() -> None:
    mailbox = Subscription(client_id=1, max_queued_events=8)
    mailbox.offer("stream.live", {"n": 1})
    for n in range(100):
        mailbox.offer(STATS, {"n": n})
    mailbox.offer("stream.live", {"n": 2})
    assert len(mailbox) == 3


async def test_a_reader_that_falls_behind_gets_a_resync_and_the_queue_stays_bounded() -> None:
    mailbox = Subscription(client_id=1, max_queued_events=8)
    for n in range(1000):
        mailbox.offer("restream.status", {"n": n})
        assert len(mailbox) <= 8
    batch = await mailbox.next_batch(0.01)
    assert batch is not None and mailbox.resyncs > 0
    assert batch[0][0] == RESYNC
    assert batch[-1] == ("restream.status", {"n": 999})
    assert await mailbox.next_batch(0.01) == []  # nothing queued: a heartbeat is due
    mailbox.close()
    assert await mailbox.next_batch(5) is None  # closed: at once, not after the wait


def test_stats_are_dropped_before_state_changes() -> None:
    mailbox = Subscription(client_id=1, max_queued_events=4)
    mailbox.offer("stream.live", {"n": 0})
    mailbox.offer(STATS, {"n": 0})
    mailbox.offer("stream.live", {"n": 1})
    mailbox.offer("stream.live", {"n": 2})
    mailbox.offer("stream.live", {"n": 3})  # full: the stats snapshot goes, not a state change
    assert mailbox.resyncs == 0 and len(mailbox) == 4
