"""bench.read_path: the relay's own path from a read to the pushes' pipes, in-process, delivers the clip's FLV
tags byte for byte, and says what a read cost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.read_path import main
from tests.support import Clip, MediaCache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def sample_flv(media_cache: MediaCache) -> Path:
    return media_cache.clip(Clip(seconds=3.0))


def test_the_pipes_get_the_clips_tags_and_the_cost_is_printed(
    sample_flv: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--clip", str(sample_flv), "--subscribers", "0,2", "--rounds", "2", "--check"]) == 0
    none, two, check = capsys.readouterr().out.splitlines()
    figures = r"\d+ µs a read of 37000 bytes \(median of \d+, mean \d+; [\d.]+ messages a read\)"
    assert re.fullmatch(rf"0 subscribers: {figures}", none)
    assert re.fullmatch(rf"2 subscribers: {figures}", two)
    assert re.fullmatch(r"the pipe got \d+ bytes a round: the clip's FLV tags, byte for byte", check)
    assert int(check.split()[3]) > 100_000
