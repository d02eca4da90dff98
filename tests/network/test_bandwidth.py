"""A destination whose link carries half the stream's bitrate (`tc tbf` on the veth).

What a user checks: the relay's memory stays flat (its queue to that push is bounded and skips to
keyframes), the push's status says it is falling behind and reports what the destination really took
(the link's rate, not ffmpeg's average of what it wrote into its socket), and the other destination gets
every packet."""

from __future__ import annotations

import asyncio
import re
import statistics
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import Media, rss_kib
from tests.network.helpers import ns_receiver
from tests.support.netns import Netns
from tests.support.relay_process import ADMIN_KEY

pytestmark = [pytest.mark.integration, pytest.mark.network]

LINK_KBIT = 550
"""Half of the test stream (1000 kbit/s video + 96 kbit/s audio)."""
ACKED_WITHIN = (0.75, 1.1)
"""The acknowledged rate the status reports, as a share of the link's rate (TCP and RTMP overheads; tbf's
burst)."""
MAX_BEHIND_SECONDS = 5.0
"""RELAY_PUSH_MAX_BEHIND_SECONDS: past it the push skips to a keyframe (the default policy)."""
RSS_GROWTH_CEILING_KIB = 30 * 1024
"""What the relay's RSS may gain from the first seconds to the end: bounded queues, not 30 s of video."""


def scrape(base_url: str) -> str:
    """/metrics, as Prometheus reads it."""
    request = urllib.request.Request(f"{base_url}/metrics", headers={"Authorization": f"APIKey {ADMIN_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return str(response.read().decode())


@pytest.mark.timeout(90)
async def test_destination_behind_half_the_bitrate_keeps_memory_flat_and_the_other_whole(
    net_rig: Rig, netns: Callable[[str], Netns], outage_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("slow")
    ns.rate_limit(LINK_KBIT)
    slow = await ns_receiver(rig, ns, "slow")
    steady = await rig.receiver("steady")
    stream = await api.stream()
    slow_id = (await api.add_restream(stream["id"], slow.uri(), slow.key))["id"]
    steady_id = (await api.add_restream(stream["id"], steady.uri(), steady.key))["id"]
    publisher = await rig.publish(outage_media.flv, stream["push_url"])
    await api.wait_state(slow_id, "running", within=10)
    await asyncio.sleep(3)
    baseline = rss_kib(api.pid)
    peak, statuses, metrics = baseline, list[tuple[float, dict[str, Any]]](), ""
    started = time.monotonic()
    while publisher.proc is not None and publisher.proc.returncode is None:
        peak = max(peak, rss_kib(api.pid))
        statuses.append((round(time.monotonic() - started, 1), await api.status(slow_id)))
        if len(statuses) == 10:
            metrics = await asyncio.to_thread(scrape, api.relay.base_url)
        await asyncio.sleep(1)
    code, err = await publisher.wait(within=5)
    assert code == 0, err
    first_overflow = next((at for at, s in statuses if s["overflows"] > 0), None)
    last = statuses[-1][1]
    running = [s for at, s in statuses if s["state"] == "running" and at >= 5 and s["acked_bitrate_kbps"]]
    acked = statistics.median(s["acked_bitrate_kbps"] for s in running)
    written = statistics.median(s["bitrate_kbps"] for s in running)
    unacked = max(s["unacked_bytes"] for s in running)
    behind = max(s["behind_live_seconds"] for s in running)
    print(
        f"\nhalf-rate link: relay RSS {baseline // 1024} MB after 3 s, peak {peak // 1024} MB; first overflow "
        f"{first_overflow} s after; at the end {last['overflows']} overflow(s), state {last['state']}, "
        f"restarts {last['restarts']}, {last['frames']} frames of {len(outage_media.ref_flv)}; "
        f"acknowledged {acked} kbit/s (median) where ffmpeg says {written}; at most {unacked} bytes "
        f"unacknowledged ({unacked * 8 / 1000 / LINK_KBIT:.1f} s of the link), {behind} s behind live; "
        f"last error {last['last_error']!r}"
    )
    await steady.ends_cleanly()
    assert steady.frames() == outage_media.ref_flv, "the other destination saw a gap"
    assert (await api.status(steady_id))["restarts"] == 0
    assert peak - baseline < RSS_GROWTH_CEILING_KIB, f"relay RSS grew by {(peak - baseline) // 1024} MB"
    # ffmpeg's figures still look healthy (its average bitrate is what it wrote into the kernel); what
    # says that this destination cannot keep up is the count of skips to a keyframe.
    assert first_overflow is not None, f"the status never said it fell behind: {last}"
    assert ACKED_WITHIN[0] * LINK_KBIT <= acked <= ACKED_WITHIN[1] * LINK_KBIT, f"acknowledged {acked} kbit/s"
    assert behind <= MAX_BEHIND_SECONDS + 2.0, f"{behind} s behind live: the policy did not act"
    assert any("behind live by" in (s["last_error"] or "") for _, s in statuses), "the status never said why"
    for gauge in ("acked_bits_per_second", "rtt_seconds", "unacked_bytes", "behind_live_seconds"):
        line = rf'^relay_restream_{gauge}\{{[^}}]*restream_id="{slow_id}"[^}}]*\}} (\S+)$'
        found = re.search(line, metrics, re.MULTILINE)
        assert found is not None and float(found.group(1)) > 0, f"/metrics lacks {gauge} of the slow push"
    assert slow.key not in metrics and steady.key not in metrics
    api.assert_no_secrets()
