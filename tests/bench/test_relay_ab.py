"""bench.relay_ab: two relays side by side (here both this checkout's), both orders, each window's figures and
the difference; both relays' destinations got video."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.media import encode_clip
from bench.relay_ab import main
from tests.support.relay_process import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def test_both_orders_are_measured_and_both_relays_deliver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = encode_clip(tmp_path / "clips", 3, "320x180", 300)
    argv = ["--a", str(ROOT), "--b", str(ROOT), "--windows", "2", "--seconds", "1.5", "--warmup", "2"]
    assert main([*argv, "--srt-parked-within", "0", "--clip", str(clip)]) == 0
    lines = capsys.readouterr().out.splitlines()
    windows = [line for line in lines if " first, window " in line]
    assert [line.split(":")[0] for line in windows] == [
        "A first, window 1",
        "A first, window 2",
        "B first, window 1",
        "B first, window 2",
    ]
    assert all(re.fullmatch(r".*: A [\d.]+  B [\d.]+ CPU s/min", line) for line in windows)
    figures = [line for line in lines if re.match(r"[AB] \(", line)]
    assert len(figures) == 2
    for line in figures:
        frames = float(re.search(r"; ([\d.]+) video frames a second", line).group(1))  # type: ignore[union-attr]
        assert frames > 10, line  # a 30 fps clip: each destination got its video
    assert re.fullmatch(r"B - A: [+-][\d.]+ CPU s/min \(window by window: [+-][\d.]+ to [+-][\d.]+\)", lines[-1])


def test_several_streams_each_with_its_publisher_reach_every_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    clip = encode_clip(tmp_path / "clips", 3, "320x180", 300)
    argv = ["--a", str(ROOT), "--b", str(ROOT), "--windows", "1", "--seconds", "1.5", "--warmup", "2"]
    assert main([*argv, "--streams", "2", "--srt-parked-within", "0", "--clip", str(clip)]) == 0
    lines = capsys.readouterr().out.splitlines()
    figures = [line for line in lines if re.match(r"[AB] \(", line)]
    assert len(figures) == 2
    for line in figures:
        assert "the relay process at N=1 x 2 streams" in line
        frames = float(re.search(r"; ([\d.]+) video frames a second", line).group(1))  # type: ignore[union-attr]
        assert frames > 10, line  # the fewest any destination got: each of the four got its stream's video
