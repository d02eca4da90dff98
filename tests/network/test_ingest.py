"""Publishers on impaired links: the encoder sits in its own namespace and reaches the relay across a veth,
through the impairing proxy (SRT: datagrams lost and delayed) or a link that goes dead (RTMP).

What a user checks: what reaches the destinations, and how the stream's state follows the publisher."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media
from tests.support import Publisher, ffmpeg_publish_argv
from tests.support.impair import UdpImpairment, udp_impair
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
