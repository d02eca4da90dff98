"""The store-scale bench runs (SQLite, a handful of definitions), so that it cannot rot; figures are
`python -m bench.store_scale`'s business."""

from __future__ import annotations

from bench.store_scale import measure


async def test_the_store_scale_bench_measures_every_figure() -> None:
    result = await measure(None, streams=3, restreams=6, samples=3)
    assert set(result) == {
        "fill (store writes, s)",
        "POST /streams ms",
        "GET /streams?page ms",
        "GET /streams/{id} ms",
        "Engine.reconcile ms",
        "  of which the store's reads ms",
    }
    assert all(value for value in result.values())
