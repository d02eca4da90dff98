"""A /metrics scrape as a test reads it: every sample keyed by its name and labels."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.relay_process import ADMIN_KEY

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Scraper:
    """Scrapes `base`/metrics with `key`; keeps every text it got (`texts`) for checks over all of them."""

    def __init__(self, http: aiohttp.ClientSession, base: str, key: str = ADMIN_KEY) -> None:
        self.http, self.base, self.key = http, base, key
        self.texts: list[str] = []

    async def scrape(self) -> Samples:
        async with self.http.get(f"{self.base}/metrics", headers={"Authorization": f"APIKey {self.key}"}) as response:
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
