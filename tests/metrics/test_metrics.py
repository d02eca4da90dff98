"""/metrics: parses as Prometheus text, follows a real publisher, counts refusals, scoped to the key's
client, and never shows a secret."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.metrics import RESTREAM_STATES
from api.server import Server
from tests.support import ADMIN_KEY, Publisher, pattern_publish_argv, run_process, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"APIKey {key}"}


class Scraper:
    def __init__(self, http: aiohttp.ClientSession, base: str, key: str = ADMIN_KEY) -> None:
        self.http, self.base, self.key = http, base, key
        self.texts: list[str] = []

    async def scrape(self) -> Samples:
        async with self.http.get(f"{self.base}/metrics", headers=auth(self.key)) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            text = await response.text()
        self.texts.append(text)
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    async def value(self, name: str, **labels: str) -> float | None:
        return (await self.scrape()).get((name, frozenset(labels.items())))


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
