"""The soak, five minutes of it, in `make test`: 4 streams x 2 destinations through the real relay process
with a destination killed and restored every 40 s, a publisher dropped every 50 s (within the grace period
and beyond it, in turn) and API writes every 2 s. It asserts the soak's verdicts: RSS and open fds flat over
the second half, every killed destination and every returning publisher's destinations back, no ffmpeg
left after the relay stopped, timestamps never going back at any destination, all flowing at the end.
`make soak` is the long one (8 x 4, 2 hours)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.soak import Soak, SoakOptions, render

SOAK_SECONDS = 270.0


@pytest.mark.integration
@pytest.mark.timeout(SOAK_SECONDS + 60)
def test_five_minutes_of_churn_leave_nothing_behind(tmp_path: Path) -> None:
    options = SoakOptions(
        seconds=SOAK_SECONDS,
        streams=4,
        destinations=2,
        srt_publishers=1,
        srt_destinations=1,
        sample_seconds=15.0,
        kill_every_seconds=40.0,
        down_seconds=4.0,
        back_within_seconds=20.0,
        drop_every_seconds=50.0,
        short_drop_seconds=3.0,
        long_drop_seconds=12.0,
        api_every_seconds=2.0,
        clip_size="320x180",
        clip_kbps=300,
    )
    report = asyncio.run(Soak(options, tmp_path / "soak").run())
    text = render(report)
    assert report.error is None, text
    assert len(report.kills) >= 4 and len(report.drops) >= 3, text
    assert report.samples and all(s.tasks is not None for s in report.samples), text
    failed = {name: v for name, v in report.verdicts.items() if not v["ok"]}
    assert not failed, text
