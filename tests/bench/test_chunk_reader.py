"""bench.chunk_reader: the chunk reader's CPU a read, by the publisher's chunk size, on a real clip."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.chunk_reader import main, publisher_bytes, read_costs
from tests.support import Clip, MediaCache

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


@pytest.fixture(scope="module")
def sample_flv(media_cache: MediaCache) -> Path:
    return media_cache.clip(Clip(seconds=3.0))


def test_it_prints_a_line_per_chunk_size(sample_flv: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--clip", str(sample_flv), "--rounds", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"chunks of {size} bytes" for size in (128, 4096, 60000)]
    assert all(re.search(r"\d+ µs a read of 37000 bytes \(median of \d+; [\d.]+ messages a read\)", x) for x in lines)


def test_every_chunk_size_gives_the_clips_messages(sample_flv: Path) -> None:
    counts = {read_costs(publisher_bytes(sample_flv, size), size, 37_000, 1)[1] for size in (128, 4096, 60000)}
    assert len(counts) == 1 and counts.pop() > 100
