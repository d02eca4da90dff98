"""Faults around a live restream: destinations down, killed, slow; the push's ffmpeg killed; the relay
killed and restarted. Every check is on what real receivers got, compared with the source per packet."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media, push_pids, rss_kib, srt_tail_ok
from tests.support import Receiver, is_contiguous_run, pid_alive

pytestmark = [pytest.mark.integration]

RSS_CEILING_KIB = 300 * 1024


def ends_with_run(got: list[str], source: list[str], max_missing_head: int) -> None:
    """`got` is one unbroken run of `source` reaching its end, missing at most `max_missing_head` packets."""
    assert got, "nothing received"
    assert is_contiguous_run(got, source), "received video is not one unbroken run of the source"
    assert got == source[len(source) - len(got) :], "received video does not reach the end of the source"
    assert len(got) >= len(source) - max_missing_head, f"only {len(got)} of {len(source)} video packets"


@pytest.mark.timeout(60)
async def test_destination_down_at_start_is_retried_until_it_listens(rig: Rig, long_media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    late = rig.tmp / "late.flv"
    receiver = Receiver(late, key="k3y-down-at-start-SECRET")
    api.secrets.add(receiver.key)
    restream = await api.add_restream(stream["id"], receiver.uri(), receiver.key)
    publisher = await rig.publish(long_media.flv, stream["push_url"])
    status = await api.wait_state(
        restream["id"], "retrying", "failed", within=10, check=lambda s: bool(s["last_error"])
    )
    assert receiver.key not in status["last_error"]
    assert "refused" in status["last_error"].lower(), status
    listed = await api.call("GET", f"/streaming/restreams/{restream['id']}")
    assert receiver.key not in str(listed["status"])

    rig.receivers.append(receiver)
    await receiver.start()
    status = await api.wait_state(restream["id"], "running", within=10)
    assert status["restarts"] >= 1
    code, err = await publisher.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await receiver.ends_cleanly()
    # It joined late, on a keyframe (the hub's cached GOP), and got everything from there on.
    got = receiver.frames()
    ends_with_run(got, long_media.ref_flv, max_missing_head=len(long_media.ref_flv) - 5 * GOP)
    assert (len(long_media.ref_flv) - len(got)) % GOP == 0, "did not start on a keyframe"
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_killed_destination_is_restarted_and_the_other_sees_no_gap(rig: Rig, long_media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    victim = await rig.receiver("victim")
    steady = await rig.receiver("steady")
    victim_id = (await api.add_restream(stream["id"], victim.uri(), victim.key))["id"]
    steady_id = (await api.add_restream(stream["id"], steady.uri(), steady.key))["id"]
    publisher = await rig.publish(long_media.flv, stream["push_url"])
    await api.wait_state(victim_id, "running", within=10, check=lambda s: s["frames"] >= 60)

    victim.kill()
    assert await victim.finished(within=5) is not None
    again = await rig.receiver("victim-again", port=victim.port, key=victim.key)
    status = await api.wait_state(victim_id, "running", within=10, check=lambda s: s["restarts"] >= 1)
    assert status["restarts"] >= 1
    assert steady.running

    code, err = await publisher.wait(within=long_media.seconds + 15)
    assert code == 0, err
    for receiver in (steady, again):
        await receiver.ends_cleanly()
    assert steady.frames() == long_media.ref_flv, "the healthy destination saw a gap"
    assert (await api.status(steady_id))["restarts"] == 0
    ends_with_run(again.frames(), long_media.ref_flv, max_missing_head=len(long_media.ref_flv) - 2 * GOP)
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_slow_destination_does_not_hold_back_the_others(rig: Rig, long_media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    fast = await rig.receiver("fast")
    srt = await rig.receiver("srt", srt=True)
    slow = await rig.receiver("slow")
    slow_port = await rig.throttled_proxy(slow.port, bytes_per_second=16_000)  # about 1/8 of the stream
    fast_id = (await api.add_restream(stream["id"], fast.uri(), fast.key))["id"]
    srt_id = (await api.add_restream(stream["id"], srt.uri()))["id"]
    await api.add_restream(stream["id"], slow.uri(port=slow_port), slow.key)
    publisher = await rig.publish(long_media.flv, stream["push_url"])

    peak = 0

    async def watch_rss() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_kib(api.pid))
            await asyncio.sleep(0.2)

    watcher = asyncio.create_task(watch_rss())
    try:
        code, err = await publisher.wait(within=long_media.seconds + 15)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    assert code == 0, err
    assert 0 < peak < RSS_CEILING_KIB, f"relay RSS peaked at {peak // 1024} MB"
    await fast.ends_cleanly()
    await srt.ends_cleanly()
    assert fast.frames() == long_media.ref_flv, "the fast destination saw a gap"
    assert srt_tail_ok(srt.frames(), long_media.ref_flv_to_ts), "the SRT destination saw a gap"
    for rid in (fast_id, srt_id):
        assert (await api.status(rid))["restarts"] == 0
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_sigkilled_push_ffmpeg_is_restarted(rig: Rig, long_media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    first = await rig.receiver("first")
    restream_id = (await api.add_restream(stream["id"], first.uri(), first.key))["id"]
    publisher = await rig.publish(long_media.flv, stream["push_url"])
    await api.wait_state(restream_id, "running", within=10, check=lambda s: s["frames"] >= 30)
    pids = push_pids(api.pid, first.port)
    assert len(pids) == 1, rig.note_children()
    rig.note_children()
    os.kill(pids[0], signal.SIGKILL)
    assert await first.finished(within=5) is not None  # its connection went with the push
    second = await rig.receiver("second", port=first.port, key=first.key)
    status = await api.wait_state(
        restream_id, "running", within=10, check=lambda s: s["restarts"] >= 1 and s["frames"] > 0
    )
    assert status["last_error"] is None or first.key not in status["last_error"]
    new_pids = push_pids(api.pid, first.port)
    assert new_pids and pids[0] not in new_pids and not pid_alive(pids[0])
    code, err = await publisher.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await second.ends_cleanly()
    ends_with_run(second.frames(), long_media.ref_flv, max_missing_head=len(long_media.ref_flv) - 2 * GOP)
    api.assert_no_secrets()


@pytest.mark.timeout(90)
async def test_relay_killed_and_restarted_keeps_definitions_and_pushes_again(
    rig: Rig, media: Media, long_media: Media
) -> None:
    api = rig.api
    stream = await api.stream()
    before = await rig.receiver("before")
    restream = await api.add_restream(stream["id"], before.uri(), before.key, name="persisted")
    publisher = await rig.publish(long_media.flv, stream["push_url"])
    await api.wait_state(restream["id"], "running", within=10)

    await rig.restart_relay()
    # The publisher lost its connection; the orphaned push saw EOF and ended its destination.
    code, _ = await publisher.wait(within=10)
    assert code != 0
    assert await before.finished(within=10) is not None
    assert (await api.call("GET", f"/streaming/streams/{stream['id']}"))["token"] == stream["token"]
    after_restart = await api.call("GET", f"/streaming/restreams/{restream['id']}")
    assert {k: after_restart[k] for k in ("uri", "stream_id", "active", "name")} == {
        k: restream[k] for k in ("uri", "stream_id", "active", "name")
    }
    assert after_restart["status"]["state"] == "idle"

    after = await rig.receiver("after", port=before.port, key=before.key)
    publisher = await rig.publish(media.flv, stream["push_url"])
    await api.wait_state(restream["id"], "running", within=10)
    code, err = await publisher.wait(within=media.seconds + 15)
    assert code == 0, err
    await after.ends_cleanly()
    assert after.frames() == media.ref_flv
    api.assert_no_secrets()
