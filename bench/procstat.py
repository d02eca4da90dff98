"""CPU and memory of a whole process tree from /proc, sampled.

CPU is utime+stime+cutime+cstime of every process in the tree (a child that exited and was reaped is
still counted through its parent's c-times). Memory is the sum of RSS and of PSS (`smaps_rollup`) of the
processes alive at the sample: PSS splits shared pages (16 ffmpeg processes share one binary) fairly.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcSample:
    pid: int
    comm: str
    ppid: int
    cpu_ticks: int
    rss_bytes: int
    pss_bytes: int


def _stat(pid: int) -> tuple[str, int, int, int] | None:
    """(comm, ppid, cpu ticks incl. reaped children, rss bytes)"""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    close = raw.rfind(")")
    comm = raw[raw.find("(") + 1 : close]
    fields = raw[close + 2 :].split()
    # fields[0] is state (field 3): utime is field 14 -> index 11
    ppid = int(fields[1])
    ticks = int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
    rss = int(fields[21]) * PAGE
    return comm, ppid, ticks, rss


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _stat(int(entry))
        if st is not None:
            children.setdefault(st[1], []).append(int(entry))
    return children


def tree_pids(root: int) -> list[int]:
    children = _children_map()
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def sample_tree(root: int, *, with_pss: bool = True) -> list[ProcSample]:
    samples = []
    for pid in tree_pids(root):
        st = _stat(pid)
        if st is None:
            continue
        comm, ppid, ticks, rss = st
        samples.append(ProcSample(pid, comm, ppid, ticks, rss, _pss(pid) if with_pss else 0))
    return samples


def machine_busy_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    total = sum(values[:8])
    return total - idle, total


@dataclass
class TreeSeries:
    """Samples of one tree over time: (t, cpu ticks, rss bytes, pss bytes, processes, children pss bytes,
    root process's own cpu ticks)."""

    points: list[tuple[float, int, int, int, int, int, int]] = field(default_factory=list)

    def cpu_seconds_per_minute(self, t0: float, t1: float, index: int = 1) -> float | None:
        """CPU seconds per wall minute between the first and last samples in [t0, t1]: the whole tree's
        (index 1) or the root process's own, without its children (index 6)."""
        inside = [p for p in self.points if t0 <= p[0] <= t1]
        if len(inside) < 2 or inside[-1][0] <= inside[0][0]:
            return None
        return (inside[-1][index] - inside[0][index]) / CLK_TCK / (inside[-1][0] - inside[0][0]) * 60.0

    def peak(self, index: int, t0: float = 0.0, t1: float = float("inf")) -> int:
        return int(max((p[index] for p in self.points if t0 <= p[0] <= t1), default=0))


def tree_point(root: int) -> tuple[int, int, int, int, int, int] | None:
    procs = sample_tree(root)
    if not procs:
        return None
    own = _own_ticks(root)
    return (
        sum(p.cpu_ticks for p in procs),
        sum(p.rss_bytes for p in procs),
        sum(p.pss_bytes for p in procs),
        len(procs),
        sum(p.pss_bytes for p in procs if p.pid != root),
        own,
    )


def _own_ticks(pid: int) -> int:
    """utime + stime of the process alone (its reaped children excluded)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return 0
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def load_samples(path: Path) -> tuple[dict[str, TreeSeries], list[tuple[float, int, int]]]:
    """The trees' series and the machine's (t, busy, total) jiffies, from a sampler's JSON lines."""
    trees: dict[str, TreeSeries] = {}
    machine: list[tuple[float, int, int]] = []
    if not path.exists():
        return trees, machine
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # the last line of a killed sampler may be cut
        t = float(row["t"])
        machine.append((t, *row["machine"]))
        for label, point in row["trees"].items():
            trees.setdefault(label, TreeSeries()).points.append((t, *point))
    return trees, machine


def machine_busy_share(machine: list[tuple[float, int, int]], t0: float, t1: float) -> float | None:
    inside = [m for m in machine if t0 <= m[0] <= t1]
    if len(inside) < 2 or inside[-1][2] <= inside[0][2]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def main(argv: list[str] | None = None) -> None:
    """Sampler process: `python -m bench.procstat OUT INTERVAL label=pid...`; runs until killed.

    A separate process so that reading /proc never holds up the receivers' event loop (their arrival
    stamps are what the bench measures)."""
    args = sys.argv[1:] if argv is None else argv
    out, interval = Path(args[0]), float(args[1])
    roots = {label: int(pid) for label, _, pid in (a.partition("=") for a in args[2:])}
    with out.open("a") as f:
        while True:
            row: dict[str, Any] = {"t": time.monotonic(), "machine": machine_busy_ticks(), "trees": {}}
            for label, root in roots.items():
                point = tree_point(root)
                if point is not None:
                    row["trees"][label] = point
            f.write(json.dumps(row) + "\n")
            f.flush()
            time.sleep(max(0.0, interval - (time.monotonic() - row["t"])))


if __name__ == "__main__":
    main()
