"""Issue 12's must-shows: three relay nodes on one PostgreSQL, HAProxy (RTMP) and nginx (SRT) in front.

Real publishers (ffmpeg, reconnecting through the balancer as encoders do), real destinations (RTMP sinks
that tell connections apart), the lease table read with psql, the nodes' API and event feed. One cluster
serves the module (tests/support/cluster.py: lease 3 s, renewal 0.5 s, margin 1 s); each test uses streams
of its own and finds every node up again (`healed`). PostgreSQL's restart comes last.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cluster.helpers import EventLog, add_restream, call, lease, new_stream, owner, until, video
from tests.support import Clip, MediaCache, Publisher
from tests.support.cluster import Cluster, Node, why_no_cluster
from tests.support.polling import wait_for
from tests.support.publishers import ReconnectingPublisher, looped_publish_argv
from tests.support.rtmp_sink import RtmpSink

pytestmark = [pytest.mark.integration, pytest.mark.cluster, pytest.mark.timeout(120)]

LOOP_CLIP = Clip(container="flv", seconds=2.0, gop=25, fixed_gop=True)
"""Looped by the publishers (`-stream_loop -1`): a keyframe every second, cheap to replay."""
LOOP_CLIP_TS = Clip(container="mpegts", seconds=2.0, gop=25, fixed_gop=True)
RECONNECT_SLACK_SECONDS = 2.5
"""A refused publisher retries after 0.3 s; ffmpeg's connect, the handshake and the claim come on top."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if reason := why_no_cluster():
        pytest.skip(reason)
    running = Cluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def healed(cluster: Cluster) -> Cluster:
    """The cluster with every node up and running (a test before may have killed or frozen one)."""
    if not cluster.postgres.running:
        cluster.postgres.start()
    for node in cluster.nodes:
        if node.frozen:
            cluster.thaw(node)
        if not node.up:
            cluster.restart(node)
    cluster.wait_healthy()
    return cluster


@pytest.fixture
def clip(media_cache: MediaCache) -> Path:
    return media_cache.clip(LOOP_CLIP)


async def test_a_restream_created_through_another_node_starts_on_the_owner(healed: Cluster, clip: Path) -> None:
    """Must-show 2: written through node B, started on A within 1 s; with A's LISTEN connection killed,
    within the resync period."""
    cluster = healed
    a, b, _ = cluster.nodes
    stream = await new_stream(b, "made on b, published on a")
    async with RtmpSink("first") as first, RtmpSink("second") as second:
        async with ReconnectingPublisher(clip, cluster.direct(stream["push_url"], a)) as publisher:
            held = await owner(cluster, stream["id"])
            assert held.node_id == a.node_id, publisher.output

            written = time.monotonic()
            restream = await add_restream(b, stream["id"], first)

            async def started_on_a() -> bool:
                body = await call(a, "GET", f"/streaming/restreams/{restream['id']}")
                return body["status"]["state"] in ("starting", "running")

            await wait_for(started_on_a, 1.0, "node A starting the restream written through B", every=0.05)
            arrived = await video(first, written, 5.0)
            assert arrived - written < 3.0  # ffmpeg's start and connect on top of the 1 s

            # Node A's listening connection(s) cut from the server's side; a write made meanwhile still
            # reaches it, at the latest with the resync.
            backends = await asyncio.to_thread(cluster.listening_backends, a)
            assert backends, "node A holds a LISTEN connection"
            await asyncio.to_thread(cluster.terminate_backends, backends)
            written = time.monotonic()
            await add_restream(b, stream["id"], second)
            await video(second, written, 3.0 + 3.0, "the second restream at its destination after the resync")
            assert first.overlaps() == [] and second.overlaps() == []


async def test_the_same_key_at_two_nodes_at_once_has_one_owner(healed: Cluster, clip: Path) -> None:
    """Must-show 5: one owner, the other refused, never two sets of pushes (twice, to race for real)."""
    cluster = healed
    a, b, c = cluster.nodes
    stream = await new_stream(c, "published twice")
    async with RtmpSink("only-one") as sink:
        await add_restream(c, stream["id"], sink)
        for round_number in range(2):
            publishers = [
                Publisher(looped_publish_argv(clip, cluster.direct(stream["push_url"], node)))
                for node in ((a, b) if round_number == 0 else (b, a))
            ]
            started = time.monotonic()
            try:
                await asyncio.gather(*(p.start() for p in publishers))
                held = await owner(cluster, stream["id"])
                await video(sink, started, 10.0)
                await asyncio.sleep(3.0)  # both publish all along: the refused one must stay refused
                assert await asyncio.to_thread(cluster.lease_rows, stream["id"]) == 1
                still = await lease(cluster, stream["id"])
                assert still is not None and still.node_id == held.node_id and still.epoch == held.epoch
                running = [p for p in publishers if p.proc is not None and p.proc.returncode is None]
                assert len(running) == 1, "exactly one publisher kept its connection"
                assert len(sink.publishing_now()) == 1, "one push reaches the destination"
                assert sink.overlaps() == [], "two nodes pushed at once"
            finally:
                for publisher in publishers:
                    await publisher.close()
            await until(lambda: not sink.publishing_now(), 10.0, "the push ended with its publisher")


async def test_kill_9_of_the_owner_moves_the_stream_and_every_destination_gets_media_again(
    healed: Cluster, clip: Path
) -> None:
    """Must-shows 1 and 3: through the balancer; a third node's API and event feed show the owner, then the
    new one (every node's feed is read; the observer is a node that is neither)."""
    cluster = healed
    a, b, c = cluster.nodes
    stream = await new_stream(c, "crash")
    async with (
        EventLog(a) as feed_a,
        EventLog(b) as feed_b,
        EventLog(c) as feed_c,
        RtmpSink("one") as one,
        RtmpSink("two") as two,
    ):
        feeds = {a.node_id: feed_a, b.node_id: feed_b, c.node_id: feed_c}
        for sink in (one, two):
            await add_restream(c, stream["id"], sink)
        async with ReconnectingPublisher(clip, stream["push_url"]) as publisher:
            begun = time.monotonic()
            await video(one, begun, 15.0, f"first video: {publisher.output}")
            await video(two, begun, 5.0)
            before = await owner(cluster, stream["id"])
            for node in cluster.others(before.node_id):  # the other nodes show it live on its owner

                async def shown_live(node: Node = node) -> bool:
                    body = await call(node, "GET", f"/streaming/streams/{stream['id']}")
                    return body["live"] is True and body["node_id"] == before.node_id

                await wait_for(shown_live, 3.0, f"{node.node_id}'s API showing the owner", every=0.05)
                feed = feeds[node.node_id]
                await until(
                    lambda feed=feed: before.node_id in feed.owners(stream["id"]),  # type: ignore[misc]
                    3.0,
                    f"{node.node_id}'s event feed telling the owner",
                )

            killed = time.monotonic()
            await asyncio.to_thread(cluster.kill, cluster.node(before.node_id))
            after = await owner(cluster, stream["id"], other_than=before.node_id, within=15.0)
            claimed = time.monotonic()
            for sink in (one, two):
                await video(sink, claimed, 10.0, f"{sink.name} after the failover: {publisher.output}")

            assert after.epoch > before.epoch and after.node_id != before.node_id
            assert await asyncio.to_thread(cluster.lease_rows, stream["id"]) == 1
            assert claimed - killed < cluster.lease_seconds + RECONNECT_SLACK_SECONDS

            observer = next(n for n in (a, b, c) if n.node_id not in (before.node_id, after.node_id))

            async def shown() -> bool:
                body = await call(observer, "GET", f"/streaming/streams/{stream['id']}")
                return body["live"] is True and body["node_id"] == after.node_id

            await wait_for(shown, 3.0, "the observer's API showing the new owner", every=0.05)
            # The event feed is another channel than the API: its event may come a moment after the API shows it.
            observed = feeds[observer.node_id]
            await until(
                lambda: after.node_id in observed.owners(stream["id"]),
                3.0,
                f"{observer.node_id}'s event feed telling the new owner",
            )
            seen = feeds[observer.node_id].live(stream["id"])
            owners = feeds[observer.node_id].owners(stream["id"])
            assert before.node_id in owners, (observer.node_id, seen)
            assert after.node_id in owners[owners.index(before.node_id) :], owners
            for sink in (one, two):
                assert sink.overlaps() == []


async def test_an_srt_encoder_through_nginx_follows_its_stream_to_another_node(
    healed: Cluster, media_cache: MediaCache
) -> None:
    """SRT through nginx `stream`: media reaches the destination; after kill -9 of the owner the caller
    (its peer idle timeout, 5 s) reconnects through nginx to another node, and media flows again."""
    cluster = healed
    stream = await new_stream(cluster.nodes[1], "srt through nginx")
    async with RtmpSink("from-srt") as sink:
        await add_restream(cluster.nodes[1], stream["id"], sink)
        url = stream["push_url_srt"].replace("#", "%23")  # ffmpeg would cut the URL at the fragment
        assert url.startswith(f"srt://127.0.0.1:{cluster.srt_port}?"), "the push URL names the balancer"
        async with ReconnectingPublisher(media_cache.clip(LOOP_CLIP_TS), url) as publisher:
            begun = time.monotonic()
            await video(sink, begun, 15.0, f"first video over SRT: {publisher.output}")
            before = await owner(cluster, stream["id"])
            await asyncio.to_thread(cluster.kill, cluster.node(before.node_id))
            after = await owner(cluster, stream["id"], other_than=before.node_id, within=20.0)
            await video(sink, time.monotonic(), 10.0, f"video from {after.node_id}: {publisher.output}")
            assert after.epoch > before.epoch
            assert sink.overlaps() == []


async def test_an_rtmps_encoder_through_haproxy_reaches_the_destinations(healed: Cluster, clip: Path) -> None:
    """RTMPS passes through HAProxy (TCP) to a node, which terminates TLS; the push URL names the balancer."""
    cluster = healed
    stream = await new_stream(cluster.nodes[2], "rtmps through haproxy")
    url = stream["push_url_rtmps"]
    assert url.startswith(f"rtmps://127.0.0.1:{cluster.rtmps_port}/in/"), "the push URL names the balancer"
    async with RtmpSink("from-rtmps") as sink:
        await add_restream(cluster.nodes[2], stream["id"], sink)
        async with ReconnectingPublisher(clip, url) as publisher:
            await video(sink, time.monotonic(), 15.0, f"video from an RTMPS encoder: {publisher.output}")
            assert (await owner(cluster, stream["id"])).valid


async def test_a_frozen_owner_is_replaced_and_never_pushes_beside_the_new_one(healed: Cluster, clip: Path) -> None:
    """Must-show 4: SIGSTOP past the lease; another node takes over; the thawed node stops its pushes within
    one renewal, and no destination ever gets media from both."""
    cluster = healed
    stream = await new_stream(cluster.nodes[0], "frozen")
    async with RtmpSink("watched") as sink:
        await add_restream(cluster.nodes[0], stream["id"], sink)
        async with ReconnectingPublisher(clip, stream["push_url"]) as publisher:
            begun = time.monotonic()
            await video(sink, begun, 15.0, f"first video: {publisher.output}")
            before = await owner(cluster, stream["id"])
            frozen = cluster.node(before.node_id)
            old = sink.publishing_now()
            assert len(old) == 1

            frozen_at = time.monotonic()
            await asyncio.to_thread(cluster.freeze, frozen)
            after = await owner(cluster, stream["id"], other_than=frozen.node_id, within=15.0)
            taken = time.monotonic()
            await video(sink, taken, 10.0, f"media from the new owner: {publisher.output}")
            assert after.epoch > before.epoch
            await asyncio.sleep(1.0)  # frozen well past its lease

            await asyncio.to_thread(cluster.thaw, frozen)
            thawed = time.monotonic()
            await until(
                lambda: old[0].closed_at is not None,
                cluster.renew_seconds + 1.5,
                "the thawed node's push closed within a renewal",
            )
            await asyncio.sleep(1.0)
            first_new = sink.connections[-1].first_media or 0.0
            late = [
                (round(t - thawed, 3), stamp)
                for t, stamp in zip(old[0].media_times, old[0].media_stamps, strict=True)
                if t > first_new
            ]
            before_freeze = [
                stamp for t, stamp in zip(old[0].media_times, old[0].media_stamps, strict=True) if t < frozen_at
            ]
            assert sink.overlaps() == [], (
                f"the thawed node pushed beside the new owner: {len(late)} packets from it after the new owner's"
                f" first (s after the thaw, RTMP timestamp): {late[:5]}...{late[-3:]};"
                f" frozen at {frozen_at - thawed:.2f} s, last timestamp before: {before_freeze[-1:]}"
            )
            assert [c.number for c in sink.publishing_now()] != [old[0].number]
            still = await lease(cluster, stream["id"])
            assert still is not None and (still.node_id, still.epoch) == (after.node_id, after.epoch)
            assert old[0].last_media is None or old[0].last_media < thawed


async def test_postgres_restarted_while_live_keeps_the_pushes_and_the_nodes_resync(healed: Cluster, clip: Path) -> None:
    """Must-show 6: a PostgreSQL restart (shorter than the lease) breaks no push, moves no stream, loses
    nothing; a restream written through another node afterwards reaches the owner."""
    cluster = healed
    a, b, c = cluster.nodes
    stream = await new_stream(a, "through a database restart")
    async with RtmpSink("steady") as steady, RtmpSink("later") as later:
        await add_restream(a, stream["id"], steady)
        async with ReconnectingPublisher(clip, stream["push_url"]) as publisher:
            begun = time.monotonic()
            await video(steady, begun, 15.0, f"first video: {publisher.output}")
            before = await owner(cluster, stream["id"])
            connections = len(steady.connections)
            await asyncio.sleep(1.0)

            restarted = time.monotonic()
            await asyncio.to_thread(cluster.postgres.restart)
            await asyncio.sleep(4.0)  # more than a lease period after the restart
            assert steady.largest_gap_seconds(restarted - 0.5, time.monotonic()) < 1.0, "the push paused"
            assert len(steady.connections) == connections, "the push restarted"
            assert len(publisher.attempts) == 1, f"the publisher was dropped: {publisher.output}"
            kept = await lease(cluster, stream["id"])
            assert kept is not None and kept.valid and (kept.node_id, kept.epoch) == (before.node_id, before.epoch)

            writer = next(n for n in (a, b, c) if n.node_id != before.node_id)
            written = time.monotonic()
            await add_restream(writer, stream["id"], later)
            await video(later, written, 3.0, "a restream written after the restart, at its destination")
            for node in (a, b, c):
                assert (await call(node, "GET", f"/streaming/streams/{stream['id']}"))["name"] == stream["name"]
