"""Destinations that reset us (on connect, mid-stream) and one that accepts but never reads (its TCP
window closes), through the impairing proxy in front of destinations inside a namespace.

What a user checks: each such push says why in its status and is retried, the relay's memory stays flat,
and the stream's other destination gets every packet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media, rss_kib
from tests.network.helpers import ns_receiver
from tests.support import is_contiguous_run
from tests.support.impair import TcpImpairment, tcp_impair
from tests.support.netns import Netns

pytestmark = [pytest.mark.integration, pytest.mark.network]

RESET_AFTER_BYTES = 400_000
"""About 3 s of the test stream."""
NEVER_READS_DETECTED_WITHIN_SECONDS = 15.0
"""ffmpeg's read/write timeout (10 s, relay/push/command.py) plus its exit and the status poll."""
STOPPED_READING_DETECTED_WITHIN_SECONDS = 15.0
"""The ack stall (4 s, sampled twice a second) once the reader's receive buffer is full: the proxy's, on
loopback, as large as autotuning made it while it read, takes 2 to 5 s of media (measured: noticed 6.5 to
9.5 s after the stall). Before the kernel's view was read: over 30 s (measured), ffmpeg's progress running
on into its send buffer, autotuned up to tcp_wmem's 4 MB."""


@pytest.mark.timeout(60)
async def test_resets_on_connect_and_mid_stream_are_retried_and_the_other_is_whole(
    net_rig: Rig, netns: Callable[[str], Netns], long_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("rst")
    steady = await ns_receiver(rig, ns, "steady")
    refused = await ns_receiver(rig, ns, "refused")
    cut = await ns_receiver(rig, ns, "cut")
    on_connect = await rig.stack.enter_async_context(
        tcp_impair(("127.0.0.1", 0), (ns.address, refused.port), TcpImpairment(reset_on_connect=True))
    )
    mid = await rig.stack.enter_async_context(
        tcp_impair(("127.0.0.1", 0), (ns.address, cut.port), TcpImpairment(reset_after_bytes=RESET_AFTER_BYTES))
    )
    stream = await api.stream()
    steady_id = (await api.add_restream(stream["id"], steady.uri(), steady.key))["id"]
    refused_uri = refused.uri(host="127.0.0.1", port=on_connect.port)
    refused_id = (await api.add_restream(stream["id"], refused_uri, refused.key))["id"]
    cut_id = (await api.add_restream(stream["id"], cut.uri(host="127.0.0.1", port=mid.port), cut.key))["id"]
    publisher = await rig.publish(long_media.flv, stream["push_url"])

    # Mid-stream: the reset ends the push and its destination's connection; the destination comes back.
    await api.wait_state(cut_id, "running", within=10)
    reset_at = time.monotonic()
    while mid.stats.resets == 0:
        assert time.monotonic() - reset_at < 10, "the proxy never reset the connection"
        await asyncio.sleep(0.05)
    assert await cut.finished(within=5) is not None
    again = await ns_receiver(rig, ns, "cut-again", port=cut.port, key=cut.key)
    status = await api.wait_state(cut_id, "running", within=10, check=lambda s: s["restarts"] >= 1)
    print(f"\nmid-stream reset: running again, {status['restarts']} restart(s), last error {status['last_error']!r}")

    refused_status = await api.wait_state(
        refused_id, "retrying", "starting", within=10, check=lambda s: s["restarts"] >= 2
    )
    print(f"reset on connect: {refused_status['restarts']} restarts, last error {refused_status['last_error']!r}")
    assert "reset" in (refused_status["last_error"] or "").lower(), refused_status
    assert on_connect.stats.resets >= 2

    code, err = await publisher.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await steady.ends_cleanly()
    await again.ends_cleanly()
    assert steady.frames() == long_media.ref_flv, "the other destination saw a gap"
    assert (await api.status(steady_id))["restarts"] == 0
    got = again.frames()
    assert got and is_contiguous_run(got, long_media.ref_flv), "after the reset: not one unbroken run"
    assert got[-1] == long_media.ref_flv[-1] and len(got) >= 2 * GOP, f"after the reset: {len(got)} packets"
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_destination_that_accepts_but_never_reads_is_noticed_and_retried(
    net_rig: Rig, netns: Callable[[str], Netns], outage_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("zwin")
    steady = await ns_receiver(rig, ns, "steady")
    deaf = await ns_receiver(rig, ns, "deaf")
    proxy = await rig.stack.enter_async_context(
        tcp_impair(("127.0.0.1", 0), (ns.address, deaf.port), TcpImpairment(zero_window=True))
    )
    stream = await api.stream()
    steady_id = (await api.add_restream(stream["id"], steady.uri(), steady.key))["id"]
    deaf_id = (await api.add_restream(stream["id"], deaf.uri(host="127.0.0.1", port=proxy.port), deaf.key))["id"]
    publisher = await rig.publish(outage_media.flv, stream["push_url"])
    await api.wait_state(steady_id, "running", within=10)
    started = time.monotonic()
    rss_before = rss_kib(api.pid)
    status = await api.wait_state(
        deaf_id, "retrying", "starting", within=NEVER_READS_DETECTED_WITHIN_SECONDS, check=lambda s: s["restarts"] >= 1
    )
    detected_after = time.monotonic() - started
    print(f"\nnever reads: retried after {detected_after:.1f} s: {status['last_error']!r}")
    assert status["last_error"], status
    assert proxy.stats.connections >= 1

    assert rss_kib(api.pid) - rss_before < 30 * 1024

    await publisher.stop()
    await steady.ends_cleanly()
    got = steady.frames()
    assert len(got) >= 10 * GOP and got == outage_media.ref_flv[: len(got)], "the other destination saw a gap"
    assert (await api.status(steady_id))["restarts"] == 0
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_destination_that_stops_reading_mid_stream_is_noticed_within_the_stall_time(
    net_rig: Rig, netns: Callable[[str], Netns], outage_media: Media
) -> None:
    rig, api = net_rig, net_rig.api
    ns = netns("stall")
    frozen = await ns_receiver(rig, ns, "frozen")
    freezer = await rig.stack.enter_async_context(
        tcp_impair(("127.0.0.1", 0), (ns.address, frozen.port), TcpImpairment())
    )
    stream = await api.stream()
    frozen_uri = frozen.uri(host="127.0.0.1", port=freezer.port)
    frozen_id = (await api.add_restream(stream["id"], frozen_uri, frozen.key))["id"]
    await rig.publish(outage_media.flv, stream["push_url"])
    # Mid-stream: it stops reading (its window fills and closes) after a few seconds of media.
    await api.wait_state(frozen_id, "running", within=10, check=lambda s: s["frames"] >= 2 * GOP)
    freezer.stall()
    stalled_at = time.monotonic()
    status = await api.wait_state(frozen_id, "retrying", within=STOPPED_READING_DETECTED_WITHIN_SECONDS)
    print(f"stops reading: retried after {time.monotonic() - stalled_at:.1f} s: {status['last_error']!r}")
    assert (status["last_error"] or "").startswith("stalled: destination acknowledged nothing"), status
