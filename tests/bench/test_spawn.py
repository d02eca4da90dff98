"""bench.spawn: how long starting a child holds the loop, on both loops (and libuv's own spawn)."""

from __future__ import annotations

import re

import pytest

from bench.spawn import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_it_prints_a_line_per_loop(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--children", "3", "--ballast-mb", "4", "--libuv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "asyncio (relay.spawn)",
        "uvloop (relay.spawn)",
        "uvloop (libuv's spawn)",
    ]
    assert all(re.search(r"3 children, the loop held [\d.]+ ms median, [\d.]+ ms max", line) for line in lines)
