"""relay/malloc.py in real processes: the arena limit a node sets at start, and what the heap gauges read."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.integration

THREADS_ALLOCATING = """
import threading
from relay import malloc
{limit}
# Every thread stays until all have allocated: glibc hands the arena of a thread that ended to the next
# new one, so on a loaded machine threads that ran one after the other shared one arena (seen in CI).
together = threading.Barrier(12)
def hold(out):
    out.append([bytearray(200) for _ in range(20000)])
    together.wait()
held = []
threads = [threading.Thread(target=hold, args=(held,)) for _ in range(12)]
for t in threads:
    t.start()
for t in threads:
    t.join()
import ctypes; ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas_used(limit: str, env: dict[str, str] | None = None) -> int:
    """How many arenas 12 threads allocating at once end up using (glibc's malloc_stats on stderr)."""
    finished = subprocess.run(
        [sys.executable, "-c", THREADS_ALLOCATING.format(limit=limit)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}, **(env or {})},
    )
    assert finished.returncode == 0, finished.stderr
    return len(re.findall(r"^Arena \d+:", finished.stderr, re.MULTILINE))


def test_a_node_limits_malloc_to_two_arenas_unless_the_environment_chose() -> None:
    assert arenas_used("") > 2  # glibc's default: an arena per thread that allocates, up to 8 per core
    assert arenas_used("malloc.limit_arenas()") <= 2
    assert arenas_used("assert not malloc.limit_arenas()", {"MALLOC_ARENA_MAX": "4"}) <= 4
