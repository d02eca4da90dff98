"""The cluster bench runs (a handful of leases on a PostgreSQL of its own), so that it cannot rot; figures
are `python -m bench.cluster_leases`'s business."""

from __future__ import annotations

import pytest

from bench.cluster_leases import measure
from tests.support.postgres import why_no_postgres

pytestmark = pytest.mark.integration


async def test_the_cluster_bench_measures_every_figure() -> None:
    if (reason := why_no_postgres()) is not None:
        pytest.skip(reason)
    result = await measure(streams=5, per_stream=2, rounds=3)
    assert (result["streams"], result["restreams"]) == (5, 10)
    for figure in ("claim_ms", "renew_all_ms", "status_write_all_ms", "view_read_all_ms"):
        assert result[figure]["median"] > 0
