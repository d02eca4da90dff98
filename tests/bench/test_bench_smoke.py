"""The benchmark harness runs end to end (N = 1, a small clip, a few seconds), so that it cannot rot.

It asserts that the harness measures, not that the relay meets the benchmark's targets: those are
`make bench`'s business, on a quiet machine and a 1080p stream.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest

from bench.media import encode_clip
from bench.relay_bench import main as bench_main
from bench.relay_bench import parse_args
from bench.relay_cpu import RELAY_PACKAGE, stage_line, wake_figures
from bench.relay_cpu import main as relay_cpu_main


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_bench_harness_runs_with_one_destination(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    argv = [
        "--rtmp-n",
        "1",
        "--srt-n",
        "",
        "--no-nginx",
        "--no-variants",
        "--window",
        # py-spy keeps only the samples where the relay runs Python: at N=1 and 300 kbit/s that is 2-5 samples a
        # second at 200 Hz, so a 2 s window came back empty about once in a hundred runs under CI's load
        "6",
        "--warmup",
        "0.5",
        "--down",
        "0.3",
        "--clip-seconds",
        "2",
        "--clip-size",
        "320x180",
        "--clip-kbps",
        "300",
        "--profile",
        "--publisher-tcp-nodelay",
        "--out",
        str(out),
    ]
    assert parse_args(argv).rtmp_n == "1"
    bench_main(argv)
    report = (out / "bench.md").read_text()
    assert "| relay rtmp N=1 |" in report
    assert "(RTMP with TCP_NODELAY, as OBS publishes)" in report
    result = json.loads((out / "bench.json").read_text())["results"][0]
    assert result["ok"], result["error"]
    assert result["delay_ms"]["count"] > 0 and result["delay_ms"]["median"] is not None
    assert result["identical_share"] == 1.0 and result["loss_share"] == 0.0
    assert result["cpu_s_per_min"] is not None and result["pss_mb"] > 0
    assert result["live_add_s"] is not None and result["recovery_s"] is not None
    # the publisher started once the relay's idle SRT listener had parked (10 s without a caller, then libsrt
    # lets its threads go): the relay measured is one that has run a while
    assert result["context"]["srt_parked_after_s"] is not None and result["context"]["srt_parked_after_s"] > 5
    # what a wake-up cost on the host through the window, and the report says so
    assert result["context"]["host_wake_us"] is not None and result["context"]["host_wake_us"] > 0
    assert re.search(r"Host: a Python thread that only waits 66 ms at a time spent [\d.]+-[\d.]+ µs", report)
    if shutil.which("py-spy", path=str(Path(sys.executable).parent)):  # --profile: the relay was sampled
        assert result["context"]["profile_top"], "py-spy found nothing to sample"


def test_wake_figures_read_the_probe_with_and_without_stages(tmp_path: Path) -> None:
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({"window_s": 2.0, "wakes": [[500_000, 5], [700_000, 5], [300_000, 1]]}))
    figures = wake_figures(plain)
    assert figures["wakes_per_s"] == 1.5 and figures["by_5"] == 600.0 and figures["count_1"] == 1
    assert not any(key.startswith("stage_") for key in figures)
    staged = tmp_path / "staged.json"
    wakes = [[500_000, 5, {"read": 80_000, "parse": 200_000}], [700_000, 5, {"parse": 300_000, "writes": 50_000}]]
    staged.write_text(json.dumps({"window_s": 60.0, "wakes": wakes}))
    figures = wake_figures(staged)
    # a stage a wake did not reach counts 0 there; the rest is what no stage timed
    assert figures["stage_read"] == 40.0 and figures["stage_parse"] == 250.0 and figures["stage_writes"] == 25.0
    assert figures["stage_rest"] == (220.0 + 350.0) / 2 and figures["stage_cpu_rest"] == pytest.approx(570e-6)
    assert stage_line(figures).startswith("stages a wake (median µs, CPU s/min): read 40 (0.00), parse 250 (0.00)")
    # figures of another checkout's relay (the venv's install, when the bench runs from a second one) are refused
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text(json.dumps({"window_s": 2.0, "wakes": [[500_000, 5]], "relay": "/elsewhere/relay"}))
    with pytest.raises(RuntimeError, match="/elsewhere/relay"):
        wake_figures(elsewhere)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_relay_cpu_measures_the_relay_process(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = encode_clip(tmp_path / "clips", 2, "320x180", 300)
    argv = ["--n", "0,1", "--seconds", "1", "--warmup", "1", "--srt-parked-within", "0"]
    relay_cpu_main([*argv, "--clip", str(clip), "--out", str(tmp_path)])
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("N=")]
    assert [line.split(":")[0] for line in lines] == ["N=0 (rtmp)", "N=1 (rtmp)"]
    assert all("CPU s/min" in line and "main thread" in line for line in lines)


@pytest.mark.integration
@pytest.mark.timeout(60)
def test_relay_cpu_srt_destinations_merged_wake_costs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    clip = encode_clip(tmp_path / "clips", 2, "320x180", 300)
    argv = ["--n", "1", "--dest", "srt", "--merge-interval-ms", "66", "--seconds", "2", "--warmup", "1"]
    argv += ["--srt-parked-within", "0", "--wake-stages"]
    relay_cpu_main([*argv, "--clip", str(clip), "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "N=1 (srt): relay process" in out and "other threads" in out
    # each kind of thread apart: the destination's caller, and libsrt's two for it (with the SRT listener's, not
    # parked yet), each woken while media flowed
    kinds = next(line for line in out.splitlines() if "other threads by kind:" in line)
    assert re.search(r"srt-push:N x1 [\d.]+ CPU s/min, [1-9]\d* wake-ups/s", kinds), kinds
    for kind in ("SRT:SndQ:wN", "SRT:RcvQ:wN"):
        assert re.search(rf"{kind} x[12] [\d.]+ CPU s/min, [1-9]\d* wake-ups/s", kinds), kinds
    assert "per push" in out  # its push ran beside it
    # the wake probe timed the publisher's merged reads: ~15 a second, each bringing messages
    probed = json.loads((tmp_path / "wakes-n1.json").read_text())
    assert probed["relay"] == str(RELAY_PACKAGE)  # the relay timed is this checkout's
    wakes = probed["wakes"]
    assert len(wakes) >= 10 and sum(messages for _, messages, _ in wakes) >= len(wakes)
    assert "wakes: " in out and "messages each; CPU a wake median" in out and "outside the wakes" in out
    # and where each one's CPU went: every read parses and writes; a merged one also reads the socket itself
    # and re-arms (one after a read that filled the buffer is the transport's, which read before the wake)
    assert all({"parse", "writes"} <= set(stages) for _, _, stages in wakes)
    merged = [stages for _, _, stages in wakes if {"read", "fan-out", "re-arm"} <= set(stages)]
    assert len(merged) >= len(wakes) // 2
    assert all(sum(stages.values()) <= ns for ns, _, stages in wakes)
    line = next(line for line in out.splitlines() if "stages a wake" in line)
    assert re.search(r"read \d+ \([\d.]+\), parse \d+ \([\d.]+\), fan-out .* rest -?\d+ \([\d.-]+\)$", line), line
