"""Failed authentications through the HTTP API: counted in /metrics by reason, one log line per address,
and slowed after a burst while a correct key from the same address is answered at once."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from api.server import Server
from tests.conftest import ApiClient, service_settings

UNAUTHORIZED = {"errors": {"auth": ["invalid api key"]}}
WRONG_KEY = "1$wrong-key-that-is-long-enough-000000000000"
DELAY_SECONDS = 0.5


@pytest.fixture
async def slowing_service(tmp_path: Path) -> AsyncIterator[Server]:
    """A relay whose API slows an address down after 4 failures in 10 s."""
    settings = service_settings(
        tmp_path, api_auth_failures_before_delay=4, api_auth_failure_delay_seconds=DELAY_SECONDS
    )
    relay = Server(settings)
    await relay.start()
    try:
        yield relay
    finally:
        await relay.close()


@pytest.fixture
async def anonymous(slowing_service: Server) -> AsyncIterator[ApiClient]:
    async with aiohttp.ClientSession() as session:
        yield ApiClient(session, f"http://127.0.0.1:{slowing_service.ports.http}", None)


async def timed(client: ApiClient, headers: dict[str, str] | None = None) -> tuple[int, object, float]:
    start = time.monotonic()
    status, body, _ = await client.call("GET", "/streaming/streams", headers=headers)
    return status, body, time.monotonic() - start


async def test_failures_are_counted_logged_once_and_slowed(
    slowing_service: Server, anonymous: ApiClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = anonymous
    store = slowing_service.store
    revoked_key, record = await store.create_api_key(5, "gone")
    await store.revoke_api_key(str(record.id))
    admin_key = slowing_service.settings.api_key
    assert admin_key is not None

    attempts: list[dict[str, str]] = [
        {},
        {"Authorization": "Bearer " + WRONG_KEY},
        {"Authorization": "APIKey " + WRONG_KEY},
        {"Authorization": "APIKey " + revoked_key},
    ]
    for headers in attempts:  # the burst: answered at once
        status, body, seconds = await timed(api, headers)
        assert (status, body) == (401, UNAUTHORIZED) and seconds < DELAY_SECONDS

    status, body, seconds = await timed(api, {"Authorization": "APIKey " + WRONG_KEY})
    assert (status, body) == (401, UNAUTHORIZED) and seconds >= DELAY_SECONDS  # 401, never 429
    status, _, seconds = await timed(api, {"Authorization": "APIKey " + admin_key})
    assert status == 200 and seconds < DELAY_SECONDS  # the right key from the same address: at once

    scrape_headers = {"Authorization": "APIKey " + admin_key}
    async with api.session.get(f"{api.base_url}/metrics", headers=scrape_headers) as response:
        assert response.status == 200
        text = await response.text()
    failures = {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "relay_api_auth_failures_total"
    }
    assert failures == {"missing": 1.0, "malformed": 1.0, "unknown": 2.0, "revoked": 1.0}

    lines = [r.getMessage() for r in caplog.records if r.name == "relay.api.auth"]
    assert lines == ["1 failed API authentication from 127.0.0.1 (missing 1)"]  # the rest waits a minute
    everything = caplog.text + text
    assert WRONG_KEY not in everything and revoked_key not in everything and admin_key not in everything
