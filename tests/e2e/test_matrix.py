"""Ingest {RTMP, RTMPS, SRT} x destination {RTMP, RTMPS, SRT} through the whole relay process.

One publish per ingest protocol feeds three restreams at once (nine combinations in three runs). The
destinations listen before the publisher starts, so every video packet must arrive, byte for byte
(compared per packet with framemd5; where the container changes, against the same clip remuxed by
ffmpeg into the destination's container). The publisher then ends normally: every push must end at
once and cleanly, the receivers exiting 0 with a complete file.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import Media, srt_tail_ok

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.mark.parametrize("ingest", ["rtmp", "rtmps", "srt"])
async def test_every_destination_gets_every_video_packet(rig: Rig, media: Media, ingest: str) -> None:
    await every_destination_gets_every_video_packet(rig, media, ingest)


@pytest.mark.relay_env(RELAY_EVENT_LOOP="uvloop")
@pytest.mark.parametrize("ingest", ["rtmp", "rtmps", "srt"])
async def test_on_uvloop_every_destination_gets_every_video_packet(rig: Rig, media: Media, ingest: str) -> None:
    """The same on a node with RELAY_EVENT_LOOP=uvloop (its transports ask for other read sizes, a child's
    stdin is a socket pair, its TLS is its own)."""
    await every_destination_gets_every_video_packet(rig, media, ingest, on_uvloop=True)


@pytest.mark.relay_env(RELAY_MERGE_INTERVAL_MS="250")
@pytest.mark.parametrize("ingest", ["rtmp", "rtmps", "srt"])
async def test_merged_io_brings_every_destination_every_video_packet(rig: Rig, media: Media, ingest: str) -> None:
    """The same with each push written at most every 250 ms and an RTMP publisher read as seldom (a quarter
    of a second of media in each read and write, the stream's end with what was still waiting)."""
    await every_destination_gets_every_video_packet(rig, media, ingest)


async def every_destination_gets_every_video_packet(
    rig: Rig, media: Media, ingest: str, *, on_uvloop: bool = False
) -> None:
    api = rig.api
    stream = await api.stream(f"matrix-{ingest}")
    rtmp = await rig.receiver("rtmp")
    rtmps_backend = await rig.receiver("rtmps")
    srt = await rig.receiver("srt", srt=True)
    rtmps_port = await rig.tls_proxy(rtmps_backend.port)
    # The SRT push carries Gcore's common buffer options: ffmpeg's libsrt sizes its UDP socket from them.
    srt_uri = srt.uri() + "&send_buffer_size=1048576&recv_buffer_size=1048576"
    ids = {
        "rtmp": (await api.add_restream(stream["id"], rtmp.uri(), rtmp.key))["id"],
        "rtmps": (await api.add_restream(stream["id"], rtmps_backend.uri("rtmps", rtmps_port), rtmps_backend.key))[
            "id"
        ],
        "srt": (await api.add_restream(stream["id"], srt_uri))["id"],
    }
    url = {
        "rtmp": stream["push_url"],
        "rtmps": stream["push_url_rtmps"],
        "srt": stream["push_url_srt"].replace("#", "%23"),
    }[ingest]
    source = media.ts if ingest == "srt" else media.flv
    publisher = await rig.publish(source, url)
    await api.wait_live(stream["id"], within=10)
    for rid in ids.values():
        await api.wait_state(rid, "running", within=10)
    if on_uvloop:
        assert rig.relay.process is not None
        assert maps_uvloop(rig.relay.process.pid), "the relay does not run on uvloop"
    code, err = await publisher.wait(within=media.seconds + 15)
    assert code == 0, err
    ended_at = time.monotonic()

    # A deliberate end: the pushes end at once and cleanly.
    receivers = {"rtmp": rtmp, "rtmps": rtmps_backend, "srt": srt}
    for name in ("rtmp", "rtmps"):
        await receivers[name].ends_cleanly()
        assert time.monotonic() - ended_at < 3, f"{name}: the push did not end at once"
    # ffmpeg's SRT caller lingers 2 s for acknowledgements before it closes; an encrypted listener then
    # notices the end only when its peer idle timeout fires, so time the relay's side here.
    await api.wait_state(ids["srt"], "idle", within=6 - (time.monotonic() - ended_at))
    await srt.ends_cleanly()
    for name, rid in ids.items():
        status = await api.wait_state(rid, "idle", within=5)
        assert status["restarts"] == 0, (name, status)
        assert status["bytes"] > 0, (name, status)

    for name, receiver in receivers.items():
        got = receiver.frames()
        want = media.reference(ingest, name)
        if "srt" in (ingest, name):
            # An SRT caller loses its last kilobytes on close (ffmpeg's, not the relay's; see Media.make).
            assert srt_tail_ok(got, want), f"{ingest} -> {name}: {len(got)} of {len(want)} video packets"
        else:
            assert len(got) == len(want), f"{ingest} -> {name}: {len(got)} of {len(want)} video packets"
            assert got == want, f"{ingest} -> {name}: video differs from the source"
    api.assert_no_secrets()


def maps_uvloop(pid: int) -> bool:
    """Whether process `pid` has uvloop's extension mapped."""
    return "uvloop" in Path(f"/proc/{pid}/maps").read_text()
