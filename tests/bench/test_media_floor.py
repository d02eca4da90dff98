"""bench.media_floor: the one-pass Python path from a publisher's chunks to a pipe delivers the clip's FLV tags,
byte for byte, and says what it cost."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.media_floor import main
from tests.support import Clip, MediaCache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def sample_flv(media_cache: MediaCache) -> Path:
    return media_cache.clip(Clip(seconds=3.0))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_pipe_gets_the_clips_tags_and_the_cost_is_printed(
    sample_flv: Path, loop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--clip", str(sample_flv), "--seconds", "1.5", "--loop", loop, "--check"]) == 0
    cost, check = capsys.readouterr().out.splitlines()
    figures = r"[\d.]+ CPU s/min, [\d.]+ reads a second, \d+ µs a read \([\d.]+ messages a read\)"
    assert re.fullmatch(rf"{loop}, a read every 66 ms: {figures}", cost)
    assert re.fullmatch(r"the pipe got \d+ bytes: the clip's FLV tags, byte for byte", check)
    assert int(check.split()[3]) > 100_000
