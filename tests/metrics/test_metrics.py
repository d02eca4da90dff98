"""/metrics: parses as Prometheus text, follows a real publisher, counts refusals, shows an SRT
destination's link, scoped to the key's client, never shows a secret, and shows the ingest connections
refused, cut and open at the node's doors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from api.metrics import RESTREAM_STATES
from api.server import Server
from relay.srt.libsrt import LibSrt, SrtUnavailable
from tests.conftest import service_settings
from tests.ingest.test_srt_admission import attempt
from tests.support import ADMIN_KEY, Publisher, Receiver, pattern_publish_argv, run_process, wait_for
from tests.support.scrape import Scraper


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"APIKey {key}"}


async def test_metrics_need_a_key(quick_service: Server, http: aiohttp.ClientSession) -> None:
    for headers in ({}, auth("1$wrong")):
        async with http.get(f"http://127.0.0.1:{quick_service.ports.http}/metrics", headers=headers) as response:
            assert response.status == 401


@pytest.mark.integration
async def test_metrics_follow_reality(quick_service: Server, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    scraper = Scraper(http, base)
    async with http.post(f"{base}/streaming/streams", json={"name": "Late show"}, headers=auth(ADMIN_KEY)) as r:
        stream = await r.json()
    secret_uri = "rtmp://127.0.0.1:9/live/destination-secret-key"
    async with http.post(
        f"{base}/streaming/restreams",
        headers=auth(ADMIN_KEY),
        json={"restream": {"name": "Parked", "stream_id": stream["id"], "uri": secret_uri, "active": False}},
    ) as r:
        restream = await r.json()
    ids = {"stream_id": str(stream["id"]), "name": "Late show", "client_id": "1"}
    rids = {"restream_id": str(restream["id"]), "stream_id": str(stream["id"]), "name": "Parked", "client_id": "1"}

    samples = await scraper.scrape()
    assert samples[("relay_stream_live", frozenset(ids.items()))] == 0
    assert samples[("relay_stream_ingest_bytes_total", frozenset(ids.items()))] == 0
    for state in RESTREAM_STATES:  # one gauge per state, 1 for the current one
        expected = 1.0 if state == "disabled" else 0.0
        assert samples[("relay_restream_state", frozenset({**rids, "state": state}.items()))] == expected
    assert samples[("relay_restream_active", frozenset(rids.items()))] == 0
    assert ("process_resident_memory_bytes", frozenset()) in samples
    refused_before = samples.get(
        ("relay_ingest_refusals_total", frozenset({"transport": "rtmp", "reason": "bad_token"}.items())), 0.0
    )

    # A publisher with a wrong token is refused and counted.
    wrong_url = stream["push_url"].replace(stream["token"], "not-the-token")
    assert (await run_process(pattern_publish_argv(wrong_url, seconds=2), limit_seconds=20)).returncode != 0
    refused = await scraper.value("relay_ingest_refusals_total", transport="rtmp", reason="bad_token")
    assert refused == refused_before + 1

    # A real publisher: live goes 1, the ingest byte counter grows, the bitrate shows.
    live = frozenset(ids.items())
    async with Publisher(pattern_publish_argv(stream["push_url"], seconds=30)) as encoder:

        async def is_live() -> bool:
            return (await scraper.scrape())[("relay_stream_live", live)] == 1

        await wait_for(is_live, 15, "live in /metrics")
        first = (await scraper.scrape())[("relay_stream_ingest_bytes_total", live)]
        await asyncio.sleep(1.5)
        samples = await scraper.scrape()
        assert samples[("relay_stream_ingest_bytes_total", live)] > first > 0

        async def has_bitrate() -> bool:
            return (await scraper.scrape())[("relay_stream_ingest_bitrate_bits_per_second", live)] > 50_000

        await wait_for(has_bitrate, 5, "an ingest bitrate in /metrics")
        # In-process, the test's encoder is a child of the relay's process too: counted with the pushes.
        assert samples[("relay_ffmpeg_processes", frozenset())] >= 1
        encoder.sigkill()
        await encoder.wait(within=10)

        async def is_offline() -> bool:
            return (await scraper.scrape())[("relay_stream_live", live)] == 0

        await wait_for(is_offline, 10, "offline in /metrics")  # after the 1 s grace of this relay

    # No secret anywhere: stream token, API key, destination URI or its key.
    for text in scraper.texts:
        for secret in (stream["token"], ADMIN_KEY, secret_uri, "destination-secret-key"):
            assert secret not in text


SRT_LINK_SERIES = (
    "relay_restream_srt_rtt_seconds",
    "relay_restream_srt_sent_bits_per_second",
    "relay_restream_srt_bandwidth_bits_per_second",
    "relay_restream_srt_send_buffer_seconds",
    "relay_restream_srt_latency_seconds",
    "relay_restream_srt_sent_bytes",
    "relay_restream_srt_sent_packets",
    "relay_restream_srt_lost_packets",
    "relay_restream_srt_retransmitted_packets",
    "relay_restream_srt_dropped_packets",
)


@pytest.mark.integration
async def test_an_srt_destination_s_link_is_in_metrics(
    quick_service: Server, http: aiohttp.ClientSession, tmp_path: Path
) -> None:
    """A real SRT destination (ffmpeg listening, with a passphrase) that the relay's caller sends to: its
    RTT, what was sent and the negotiated latency show under the restream's labels; an RTMP destination
    of the same stream has none of these series."""
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    scraper = Scraper(http, base)
    async with http.post(f"{base}/streaming/streams", json={"name": "SRT show"}, headers=auth(ADMIN_KEY)) as r:
        stream = await r.json()
    passphrase = "srt-destination-5ecret"
    async with (
        Receiver(tmp_path / "srt.ts", srt=True, key=passphrase) as srt_dest,
        Receiver(tmp_path / "rtmp.flv", key="rtmp-destination-5ecret") as rtmp_dest,
    ):
        rids: dict[str, dict[str, str]] = {}
        for name, uri in (("SRT out", srt_dest.uri()), ("RTMP out", rtmp_dest.uri())):
            body = {"restream": {"name": name, "stream_id": stream["id"], "uri": uri, "active": True}}
            async with http.post(f"{base}/streaming/restreams", headers=auth(ADMIN_KEY), json=body) as r:
                assert r.status in (200, 201)
                restream = await r.json()
            rids[name] = {
                "restream_id": str(restream["id"]),
                "stream_id": str(stream["id"]),
                "name": name,
                "client_id": "1",
            }
        srt_labels = frozenset(rids["SRT out"].items())
        async with Publisher(pattern_publish_argv(stream["push_url"], seconds=30)):

            async def link_shows() -> bool:
                samples = await scraper.scrape()
                return (
                    samples.get(("relay_restream_srt_sent_packets", srt_labels), 0) > 100
                    and samples.get(("relay_restream_srt_sent_bits_per_second", srt_labels), 0) > 50_000
                    and samples.get(("relay_restream_srt_rtt_seconds", srt_labels), 0) > 0
                )

            await wait_for(link_shows, 20, "the SRT destination's link in /metrics")
            samples = await scraper.scrape()
    assert all((name, srt_labels) in samples for name in SRT_LINK_SERIES), scraper.texts[-1]
    rtt = samples[("relay_restream_srt_rtt_seconds", srt_labels)]
    assert 0 < rtt < 0.1  # loopback; libsrt starts from 100 ms and measures down
    assert samples[("relay_restream_srt_latency_seconds", srt_labels)] >= 0.12  # the URI asks 120 ms
    assert samples[("relay_restream_srt_sent_bytes", srt_labels)] > 100 * 188
    assert samples[("relay_restream_srt_dropped_packets", srt_labels)] == 0
    rtmp_labels = frozenset(rids["RTMP out"].items())
    assert not [key for key in samples if key[1] == rtmp_labels and key[0].startswith("relay_restream_srt_")]
    for text in scraper.texts:
        for secret in (passphrase, "rtmp-destination-5ecret", stream["token"], srt_dest.uri()):
            assert secret not in text


async def test_series_are_scoped_to_the_key_s_client(quick_service: Server, http: aiohttp.ClientSession) -> None:
    base = f"http://127.0.0.1:{quick_service.ports.http}"
    other_key, _ = await quick_service.store.create_api_key(2, "other tenant")
    async with http.post(f"{base}/streaming/streams", json={"name": "client one's"}, headers=auth(ADMIN_KEY)):
        pass
    async with http.post(f"{base}/streaming/streams", json={"name": "client two's"}, headers=auth(other_key)):
        pass
    mine = await Scraper(http, base).scrape()
    theirs = await Scraper(http, base, other_key).scrape()
    names = {dict(labels).get("name") for name, labels in mine if name == "relay_stream_live"}
    assert names == {"client one's"}
    names = {dict(labels).get("name") for name, labels in theirs if name == "relay_stream_live"}
    assert names == {"client two's"}


async def test_openmetrics_when_asked(quick_service: Server, http: aiohttp.ClientSession) -> None:
    headers = {**auth(ADMIN_KEY), "Accept": "application/openmetrics-text; version=1.0.0"}
    async with http.get(f"http://127.0.0.1:{quick_service.ports.http}/metrics", headers=headers) as response:
        assert response.headers["Content-Type"].startswith("application/openmetrics-text")
        assert (await response.text()).endswith("# EOF\n")


async def test_ingest_doors_refused_cut_and_open(tmp_path: Path, http: aiohttp.ClientSession) -> None:
    """Connections that never publish, over the per-address limit: one evicted at once, the rest cut at
    the handshake deadline; an SRT handshake with a streamid not of ours refused at the door."""
    server = Server(service_settings(tmp_path, rtmp_max_connections_per_address=2, rtmp_preauth_timeout_seconds=0.5))
    await server.start()
    try:
        scraper = Scraper(http, f"http://127.0.0.1:{server.ports.http}")
        rtmp = {"transport": "rtmp"}
        assert await scraper.value("relay_ingest_open_connections", **rtmp) == 0
        assert await scraper.value("relay_ingest_connections_refused_total", **rtmp, reason="max_connections") == 0
        silent = [await asyncio.open_connection("127.0.0.1", server.ports.rtmp) for _ in range(3)]

        async def evicted_one() -> bool:
            return await scraper.value("relay_ingest_connections_cut_total", **rtmp, reason="evicted") == 1

        await wait_for(evicted_one, 2, "one evicted")  # the third took the oldest's place
        assert await scraper.value("relay_ingest_open_connections", **rtmp) == 2

        async def cut_at_the_deadline() -> bool:
            cut = await scraper.value("relay_ingest_connections_cut_total", **rtmp, reason="handshake_timeout")
            return cut == 2 and await scraper.value("relay_ingest_open_connections", **rtmp) == 0

        await wait_for(cut_at_the_deadline, 3, "the other two cut at the handshake deadline")
        for _reader, writer in silent:
            writer.close()
        # Publish refusals are another family, unchanged: the eviction is there too, as before.
        assert await scraper.value("relay_ingest_refusals_total", **rtmp, reason="evicted") == 1

        if server.ports.srt is not None:
            try:
                lib = LibSrt.load()
            except SrtUnavailable:
                return
            lib.startup()
            try:
                assert (await attempt(lib, server.ports.srt, "no-separator")).reject == 1400
            finally:
                lib.cleanup()
            srt = {"transport": "srt"}
            assert await scraper.value("relay_ingest_connections_refused_total", **srt, reason="bad_handshake") == 1
            assert await scraper.value("relay_ingest_connections_refused_total", **srt, reason="max_connections") == 0
            assert await scraper.value("relay_ingest_open_connections", **srt) == 0
        for text in scraper.texts:
            assert "127.0.0.1" not in text  # never a peer address
    finally:
        await server.close()
