"""bench.loop_floor: an idle reader's CPU per wake-up on each loop, and without one."""

from __future__ import annotations

import re

import pytest

from bench.loop_floor import main

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def test_it_prints_a_line_per_mode(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rate", "50", "--seconds", "0.5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["asyncio", "uvloop", "blocking"]
    assert all(re.search(r"[\d.]+ CPU s/min at 50 wake-ups a second \(\d+ us each\)", line) for line in lines)
