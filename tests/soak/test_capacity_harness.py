"""The capacity bench runs end to end (one small step, a few seconds), so that it cannot rot; the curve
itself is `make bench-capacity`'s business. nginx-rtmp's configuration (an application per stream) is
checked without running it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from bench.capacity import CapacityOptions, run
from bench.fleet import NginxApps


def _one_small_step(**steps: Any) -> CapacityOptions:
    """A step of a few seconds on a small clip, relay only; `steps`: its streams, destinations and settings."""
    return CapacityOptions(
        window_seconds=3.0,
        warmup_seconds=0.5,
        clip_size="320x180",
        clip_kbps=300,
        clip_seconds=4,
        nginx=False,
        **steps,
    )


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_one_step_is_measured(tmp_path: Path) -> None:
    options = _one_small_step(streams=(1,), destinations=2)
    result = asyncio.run(run(options, tmp_path / "capacity"))
    (step,) = result["steps"]
    assert step["error"] is None, step
    assert step["bitrate_share_min"] is not None and step["bitrate_share_min"] > 0.5, step
    assert step["delay_ms"]["count"] > 0, step
    assert step["api_ms"]["GET /healthz"]["count"] > 0, step
    assert step["cpu_s_per_min"] is not None and step["pss_mb"], step
    assert (tmp_path / "capacity" / "capacity.md").read_text().count("| relay | 1x2 |") == 1


@pytest.mark.integration
@pytest.mark.timeout(90)
def test_a_step_runs_with_the_relays_settings(tmp_path: Path) -> None:
    # Two publishers read at one tick (RELAY_MERGE_INTERVAL_MS, relay.ingest.read_ticker) on uvloop: every
    # destination still gets its stream.
    options = _one_small_step(
        streams=(2,),
        destinations=1,
        relay_env=(("RELAY_EVENT_LOOP", "uvloop"), ("RELAY_MERGE_INTERVAL_MS", "66")),
    )
    result = asyncio.run(run(options, tmp_path / "capacity"))
    (step,) = result["steps"]
    assert step["error"] is None, step
    assert step["bitrate_share_min"] is not None and step["bitrate_share_min"] > 0.5, step
    report = (tmp_path / "capacity" / "capacity.md").read_text()
    assert "Relay settings: `RELAY_EVENT_LOOP=uvloop`, `RELAY_MERGE_INTERVAL_MS=66`" in report
    assert report.count("| relay | 2x1 |") == 1


def test_nginx_gets_an_application_per_stream(tmp_path: Path) -> None:
    nginx = NginxApps(tmp_path)
    nginx.apps = [["rtmp://127.0.0.1:1/live/a", "rtmp://127.0.0.1:2/live/b"], ["rtmp://127.0.0.1:3/live/c"]]
    config = nginx.config([])
    assert "application in0 {" in config and "application in1 {" in config
    assert config.count("push rtmp://") == 3
    assert config.count("{") == config.count("}")
