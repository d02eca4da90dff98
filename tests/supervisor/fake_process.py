"""An in-memory stand-in for FfmpegProcess: the runner's state-machine tests drive it by hand.

Like the real process it reads its subscriber to the end (so the hub's end causes reach the runner the
same way) and, like ffmpeg, exits 0 once its input ends. Everything else, what it prints and how it
ends, the test says. No subprocess, no timers: a test moves the fake clock and lets the loop run.
"""

from __future__ import annotations

import asyncio
import errno
from collections import deque
from collections.abc import Callable, Sequence

from relay.hub.subscriber import EndCause, Subscriber
from relay.push.process import PushExit
from relay.push.progress import ErrorKind, Progress, classify_error
from relay.srt.caller import CallerConfig, SendStats

SIGINT_EXIT = 255
SIGKILLED = -9


class FakeProcess:
    """One fake ffmpeg run: exit code, stop and kill as asked, progress and log lines as the test says."""

    def __init__(
        self,
        argv: Sequence[str],
        subscriber: Subscriber,
        secrets: Sequence[str],
        *,
        on_progress: Callable[[Progress], None],
        on_input_end: Callable[[EndCause | None], None],
        log_prefix: str,
    ) -> None:
        self.argv = list(argv)
        self.uri = self.argv[-1]
        self.subscriber = subscriber
        self._on_progress = on_progress
        self._on_input_end = on_input_end
        self.recent_lines: deque[str] = deque(maxlen=20)
        self.start_error: OSError | None = None
        """Set before `start` to make the spawn fail."""
        self.ignores_stop = False
        """Set to behave like an ffmpeg stuck in its output: a stop ends only in the kill."""
        self.started = False
        self.bytes_in = 0
        self.returncode: int | None = None
        self.stopped = self.killed = self.refused = False
        self.last_error: str | None = None
        self.link_stats: SendStats | None = None
        self._frames = 0
        self._exited = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None

    @property
    def alive(self) -> bool:
        return self.started and self.returncode is None

    # -- what the test makes it do ---------------------------------------------------------------------

    def progress(self, seconds: float = 1.0) -> None:
        """One `-progress` block: another `seconds` of output written."""
        self._frames += max(1, round(seconds * 30))
        self._on_progress(
            Progress(
                frame=self._frames,
                fps=30.0,
                bitrate_kbps=1000.0,
                total_size_bytes=self._frames * 4000,
                out_time_us=self._frames * 33_333,
                speed=1.0,
                ended=False,
            )
        )

    def say(self, line: str) -> None:
        """A log line on stderr, classified as FfmpegProcess does."""
        self.recent_lines.append(line)
        kind = classify_error(line)
        if kind is not None and (kind is ErrorKind.REFUSED or not self.refused):
            self.last_error = line
        self.refused = self.refused or kind is ErrorKind.REFUSED

    def exit(self, returncode: int) -> None:
        """It ends on its own."""
        if self.returncode is None:
            self.returncode = returncode
            self._exited.set()

    def refuse(self) -> None:
        self.say("[rtmp @ 0x55] [error] Server error: NetStream.Publish.BadName")
        self.say("[out#0/flv @ 0x1] [fatal] Error opening output rtmp://127.0.0.1:1/live/***: Input/output error")
        self.exit(1)

    def fail_to_connect(self) -> None:
        self.say("[out#0/flv @ 0x1] [fatal] Error opening output rtmp://127.0.0.1:1/live/***: Connection refused")
        self.exit(1)

    # -- PushProcess -------------------------------------------------------------------------------------

    async def start(self) -> None:
        if self.start_error is not None:
            raise self.start_error
        self.started = True
        self._feeder = asyncio.create_task(self._feed())

    async def exited(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def wait(self) -> PushExit:
        returncode = await self.exited()
        await self._cancel_feeder()
        return PushExit(
            returncode=returncode,
            stopped=self.stopped,
            killed=self.killed,
            refused=self.refused,
            last_error=self.last_error,
            input_end=self.subscriber.end_cause,
        )

    async def stop(self, timeout_seconds: float) -> PushExit:
        self.stopped = True
        if self.ignores_stop:
            self.kill()  # what FfmpegProcess does once `timeout_seconds` have passed
        else:
            self.exit(0)  # EOF on stdin: ffmpeg writes its trailer and ends
        return await self.wait()

    def kill(self) -> None:
        self.killed = True
        self.exit(SIGKILLED)

    async def aclose(self) -> None:
        self.kill()
        await self._cancel_feeder()

    async def _feed(self) -> None:
        while data := await self.subscriber.read():
            self.bytes_in += len(data)
        self._on_input_end(self.subscriber.end_cause)
        self.exit(0)

    async def _cancel_feeder(self) -> None:
        if self._feeder is not None:
            self._feeder.cancel()
            await asyncio.gather(self._feeder, return_exceptions=True)


class FakeProcesses:
    """The process factory of the tests: makes FakeProcess and keeps every one, newest last.

    `script`, if set, is applied to each new process as it is made (e.g. "every run is refused"): what
    it says and how it ends then happens as soon as the runner starts it.
    """

    def __init__(self) -> None:
        self.made: list[FakeProcess] = []
        self.script: Callable[[FakeProcess], None] | None = None

    def __call__(
        self,
        argv: Sequence[str],
        subscriber: Subscriber,
        secrets: Sequence[str],
        *,
        on_progress: Callable[[Progress], None],
        on_input_end: Callable[[EndCause | None], None],
        log_prefix: str,
        srt_output: CallerConfig | None = None,
    ) -> FakeProcess:
        process = FakeProcess(
            argv, subscriber, secrets, on_progress=on_progress, on_input_end=on_input_end, log_prefix=log_prefix
        )
        self.made.append(process)
        if self.script is not None:
            self.script(process)
        return process

    def of(self, key: str) -> list[FakeProcess]:
        """The processes pushing to a URI that contains `key`, oldest first."""
        return [p for p in self.made if key in p.uri]

    def last(self, key: str = "") -> FakeProcess:
        return self.of(key)[-1]


def missing_binary() -> OSError:
    return OSError(errno.ENOENT, "No such file or directory")
