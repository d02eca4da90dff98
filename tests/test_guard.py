"""The guard of tests/conftest.py: inside `refuse_subprocesses` no way of starting a process gets through
(this test is itself unmarked, so the conftest's guard is around it too; the inner one records for it)."""

from __future__ import annotations

import asyncio
import ctypes.util
import os
import subprocess

import pytest

from tests.support.guard import UnmarkedSubprocess, refuse_subprocesses


def test_blocking_ways_are_refused_and_recorded() -> None:
    with refuse_subprocesses("this test") as attempts:
        with pytest.raises(UnmarkedSubprocess, match=r"this test started a subprocess .* mark it"):
            subprocess.run(["true"], check=True)
        with pytest.raises(UnmarkedSubprocess):
            subprocess.Popen("true", shell=True)
        with pytest.raises(UnmarkedSubprocess):
            os.system("true")
        with pytest.raises(UnmarkedSubprocess):
            os.posix_spawn("/bin/true", ["true"], os.environ)
    assert len(attempts) == 4


async def test_asyncio_subprocesses_are_refused() -> None:
    with refuse_subprocesses("this test") as attempts:
        with pytest.raises(UnmarkedSubprocess):
            await asyncio.create_subprocess_exec("true")
        with pytest.raises(UnmarkedSubprocess):
            await asyncio.create_subprocess_shell("true")
    assert len(attempts) == 2


def test_a_caught_refusal_is_still_recorded() -> None:
    with refuse_subprocesses("this test") as attempts:
        try:
            subprocess.run(["ffmpeg", "-version"], check=False)
        except Exception:  # as a supervisor retrying a failed spawn would
            pass
    assert attempts == ["['ffmpeg', '-version']"]


def test_library_lookup_is_let_through() -> None:
    with refuse_subprocesses("this test") as attempts:
        ctypes.util.find_library("c")  # runs ldconfig: how the relay finds libsrt
    assert attempts == []
