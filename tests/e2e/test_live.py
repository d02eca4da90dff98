"""Changes while a stream is live: the encoder drops and returns, destinations are added, paused,
resumed, moved and deleted, audio is dropped or replaced by silence."""

from __future__ import annotations

import asyncio
import itertools
import re
import time

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media, split_as_two_plays
from tests.support import stream_kinds, video_frames

pytestmark = [pytest.mark.integration]

FIRST_FRAME_WITHIN_SECONDS = 3.0


def push_starts(log: str, restream_id: int) -> int:
    """How many times the relay logged this restream's push starting."""
    return len(re.findall(rf"restream {restream_id} \([^)]*\): \w+ -> starting", log))


@pytest.mark.timeout(60)
async def test_publisher_drop_and_return_keeps_the_destination_connected(rig: Rig, media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    receiver = await rig.receiver("held")
    restream_id = (await api.add_restream(stream["id"], receiver.uri(), receiver.key))["id"]
    first = await rig.publish(media.flv, stream["push_url"])
    await api.wait_state(restream_id, "running", within=10, check=lambda s: s["frames"] >= 45)

    first.sigkill()  # a drop, not an unpublish
    await first.close()
    await asyncio.sleep(3.0)  # the encoder is away this long (the scenario itself, not a wait for a condition)
    assert receiver.running, "the destination's connection was closed during the drop"
    assert (await api.call("GET", f"/streaming/streams/{stream['id']}"))["live"] is True
    assert (await api.status(restream_id))["state"] == "running"

    second = await rig.publish(media.flv, stream["push_url"])
    code, err = await second.wait(within=media.seconds + 15)
    assert code == 0, err
    await receiver.ends_cleanly()
    status = await api.wait_state(restream_id, "idle", within=5)
    assert status["restarts"] == 0
    assert push_starts(api.log(), restream_id) == 1, "the push was restarted"

    frames = video_frames(receiver.out)
    dts = [f.dts for f in frames]
    assert all(b > a for a, b in itertools.pairwise(dts)), "video DTS not strictly increasing"
    plays = split_as_two_plays([f.md5 for f in frames], media.ref_flv)
    assert plays is not None, "received video is not the first play cut short followed by the second"
    cut, second_play = plays
    assert cut >= 45 and second_play == len(media.ref_flv), plays
    api.assert_no_secrets()


@pytest.mark.timeout(75)
async def test_destinations_added_paused_resumed_moved_and_deleted_while_live(rig: Rig, long_media: Media) -> None:
    api = rig.api
    source = long_media.ref_flv
    stream = await api.stream()
    steady = await rig.receiver("steady")
    steady_id = (await api.add_restream(stream["id"], steady.uri(), steady.key))["id"]
    publisher = await rig.publish(long_media.flv, stream["push_url"])
    await api.wait_state(steady_id, "running", within=10, check=lambda s: s["frames"] >= 15)

    # Added while live: its first frame (a keyframe, from the hub's cached GOP) arrives fast.
    late = await rig.receiver("late", watch_frames=True)
    asked = time.monotonic()
    late_id = (await api.add_restream(stream["id"], late.uri(), late.key))["id"]
    assert await late.first_frame(within=FIRST_FRAME_WITHIN_SECONDS) - asked < FIRST_FRAME_WITHIN_SECONDS

    # Paused: only that push stops, its receiver ends; the other one carries on.
    await api.patch_restream(late_id, active=False)
    assert await late.finished(within=8) is not None, "the paused push kept its destination open"
    assert (await api.status(late_id))["state"] == "disabled"
    assert steady.running and (await api.status(steady_id))["state"] == "running"

    # Resumed: starts again at once.
    resumed = await rig.receiver("resumed", port=late.port, key=late.key, watch_frames=True)
    asked = time.monotonic()
    await api.patch_restream(late_id, active=True)
    assert await resumed.first_frame(within=FIRST_FRAME_WITHIN_SECONDS) - asked < FIRST_FRAME_WITHIN_SECONDS

    # Moved to another receiver: the old one ends, the new one gets the stream.
    moved = await rig.receiver("moved", watch_frames=True)
    asked = time.monotonic()
    await api.patch_restream(late_id, uri=moved.uri())
    api.secrets.add(moved.key)
    assert await moved.first_frame(within=FIRST_FRAME_WITHIN_SECONDS) - asked < FIRST_FRAME_WITHIN_SECONDS
    assert await resumed.finished(within=8) is not None, "the old destination was not released"

    # Deleted: its push ends, the other continues.
    await api.call("DELETE", f"/streaming/restreams/{late_id}", expect=204)
    assert await moved.finished(within=8) is not None, "the deleted push kept its destination open"
    await api.call("GET", f"/streaming/restreams/{late_id}", expect=404)
    assert steady.running and publisher.proc is not None and publisher.proc.returncode is None, (
        "the publisher ended before the last change: the clip is too short for this machine"
    )

    code, err = await publisher.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await steady.ends_cleanly()
    assert steady.frames() == source, "the untouched destination saw a gap"
    assert (await api.status(steady_id))["restarts"] == 0
    for receiver in (late, resumed, moved):
        got = receiver.frames()
        assert got, f"{receiver.out.name}: nothing recorded"
        start = next(i for i in range(0, len(source), GOP) if source[i : i + len(got)] == got)
        assert start % GOP == 0, f"{receiver.out.name} did not start on a keyframe"
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_no_audio_drop_and_silence(rig: Rig, media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    dropped = await rig.receiver("dropped")
    silenced = await rig.receiver("silenced")
    srt_silenced = await rig.receiver("srt-silenced", srt=True)
    ids = [
        (await api.add_restream(stream["id"], dropped.uri(), dropped.key, no_audio=True, no_audio_mode="drop"))["id"],
        (await api.add_restream(stream["id"], silenced.uri(), silenced.key, no_audio=True, no_audio_mode="silence"))[
            "id"
        ],
        (await api.add_restream(stream["id"], srt_silenced.uri(), no_audio=True, no_audio_mode="silence"))["id"],
    ]
    publisher = await rig.publish(media.flv, stream["push_url"])
    code, err = await publisher.wait(within=media.seconds + 15)
    assert code == 0, err
    for receiver in (dropped, silenced, srt_silenced):
        await receiver.ends_cleanly()
    for rid in ids:
        assert (await api.wait_state(rid, "idle", within=5))["restarts"] == 0

    assert stream_kinds(dropped.out) == ["h264,video"]
    assert sorted(stream_kinds(silenced.out)) == ["aac,audio", "h264,video"]
    assert sorted(stream_kinds(srt_silenced.out)) == ["aac,audio", "h264,video"]
    assert dropped.frames() == media.ref_flv
    assert silenced.frames() == media.ref_flv
    api.assert_no_secrets()
