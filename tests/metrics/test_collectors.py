"""Pieces of the exporter that need no relay: /proc parsing."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest

from api.metrics import FfmpegProcessCollector, HeapCollector, TaskCollector, child_processes


def fake_proc(root: Path, pid: int, comm: str, ppid: int, rss_pages: int) -> None:
    (root / str(pid)).mkdir(parents=True)
    # Fields after `(comm)`: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    # cutime cstime priority nice threads itrealvalue starttime vsize rss ...
    rest = f"S {ppid} 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 100 1000 {rss_pages} 0 0"
    (root / str(pid) / "stat").write_text(f"{pid} ({comm}) {rest}\n")


def test_children_are_read_from_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, 10, "ffmpeg-linux-x8", 7, 100)
    fake_proc(tmp_path, 11, "odd) name (ffmpeg", 7, 50)  # comm may hold ") (" and spaces
    fake_proc(tmp_path, 12, "ffmpeg", 8, 70)  # someone else's
    fake_proc(tmp_path, 13, "python3", 7, 30)
    (tmp_path / "self").mkdir()
    children = child_processes(7, tmp_path)
    assert sorted((c.pid, c.name) for c in children) == [
        (10, "ffmpeg-linux-x8"),
        (11, "odd) name (ffmpeg"),
        (13, "python3"),
    ]
    registry = CollectorRegistry()
    registry.register(FfmpegProcessCollector(tmp_path, pid=7))
    text = generate_latest(registry).decode()
    assert "relay_ffmpeg_processes 2.0" in text
    assert f"relay_ffmpeg_resident_memory_bytes {float(150 * os.sysconf('SC_PAGE_SIZE'))}" in text


def test_no_proc_no_series(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    registry.register(FfmpegProcessCollector(tmp_path / "absent", pid=7))
    assert b"relay_ffmpeg" not in generate_latest(registry)


async def test_relay_tasks_counts_the_loops_unfinished_tasks() -> None:
    registry = CollectorRegistry()
    registry.register(TaskCollector(asyncio.get_running_loop()))
    (line,) = [line for line in generate_latest(registry).decode().splitlines() if line.startswith("relay_tasks ")]
    before = float(line.split()[1])
    release = asyncio.Event()
    waiting = [asyncio.create_task(release.wait()) for _ in range(3)]
    await asyncio.sleep(0)
    assert f"relay_tasks {before + 3}" in generate_latest(registry).decode()
    release.set()
    await asyncio.gather(*waiting)
    assert f"relay_tasks {before}" in generate_latest(registry).decode()


def _gauge(registry: CollectorRegistry, name: str) -> float:
    (line,) = [line for line in generate_latest(registry).decode().splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])


def test_heap_gauges_follow_what_the_process_allocates() -> None:
    registry = CollectorRegistry()
    registry.register(HeapCollector())
    blocks, in_use = _gauge(registry, "relay_python_allocated_blocks"), _gauge(registry, "relay_malloc_in_use_bytes")
    assert _gauge(registry, "relay_malloc_free_bytes") >= 0
    held = [bytearray(1000) for _ in range(20_000)] + [bytearray(64 << 20)]
    assert _gauge(registry, "relay_python_allocated_blocks") >= blocks + 20_000
    assert _gauge(registry, "relay_malloc_in_use_bytes") >= in_use + (64 << 20) + 20_000 * 1000
    del held
    assert _gauge(registry, "relay_malloc_in_use_bytes") < in_use + (64 << 20)
