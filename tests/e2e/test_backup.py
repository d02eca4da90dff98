"""The backup input through the real relay: two real encoders publish the same clip to a stream's
`push_url` and `backup_push_url`; the main is killed, silenced or comes back, and a real destination
must keep its one connection and receive the backup's very packets, then the main's again.

Each test prints the longest pause between two video packets at the destination around the switch
(`switch gap`), measured at the receiver as packets arrive."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import time
from typing import Any

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import GOP, Media
from tests.e2e.test_live import push_starts
from tests.support import Publisher, Receiver, video_frames

pytestmark = [pytest.mark.integration]

SWITCH_GAP_LIMIT_SECONDS = 1.5
"""The destination may pause this long at most: the input's drop or 1 s of silence, then the backup's
next keyframe (the test clip has one every second), plus the push's own buffering."""


async def stream_state(rig: Rig, stream_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await rig.api.call("GET", f"/streaming/streams/{stream_id}")
    return body


async def wait_input(rig: Rig, stream_id: int, stream_input: str, within: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + within
    while True:
        body = await stream_state(rig, stream_id)
        if body["input"] == stream_input:
            return body
        assert time.monotonic() < deadline, f"stream {stream_id} not fed by its {stream_input} input: {body['input']}"
        await asyncio.sleep(0.1)


def switch_gap(receiver: Receiver, after: float) -> float:
    """The longest pause between two video packets reaching `receiver` from `after` (monotonic) on."""
    times = [t for t in receiver.frame_times if t >= after - 0.5]
    return max((b - a for a, b in itertools.pairwise(times)), default=0.0)


def runs_of(got: list[str], source: list[str]) -> tuple[list[tuple[int, int]], list[int]]:
    """`got` cut into the longest runs of consecutive `source` packets, (start in source, length) each,
    and the indices in `got` of packets that are none of the source's (an MPEG-TS packet cut short)."""
    runs: list[tuple[int, int]] = []
    strangers: list[int] = []
    i = 0
    while i < len(got):
        best = (0, 0)
        for start in (s for s, md5 in enumerate(source) if md5 == got[i]):
            length = 0
            while i + length < len(got) and start + length < len(source) and got[i + length] == source[start + length]:
                length += 1
            best = max(best, (length, start))
        if not best[0]:
            strangers.append(i)
            i += 1
            continue
        runs.append((best[1], best[0]))
        i += best[0]
    return runs, strangers


def switch_points(runs: list[tuple[int, int]]) -> set[int]:
    """Indices in the received packets where a run ends (where a packet cut short by a switch may stand)."""
    return set(itertools.accumulate(length for _, length in runs))


async def publish_both(
    rig: Rig, media: Media, stream: dict[str, Any], *, main_url: str, backup_url: str, backup_first: bool = True
) -> Publisher:
    """Both encoders, a second apart: the backup first unless told (the main then takes over at its first
    keyframe and its content is a second behind the backup's)."""

    async def publish(url: str) -> Publisher:
        return await rig.publish(media.ts if url.startswith("srt:") else media.flv, url)

    first = await publish(backup_url if backup_first else main_url)
    await rig.api.wait_live(stream["id"])
    await asyncio.sleep(1.0)  # the second encoder starts a second later (the scenario, not a wait)
    second = await publish(main_url if backup_first else backup_url)
    await wait_input(rig, stream["id"], "main")
    return second if backup_first else first


@pytest.mark.timeout(90)
async def test_main_dropped_then_back_one_destination_connection_throughout(rig: Rig, long_media: Media) -> None:
    api = rig.api
    source = long_media.ref_flv
    stream = await api.stream()
    assert stream["backup_push_url"] == stream["push_url"].replace(f"/in/{stream['id']}?", f"/in/{stream['id']}b?")
    receiver = await rig.receiver("held", watch_frames=True)
    restream_id = (await api.add_restream(stream["id"], receiver.uri(), receiver.key))["id"]
    main = await publish_both(
        rig, long_media, stream, main_url=stream["push_url"], backup_url=stream["backup_push_url"]
    )
    body = await stream_state(rig, stream["id"])
    assert (body["live"], body["backup_live"], body["input"]) == (True, True, "main")
    await asyncio.sleep(2.0)  # the main feeds for a while

    killed_at = time.monotonic()
    main.sigkill()  # a drop: the backup takes over at its next keyframe
    await main.close()
    body = await wait_input(rig, stream["id"], "backup")
    assert body["live"] and body["backup_live"] and body["finished_at_primary"] is not None
    await asyncio.sleep(1.5)
    gap_rtmp = switch_gap(receiver, killed_at)
    assert receiver.running, "the destination's connection was closed by the switch"

    returned_at = time.monotonic()
    again = await rig.publish(long_media.flv, stream["push_url"])  # the main is back: the clip from its start
    await wait_input(rig, stream["id"], "main")
    code, err = await again.wait(within=long_media.seconds + 15)
    assert code == 0, err
    await receiver.ends_cleanly()
    print(
        f"\nswitch gap RTMP, main dropped -> backup: {gap_rtmp * 1000:.0f} ms; "
        f"backup -> main back: {switch_gap(receiver, returned_at) * 1000:.0f} ms"
    )
    assert gap_rtmp < SWITCH_GAP_LIMIT_SECONDS
    status = await api.wait_state(restream_id, "idle", within=5)
    assert status["restarts"] == 0 and push_starts(api.log(), restream_id) == 1, "the push was restarted"

    frames = video_frames(receiver.out)
    assert all(b.dts > a.dts for a, b in itertools.pairwise(frames)), "video DTS not strictly increasing"
    runs, strangers = runs_of([f.md5 for f in frames], source)
    assert not strangers, "FLV packets must pass whole"
    # The backup alone at first, the main from its first keyframe once it publishes, the backup from one
    # of its keyframes after the drop, the returning main's whole clip.
    assert len(runs) == 4, runs
    (first_start, _), (main_start, main_len), (backup_start, _), (back_start, back_len) = runs
    assert first_start == 0 and main_start == 0 and main_len >= 45
    assert backup_start % GOP == 0, "the backup was not joined on a keyframe"
    assert (back_start, back_len) == (0, len(source))
    api.assert_no_secrets()


@pytest.mark.timeout(90)
async def test_silent_srt_main_gives_way_to_the_srt_backup(rig: Rig, long_media: Media) -> None:
    api = rig.api
    source = long_media.ref_ts_to_flv
    stream = await api.stream()
    assert stream["backup_push_url_srt"].endswith(f"?streamid={stream['id']}b#{stream['token']}")
    receiver = await rig.receiver("held", watch_frames=True)
    restream_id = (await api.add_restream(stream["id"], receiver.uri(), receiver.key))["id"]
    main = await publish_both(
        rig, long_media, stream, main_url=stream["push_url_srt"], backup_url=stream["backup_push_url_srt"]
    )
    await asyncio.sleep(2.0)

    assert main.proc is not None
    stopped_at = time.monotonic()
    os.killpg(main.proc.pid, signal.SIGSTOP)  # still connected, sending nothing
    try:
        await wait_input(rig, stream["id"], "backup", within=4)
        switched_after = time.monotonic() - stopped_at
        await asyncio.sleep(1.5)
        gap_srt = switch_gap(receiver, stopped_at)
    finally:
        main.sigkill()
        # What is left of the stopped group must run to die; it may be reaped already.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(main.proc.pid, signal.SIGCONT)
    await main.close()
    await receiver.ends_cleanly(within=long_media.seconds + 15)
    print(f"\nswitch gap SRT, main silent -> backup: {gap_srt * 1000:.0f} ms (switched after {switched_after:.2f} s)")
    assert gap_srt < SWITCH_GAP_LIMIT_SECONDS + 1.0  # silence is only noticed after input_switch_silence_seconds
    status = await api.wait_state(restream_id, "idle", within=5)
    assert status["restarts"] == 0 and push_starts(api.log(), restream_id) == 1

    got = receiver.frames()
    runs, strangers = runs_of(got, source)
    # A TS packet of the main cut short by its silence, and the SRT leg's last packet (see srt_tail_ok).
    assert len(strangers) <= 2 and all(i == len(got) - 1 or i in switch_points(runs) for i in strangers), strangers
    assert len(runs) == 3, runs  # the backup until the main's first keyframe, the main, the backup again
    (first_start, _), (main_start, main_len), (backup_start, backup_len) = runs
    assert first_start == 0 and main_start == 0 and main_len >= 45
    assert backup_start % GOP == 0 and backup_start + backup_len >= len(source) - 3  # SRT may lose a tail
    api.assert_no_secrets()


@pytest.mark.timeout(60)
async def test_backup_only_feeds_the_destinations(rig: Rig, media: Media) -> None:
    api = rig.api
    stream = await api.stream()
    receiver = await rig.receiver("backup-only")
    restream_id = (await api.add_restream(stream["id"], receiver.uri(), receiver.key))["id"]
    publisher = await rig.publish(media.flv, stream["backup_push_url"])
    await api.wait_live(stream["id"])
    body = await stream_state(rig, stream["id"])
    assert (body["live"], body["backup_live"], body["input"]) == (True, True, "backup")
    assert body["started_at_backup"] is not None and body["started_at_primary"] is None
    code, err = await publisher.wait(within=media.seconds + 15)
    assert code == 0, err
    await receiver.ends_cleanly()
    assert receiver.frames() == media.ref_flv
    assert (await api.wait_state(restream_id, "idle", within=5))["restarts"] == 0
    await api.wait_live(stream["id"], live=False)
    body = await stream_state(rig, stream["id"])
    assert body["backup_live"] is False and body["finished_at_backup"] is not None
    api.assert_no_secrets()


@pytest.mark.timeout(90)
async def test_rtmp_main_with_an_srt_backup_restarts_the_pushes_on_the_switch(rig: Rig, long_media: Media) -> None:
    """FLV and MPEG-TS cannot follow each other in one push: the switch restarts it on the backup."""
    api = rig.api
    stream = await api.stream()
    first = await rig.receiver("first")
    restream_id = (await api.add_restream(stream["id"], first.uri(), first.key))["id"]
    main = await publish_both(
        rig,
        long_media,
        stream,
        main_url=stream["push_url"],
        backup_url=stream["backup_push_url_srt"],
        backup_first=False,
    )
    await api.wait_state(restream_id, "running", within=10, check=lambda s: s["frames"] >= 30)
    main.sigkill()
    await main.close()
    await wait_input(rig, stream["id"], "backup")
    assert await first.finished(within=8) is not None, "the FLV push was not ended for the TS backup"
    # The push restarted at once on the backup's MPEG-TS (a receiver that accepts one connection, like
    # this one, is gone by then; a real destination takes the new connection).
    assert push_starts(api.log(), restream_id) >= 2
    assert "another configuration, pushes restart" in api.log()
    assert [f.md5 for f in video_frames(first.out)] == long_media.ref_flv[: len(video_frames(first.out))]
    api.assert_no_secrets()
