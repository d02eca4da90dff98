"""The fast loop starts no process: a test that starts one (ffmpeg, the relay, a browser...) must say so
with the `integration` marker, which `make test-fast` deselects.

tests/conftest.py runs the setup, call and teardown of every unmarked test inside `refuse_subprocesses`:
there, every way to start a process raises `UnmarkedSubprocess`, and the attempt is recorded so that the
test fails even if the code under test caught the error (a supervisor retrying a failed spawn would).

One exception: `ctypes.util.find_library`, which the relay's libsrt binding calls at start-up (it runs
`ldconfig -p`, and gcc and ld for a name it does not find: about 15 ms). It loads a library; it starts
nothing a test could wait on or leave behind.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

MARK_IT = (
    "mark it @pytest.mark.integration (or its module: pytestmark = pytest.mark.integration), "
    "so that `make test-fast` leaves it out"
)

# asyncio.create_subprocess_exec and _shell, subprocess.run and os.popen all end in subprocess.Popen.
_OS_SPAWNERS = ["system", "fork", "forkpty", "posix_spawn", "posix_spawnp"]


class UnmarkedSubprocess(RuntimeError):
    """A test not marked `integration` tried to start a process."""


@contextlib.contextmanager
def refuse_subprocesses(test: str) -> Iterator[list[str]]:
    """While inside, starting a process raises; yields the list of what was attempted."""
    attempts: list[str] = []

    def refuse(what: str) -> None:
        attempts.append(what)
        raise UnmarkedSubprocess(f"{test} started a subprocess ({what}) but is not marked integration: {MARK_IT}")

    def popen_init(self: subprocess.Popen[Any], args: Any, *rest: Any, **kwargs: Any) -> None:
        if _called_from("ctypes.util"):
            return saved_init(self, args, *rest, **kwargs)
        refuse(repr(args if isinstance(args, str) else list(args)[:3]))

    def os_spawner(name: str) -> Callable[..., Any]:
        def spawn(*args: Any, **kwargs: Any) -> Any:
            refuse(f"os.{name}{args[:2]!r}")

        return spawn

    saved_init = subprocess.Popen.__init__
    saved_os = {name: getattr(os, name) for name in _OS_SPAWNERS if hasattr(os, name)}
    subprocess.Popen.__init__ = popen_init  # type: ignore[method-assign]
    for name in saved_os:
        setattr(os, name, os_spawner(name))
    try:
        yield attempts
    finally:
        subprocess.Popen.__init__ = saved_init  # type: ignore[method-assign]
        for name, original in saved_os.items():
            setattr(os, name, original)


def _called_from(module: str) -> bool:
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_globals.get("__name__") == module:
            return True
        frame = frame.f_back  # type: ignore[assignment]
    return False
