"""Pulled sources (`pull: true`) through the whole relay process: the relay reads a real RTMP server, SRT
listener or HLS playlist over HTTP with its own ffmpeg and feeds the stream's restreams.

Each source plays the test clip to an RTMP and an SRT destination that listen before the pull starts:
every video packet must arrive, byte for byte (compared with framemd5 against the clip remuxed the way
the media travels: source container -> FLV (the pull) -> destination container). Then the faults: a
source down at start (the pull retries and says why), a source killed mid-stream (the destinations
are held through the grace period and the pull comes back), the second alternative taking over.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import Rig
from tests.e2e.helpers import SRT_TAIL_FRAMES, Media, srt_tail_ok
from tests.support import MediaCache, Publisher, Receiver, free_port, md5s, wait_for, wait_listening
from tests.support.scrape import Scraper
from tests.support.sources import http_server_argv, rtmp_source_argv, srt_source_argv, write_hls

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


async def _source(rig: Rig, argv: list[str]) -> Publisher:
    source = Publisher(argv)
    rig.publishers.append(source)
    return await source.start()


async def _pull_status(rig: Rig, stream_id: int) -> dict[str, Any]:
    stream = await rig.api.call("GET", f"/streaming/streams/{stream_id}")
    status: dict[str, Any] = stream["status"]["pull"]
    return status


async def _wait_pull(rig: Rig, stream_id: int, state: str, within: float = 15.0, **expected: Any) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        status = await _pull_status(rig, stream_id)
        ok = status is not None and status["state"] == state
        return status if ok and all(status[k] == v for k, v in expected.items()) else None

    return await wait_for(reached, within, f"pull of stream {stream_id} {state} {expected}")


async def _pulled_stream(rig: Rig, name: str) -> tuple[dict[str, Any], Receiver, Receiver, dict[str, int]]:
    """A stream with an RTMP and an SRT destination listening, not pulling yet."""
    stream = await rig.api.stream(name)
    rtmp = await rig.receiver(f"{name}-rtmp", watch_frames=True)
    srt = await rig.receiver(f"{name}-srt", srt=True)
    ids = {
        "rtmp": (await rig.api.add_restream(stream["id"], rtmp.uri(), rtmp.key))["id"],
        "srt": (await rig.api.add_restream(stream["id"], srt.uri()))["id"],
    }
    return stream, rtmp, srt, ids


async def _start_pull(rig: Rig, stream_id: int, uri: str) -> float:
    """Switch the pull on; returns when the request was sent (monotonic)."""
    sent = time.monotonic()
    body = await rig.api.call("PATCH", f"/streaming/streams/{stream_id}", {"stream": {"pull": True, "uri": uri}})
    assert body["pull"] is True and body["uri"] == uri
    return sent


SRT_SOURCE_TAIL_FRAMES = 6
"""Video packets an SRT source may lose at its end: ffmpeg's SRT sender (here the source, a listener)
loses its last kilobytes when it closes, as it does as a caller (see tests/e2e/helpers.py Media.make);
4 were measured, the source sending its backlog at once to a caller that came after it started."""


async def _end_and_compare(
    rig: Rig,
    stream_id: int,
    ids: dict[str, int],
    receivers: tuple[Receiver, Receiver],
    want_rtmp: list[str],
    want_srt: list[str],
    *,
    source_tail: int = 0,
) -> None:
    """After the source played the clip once: switch the pull off (the pushes end cleanly at once), then
    compare what each destination received with what it must have: every video packet from the first,
    up to a lost tail of `source_tail` packets (an SRT source's end) and the SRT destination's own."""
    rtmp, srt = receivers
    await _wait_pull(rig, stream_id, "retrying", within=30)  # the source ended
    await rig.api.call("PATCH", f"/streaming/streams/{stream_id}", {"stream": {"pull": False}})
    await rtmp.ends_cleanly()
    await srt.ends_cleanly()
    for rid in ids.values():
        status = await rig.api.wait_state(rid, "idle", within=10)
        assert status["restarts"] == 0, status
    got = rtmp.frames()
    assert len(want_rtmp) - source_tail <= len(got) <= len(want_rtmp), f"rtmp: {len(got)} of {len(want_rtmp)}"
    assert got == want_rtmp[: len(got)], "rtmp: video differs from the source"
    got_srt = srt.frames()
    tail = source_tail + SRT_TAIL_FRAMES
    assert srt_tail_ok(got_srt, want_srt, tail), f"srt: {len(got_srt)} of {len(want_srt)} video packets"
    rig.api.assert_no_secrets()


async def test_pull_from_an_rtmp_server(rig: Rig, media: Media) -> None:
    stream, rtmp, srt, ids = await _pulled_stream(rig, "pull-rtmp")
    port = free_port()
    rig.api.secrets.add("source-key-5ecret")
    await _source(rig, rtmp_source_argv(media.flv, port, "live/source-key-5ecret"))
    await wait_listening(port, False)
    sent = await _start_pull(rig, stream["id"], f"rtmp://127.0.0.1:{port}/live/source-key-5ecret")
    first = await rtmp.first_frame(within=15)
    print(f"pull start-up (RTMP source) to the first destination packet: {first - sent:.2f} s")
    await rig.api.wait_live(stream["id"])
    shown = await rig.api.call("GET", f"/streaming/streams/{stream['id']}")
    assert shown["stream_source_type"] == "rtmp"
    assert shown["status"]["transport"] == "pull"
    pull = shown["status"]["pull"]
    assert pull["state"] == "running" and pull["source_index"] == 1
    assert "source-key-5ecret" not in str(pull), "the source's key must be masked in the status"
    # And on /metrics: the pull's state and its attempts, the source never named.
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        scraper = Scraper(http, rig.api.relay.base_url)
        samples = await scraper.scrape()
    labels = {"stream_id": str(stream["id"]), "name": "pull-rtmp", "client_id": str(stream["client_id"])}
    states = {
        dict(key)["state"]: value
        for (name, key), value in samples.items()
        if name == "relay_stream_pull_state" and dict(key).items() >= labels.items()
    }
    assert states == {"connecting": 0.0, "running": 1.0, "retrying": 0.0, "stopped": 0.0}
    assert samples[("relay_stream_pull_attempts_total", frozenset(labels.items()))] == 1.0
    assert "source-key-5ecret" not in scraper.texts[-1]
    await _end_and_compare(rig, stream["id"], ids, (rtmp, srt), media.ref_flv, media.ref_flv_to_ts)


async def test_pull_from_an_srt_listener(rig: Rig, media: Media, media_cache: MediaCache) -> None:
    stream, rtmp, srt, ids = await _pulled_stream(rig, "pull-srt")
    port = free_port(socket.SOCK_DGRAM)
    await _source(rig, srt_source_argv(media.ts, port))
    await wait_listening(port, True)
    sent = await _start_pull(rig, stream["id"], f"srt://127.0.0.1:{port}?mode=caller&latency=120000")
    first = await rtmp.first_frame(within=15)
    print(f"pull start-up (SRT source) to the first destination packet: {first - sent:.2f} s")
    assert (await rig.api.call("GET", f"/streaming/streams/{stream['id']}"))["stream_source_type"] == "srt"
    # MPEG-TS source -> FLV (the pull) -> the destination's container.
    as_flv = media_cache.remux(media.ts, "flv")
    want_srt = md5s(media_cache.remux(as_flv, "mpegts"))
    await _end_and_compare(
        rig, stream["id"], ids, (rtmp, srt), md5s(as_flv), want_srt, source_tail=SRT_SOURCE_TAIL_FRAMES
    )


async def test_pull_hls_over_http(rig: Rig, media: Media, media_cache: MediaCache, tmp_path: Path) -> None:
    stream, rtmp, srt, ids = await _pulled_stream(rig, "pull-hls")
    playlist = await asyncio.to_thread(write_hls, media.flv, tmp_path / "hls")
    port = free_port()
    await _source(rig, http_server_argv(playlist.parent, port))
    await wait_listening(port, False)
    sent = await _start_pull(rig, stream["id"], f"http://127.0.0.1:{port}/{playlist.name}")
    first = await rtmp.first_frame(within=15)
    print(f"pull start-up (HLS over HTTP) to the first destination packet: {first - sent:.2f} s")
    assert (await rig.api.call("GET", f"/streaming/streams/{stream['id']}"))["stream_source_type"] == "https"
    # FLV clip -> MPEG-TS segments -> FLV (the pull) -> the destination's container.
    as_flv = media_cache.remux(media_cache.remux(media.flv, "mpegts"), "flv")
    await _end_and_compare(rig, stream["id"], ids, (rtmp, srt), md5s(as_flv), md5s(media_cache.remux(as_flv, "mpegts")))


async def test_a_source_down_at_start_is_retried_and_said_why(rig: Rig, media: Media) -> None:
    stream, rtmp, _, ids = await _pulled_stream(rig, "pull-late")
    port = free_port()
    await _start_pull(rig, stream["id"], f"rtmp://127.0.0.1:{port}/live/late")
    status = await _wait_pull(rig, stream["id"], "retrying")
    assert "Connection refused" in status["last_error"], status
    assert not (await rig.api.call("GET", f"/streaming/streams/{stream['id']}"))["live"]
    await _source(rig, rtmp_source_argv(media.flv, port, "live/late"))
    await _wait_pull(rig, stream["id"], "running", within=20)
    await rig.api.wait_live(stream["id"])
    await rtmp.first_frame(within=10)
    await rig.api.wait_state(ids["rtmp"], "running")


async def test_a_source_killed_mid_stream_is_held_and_comes_back(rig: Rig, long_media: Media) -> None:
    stream, rtmp, _, ids = await _pulled_stream(rig, "pull-blip")
    port = free_port()
    first_source = await _source(rig, rtmp_source_argv(long_media.flv, port, "live/blip"))
    await wait_listening(port, False)
    await _start_pull(rig, stream["id"], f"rtmp://127.0.0.1:{port}/live/blip")
    await rtmp.first_frame(within=15)
    await rig.api.wait_state(ids["rtmp"], "running")
    await asyncio.sleep(2)
    first_source.sigkill()
    before = len(rtmp.frame_times)
    shown = await wait_for(
        lambda: _stream_if(rig, stream["id"], lambda s: s["status"]["state"] == "reconnecting"), 10, "reconnecting"
    )
    assert shown["live"] is True, "destinations are held during the grace period"
    await _source(rig, rtmp_source_argv(long_media.flv, port, "live/blip"))
    await _wait_pull(rig, stream["id"], "running", within=10)
    await wait_for(lambda: _more_frames(rtmp, before + 30), 10, "frames after the source came back")
    status = await rig.api.status(ids["rtmp"])
    assert status["state"] == "running" and status["restarts"] == 0, status
    assert rtmp.running, "the destination's connection was held"


async def test_the_second_alternative_takes_over(rig: Rig, media: Media) -> None:
    stream, rtmp, _, ids = await _pulled_stream(rig, "pull-alt")
    down, up = free_port(), free_port()
    await _source(rig, rtmp_source_argv(media.flv, up, "live/backup"))
    await wait_listening(up, False)
    await _start_pull(rig, stream["id"], f"rtmp://127.0.0.1:{down}/live/main rtmp://127.0.0.1:{up}/live/backup")
    status = await _wait_pull(rig, stream["id"], "running", within=15, source_index=2)
    assert status["sources"] == 2
    assert "Connection refused" in (status["last_error"] or ""), status
    await rtmp.first_frame(within=10)
    await rig.api.wait_state(ids["rtmp"], "running")


async def _stream_if(rig: Rig, stream_id: int, check: Any) -> dict[str, Any] | None:
    stream: dict[str, Any] = await rig.api.call("GET", f"/streaming/streams/{stream_id}")
    return stream if check(stream) else None


async def _more_frames(receiver: Receiver, count: int) -> bool:
    return len(receiver.frame_times) >= count
