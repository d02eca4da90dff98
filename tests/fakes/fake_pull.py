"""An in-memory pull process: what a pull's ffmpeg would write to its stdout, fed by the test.

`FakePullProcesses` is the factory the engine is given (`pull_process_factory`); it keeps every process it
made, so a test can see each attempt's argv, write FLV bytes as the source would, end it (a source that
drops) or see it stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from relay.pull.process import PullExit


class FakePullProcess:
    """One attempt: started, fed by the test through `emit`, ended by the test (`end`) or by the runner."""

    def __init__(self, argv: Sequence[str], secrets: Sequence[str], on_data: Callable[[bytes], None]) -> None:
        self.argv = list(argv)
        self.secrets = tuple(secrets)
        self._on_data = on_data
        self.started = False
        self.stopped = False
        self.killed = False
        self.last_error: str | None = None
        self._exit = asyncio.Event()
        self.returncode: int | None = None

    def emit(self, data: bytes) -> None:
        """What ffmpeg writes to stdout: the runner parses it as it would a pipe's."""
        self._on_data(data)

    def end(self, returncode: int = 0, error: str | None = None) -> None:
        """The source ended or broke: ffmpeg exits."""
        self.last_error = error
        self.returncode = returncode
        self._exit.set()

    @property
    def running(self) -> bool:
        return self.started and not self._exit.is_set()

    async def start(self) -> None:
        self.started = True

    async def exited(self) -> int:
        await self._exit.wait()
        return self.returncode or 0

    async def wait(self) -> PullExit:
        await self._exit.wait()
        return PullExit(self.returncode, self.stopped, self.killed, self.last_error)

    async def stop(self, timeout_seconds: float) -> PullExit:
        self.stopped = True
        self.end(255)
        return await self.wait()

    async def aclose(self) -> None:
        self.kill()

    def kill(self) -> None:
        self.killed = True
        self.end(-9)


@dataclass
class FakePullProcesses:
    """The factory: every process made, in order."""

    made: list[FakePullProcess] = field(default_factory=list)

    def __call__(
        self, argv: Sequence[str], secrets: Sequence[str], *, on_data: Callable[[bytes], None], log_prefix: str
    ) -> FakePullProcess:
        process = FakePullProcess(argv, secrets, on_data)
        self.made.append(process)
        return process
