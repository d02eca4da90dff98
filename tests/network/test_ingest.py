"""Publishers on impaired links: the encoder sits in its own namespace and reaches the relay across a veth,
through the impairing proxy (SRT: datagrams lost and delayed) or a link that goes dead (RTMP).

What a user checks: what reaches the destinations, and how the stream's state follows the publisher."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media
from tests.support import Publisher, Receiver, ffmpeg_publish_argv, wait_for
from tests.support.impair import TcpImpairment, UdpImpairment, tcp_impair, udp_impair
from tests.support.netns import Netns

pytestmark = [pytest.mark.integration, pytest.mark.network]

INGEST_LOSS = 0.05
INGEST_DELAY_SECONDS = 0.1
SRT_LATENCY_MS = 1000
"""The relay's SRT latency here: several retransmissions over a 200 ms round trip."""


@pytest.mark.timeout(60)
@pytest.mark.relay_env(RELAY_SRT_LATENCY_MS=SRT_LATENCY_MS)
async def test_srt_ingest_through_5_percent_loss_and_100ms_reaches_destinations_whole(
    net_rig: Rig, netns: Callable[[str], Netns], long_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("srtin")
    impairment = UdpImpairment(delay_seconds=INGEST_DELAY_SECONDS, loss=INGEST_LOSS, seed=5)
    proxy = await rig.stack.enter_async_context(
        udp_impair((ns.host_address, 0), ("127.0.0.1", rig.relay.srt_port), impairment)
    )
    rtmp = await rig.receiver("rtmp")
    stream = await api.stream()
    rtmp_id = (await api.add_restream(stream["id"], rtmp.uri(), rtmp.key))["id"]
    # The publisher, inside the namespace, calls the proxy on the root side of the veth.
    url = re.sub(r"srt://[^:/?]+:\d+", f"srt://{ns.host_address}:{proxy.port}", stream["push_url_srt"])
    url = url.replace("#", "%23") + f"&latency={SRT_LATENCY_MS * 1000}"
    publisher = Publisher(ns.argv(ffmpeg_publish_argv(long_media.ts, url, pes_lengths=True)))
    rig.publishers.append(publisher)
    await publisher.start()
    code, err = await publisher.wait(within=long_media.seconds + 20)
    assert code == 0, err
    await rtmp.ends_cleanly(within=20)

    assert proxy.stats.dropped > 0, "nothing was lost: the test proves nothing"
    got, want = rtmp.frames(), long_media.ref_ts_to_flv
    # Every lost datagram was recovered within the latency; only the end races the publisher's close (an
    # SRT caller loses its last kilobytes when it closes: tests/e2e/helpers.py SRT_TAIL_FRAMES).
    assert len(got) >= len(want) - GOP and got[: len(want) - GOP] == want[: len(want) - GOP], (
        f"{len(got)} of {len(want)} video packets, first gap at "
        f"{next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), len(got))}"
    )
    assert (await api.status(rtmp_id))["restarts"] == 0
    print(f"\nSRT ingest: {proxy.stats.dropped} of {proxy.stats.dropped + proxy.stats.forwarded} datagrams lost")
    api.assert_no_secrets()


IDLE_TIMEOUT_SECONDS = 5.0
GRACE_SECONDS = 10.0


async def _main_session(rig: Rig, stream_id: int) -> tuple[bool, str | None, str | None]:
    body = await rig.api.call("GET", f"/streaming/streams/{stream_id}")
    return bool(body["live"]), body["started_at_primary"], body["finished_at_primary"]


@dataclass(frozen=True)
class NamespacedPublish:
    stream: dict[str, Any]
    dest: Receiver
    dest_id: int
    url: str
    """The stream's push URL through the forwarder, as an encoder inside the namespace reaches it."""


async def _publish_from_namespace(rig: Rig, ns: Netns, media: Media) -> NamespacedPublish:
    """A stream with one destination, and an RTMP encoder inside `ns` publishing `media` to it through a plain
    forwarder on the root side of the veth; returns once the destination pushes (two GOPs through)."""
    forward = await rig.stack.enter_async_context(
        tcp_impair((ns.host_address, 0), ("127.0.0.1", rig.relay.rtmp_port), TcpImpairment())
    )
    dest = await rig.receiver("dest")
    stream = await rig.api.stream()
    dest_id = (await rig.api.add_restream(stream["id"], dest.uri(), dest.key))["id"]
    url = re.sub(r"rtmp://[^:/]+:\d+", f"rtmp://{ns.host_address}:{forward.port}", stream["push_url"])
    publisher = Publisher(ns.argv(ffmpeg_publish_argv(media.flv, url)))
    rig.publishers.append(publisher)
    await publisher.start()
    await rig.api.wait_state(dest_id, "running", within=10, check=lambda s: s["frames"] >= 2 * GOP)
    return NamespacedPublish(stream, dest, dest_id, url)


@pytest.mark.timeout(90)
@pytest.mark.relay_env(
    RELAY_RTMP_IDLE_TIMEOUT_SECONDS=IDLE_TIMEOUT_SECONDS, RELAY_PUBLISHER_GRACE_SECONDS=GRACE_SECONDS
)
async def test_rtmp_publisher_whose_link_dies_is_a_drop_after_the_idle_timeout_and_resumes_on_return(
    net_rig: Rig, netns: Callable[[str], Netns], outage_media: Media, long_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("rtmpin")
    published = await _publish_from_namespace(rig, ns, outage_media)
    stream, dest, dest_id, url = published.stream, published.dest, published.dest_id, published.url
    _, started, _ = await _main_session(rig, stream["id"])

    ns.link_down()  # no FIN, no RST: the relay hears nothing more
    down_at = time.monotonic()

    async def dropped() -> bool:
        live, _, finished = await _main_session(rig, stream["id"])
        return live and finished is not None

    await wait_for(dropped, IDLE_TIMEOUT_SECONDS + 3, "the publisher ended as a drop, the stream held")
    drop_after = time.monotonic() - down_at
    # The destination is held through the grace period, not restarted.
    await asyncio.sleep(2)
    held = await api.status(dest_id)
    assert held["state"] == "running" and held["restarts"] == 0, held
    assert (await _main_session(rig, stream["id"]))[0], "the stream ended before its grace period"

    # The link returns and the encoder publishes again (its old connection is gone) within the grace.
    ns.link_up()
    again = Publisher(ns.argv(ffmpeg_publish_argv(long_media.flv, url)))
    rig.publishers.append(again)
    await again.start()

    async def resumed() -> bool:
        live, started_again, finished = await _main_session(rig, stream["id"])
        return live and finished is None and started_again != started

    await wait_for(resumed, 10, "the stream resumed with the returning publisher")
    resume_after = time.monotonic() - down_at
    code, err = await again.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await dest.ends_cleanly(within=GRACE_SECONDS + 10)
    print(f"\nRTMP ingest blackhole: drop after {drop_after:.1f} s, resumed {resume_after:.1f} s after the cut")
    status = await api.status(dest_id)
    assert status["restarts"] == 0, f"the destination restarted: {status}"
    got = dest.frames()
    # The first play up to the cut, then the whole second play, on one connection.
    assert got[-len(long_media.ref_flv) :] == long_media.ref_flv, "the second play did not arrive whole"
    head = got[: -len(long_media.ref_flv)]
    assert head and head == outage_media.ref_flv[: len(head)], "the first play did not arrive unbroken"
    api.assert_no_secrets()


@pytest.mark.timeout(60)
@pytest.mark.relay_env(
    RELAY_RTMP_IDLE_TIMEOUT_SECONDS=IDLE_TIMEOUT_SECONDS, RELAY_PUBLISHER_GRACE_SECONDS=GRACE_SECONDS / 2
)
async def test_rtmp_publisher_whose_link_stays_dead_ends_the_stream_after_the_grace_period(
    net_rig: Rig, netns: Callable[[str], Netns], outage_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("rtmpgone")
    published = await _publish_from_namespace(rig, ns, outage_media)
    stream, dest, dest_id = published.stream, published.dest, published.dest_id

    ns.link_down()
    down_at = time.monotonic()
    await api.wait_live(stream["id"], live=False, within=IDLE_TIMEOUT_SECONDS + GRACE_SECONDS / 2 + 4)
    ended_after = time.monotonic() - down_at
    print(f"\nRTMP ingest dead for good: stream ended {ended_after:.1f} s after the cut")
    assert ended_after >= IDLE_TIMEOUT_SECONDS + GRACE_SECONDS / 2 - 0.5, "ended before the idle timeout and grace"
    status = await api.wait_state(dest_id, "idle", within=8)
    assert status["restarts"] == 0, status
    await dest.ends_cleanly()
    got = dest.frames()
    assert len(got) >= 2 * GOP and got == outage_media.ref_flv[: len(got)], "the destination's video is not unbroken"
    api.assert_no_secrets()
