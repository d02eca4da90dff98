"""One ffmpeg subprocess: stdin fed from a hub subscriber, stderr read continuously, stdout (the progress)
read twice a second.

The process runs in its own process group (so SIGINT/SIGKILL reach anything ffmpeg forks and never our
own group), without a shell. Its stdin and stderr each have one task, and its progress pipe is read on a
timer, so a full pipe never blocks anything: the feeder waits on ffmpeg, never the other way round, and
the readers always drain (the progress pipe holds minutes of ffmpeg's blocks: `PROGRESS_POLL_SECONDS`).

ffmpeg gets a minimal environment (`child_environment`), never the relay's own, which holds
RELAY_API_KEY and whatever else the operator exported: ffmpeg parses what servers we do not control
send it, and a child that goes wrong must find no key to give away. It may not dump core (its memory
holds the destination key): RLIMIT_CORE is set to 0 right after the spawn, as a limit set before exec
would need a `preexec_fn`, which is unsafe in a process with threads (libsrt's, the store's); the
window is ffmpeg's start-up, before it reads any input. No address-space or CPU limit: ffmpeg's threads
reserve virtual memory freely, and a push runs for hours.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import resource
import signal
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from relay.hub.clock import LoopClock, TimerHandle
from relay.hub.subscriber import EndCause, Subscriber
from relay.push.masking import mask_secrets
from relay.push.progress import ErrorKind, Progress, ProgressParser, classify_error
from relay.spawn import Child, spawn
from relay.srt.caller import SendStats

log = logging.getLogger("relay.push")

_READ_BYTES = 64 * 1024
_MAX_LINE_BYTES = 4096
_KEEP_LINES = 20
_TRAILER_FAILED = "Error writing trailer"
_INHERITED = ("PATH", "TMPDIR", "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR")
"""What a push may take from the relay's environment: where programs, libraries and CA certificates are
(a custom RELAY_FFMPEG may need the library path). Nothing else, RELAY_* least of all."""


def child_environment(parent: Mapping[str, str]) -> dict[str, str]:
    """The environment of a push: `_INHERITED` from `parent`, and the C locale (stable messages to parse)."""
    env = {name: parent[name] for name in _INHERITED if name in parent}
    env.update(LANG="C", LC_ALL="C")
    return env


@dataclass(frozen=True, slots=True)
class PushExit:
    """How one ffmpeg run ended, as facts; the supervisor classifies them (`relay.supervisor.exits`)."""

    returncode: int | None
    """Exit status; negative: the signal that ended it."""
    stopped: bool
    """We asked it to stop (SIGINT)."""
    killed: bool
    """We killed it (SIGKILL), after a stop timeout or a stall."""
    refused: bool
    """ffmpeg reported the destination refusing us (key, auth, passphrase)."""
    last_error: str | None
    """Last error line, secrets masked."""
    input_end: EndCause | None
    """Why the subscriber ended, if it did."""


class CappedLines:
    """Splits a pipe's bytes into lines, each capped in length: a runaway line never grows a buffer without
    bound."""

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = b""

    def feed(self, data: bytes) -> list[str]:
        """The lines `data` completes."""
        *complete, partial = (self._partial + data).replace(b"\r", b"\n").split(b"\n")
        self._partial = partial[-_MAX_LINE_BYTES:]
        return [line[:_MAX_LINE_BYTES].decode("utf-8", "replace") for line in complete if line]

    def end(self) -> list[str]:
        """The pipe's end: its last line, if it had no newline."""
        partial, self._partial = self._partial, b""
        return [partial.decode("utf-8", "replace")] if partial else []


async def capped_lines(stream: asyncio.StreamReader) -> AsyncIterator[str]:
    """Lines of a pipe (`CappedLines`)."""
    lines = CappedLines()
    while True:
        data = await stream.read(_READ_BYTES)
        if not data:
            for line in lines.end():
                yield line
            return
        for line in lines.feed(data):
            yield line


class OwnedChild:
    """One ffmpeg child, owned until reaped: spawned without a shell in its own process group, with a
    minimal environment (`child_environment`) and no core dump, its pipe tasks tracked, signals sent to
    the whole group. `FfmpegProcess` (a push) and `relay.pull.process.PullProcess` (a pull) are its two
    kinds; each adds its pipes and its way of stopping."""

    _log = log
    """Where its lines go; each kind names its own."""

    def __init__(self, argv: Sequence[str], log_prefix: str) -> None:
        self._argv = list(argv)
        self._log_prefix = log_prefix
        self._proc: Child | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._killed = False

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    async def _start_child(
        self, stdin: int, pass_fds: Sequence[int] = (), stdout: int = asyncio.subprocess.PIPE
    ) -> Child:
        """Spawn ffmpeg (stderr piped, stdout piped or to `stdout`, `pass_fds` inherited under their own
        numbers); raises OSError if it cannot be started."""
        self._proc = await spawn(
            self._argv, stdin=stdin, env=child_environment(os.environ), pass_fds=pass_fds, stdout=stdout
        )
        with contextlib.suppress(OSError):  # already gone: wait() reports how
            resource.prlimit(self._proc.pid, resource.RLIMIT_CORE, (0, 0))
        widen_pipe(self._proc)  # a stdin pipe, when there is one
        self._log.debug("%s: ffmpeg started (pid %d)", self._log_prefix, self._proc.pid)
        return self._proc

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def exited(self) -> int:
        """Wait for the exit only (the pipes may still be draining)."""
        assert self._proc is not None
        return await self._proc.wait()

    async def _reap(self, readers: Collection[asyncio.Task[None]]) -> int:
        """Wait for the exit and for `readers` to drain the pipes; then every task is ended."""
        assert self._proc is not None
        try:
            returncode = await self._proc.wait()
            with contextlib.suppress(TimeoutError):
                # A grandchild holding the pipes open must not keep us waiting.
                await asyncio.wait_for(asyncio.gather(*readers, return_exceptions=True), 2.0)
        finally:
            await self._cancel_tasks()
        return returncode

    def kill(self) -> None:
        """SIGKILL the whole process group now."""
        self._killed = True
        self._signal(signal.SIGKILL)

    async def aclose(self) -> None:
        """Last resort (cancellation paths): kill and reap without waiting for a clean end."""
        if self._proc is not None and self._proc.returncode is None:
            self.kill()
            with contextlib.suppress(ProcessLookupError):
                await self._proc.wait()
        await self._cancel_tasks()

    def _signal(self, signum: int) -> None:
        if self._proc is None or self._proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self._proc.pid, signum)

    async def _cancel_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


PROGRESS_POLL_SECONDS = 0.5
"""How often a push's progress pipe is read, at the first publisher read after that (relay.hub.clock), or
with none that interval later. ffmpeg writes a block a second (`-stats_period`), ~300 bytes: the pipe
holds minutes of them."""


class FfmpegProcess(OwnedChild):
    """Owns one ffmpeg child, its process group, its stdin and stderr tasks and its progress pipe, until
    `wait` returns.

    The progress pipe (`-progress pipe:1`) is not watched by the loop: ffmpeg writes a block a second,
    and each woke the relay's main thread on its own, ~0.01 CPU s/min a push in place (bench.relay_ab at
    N=8: 0.083 CPU s/min less with a block every 10 s). It is read on a timer with slack
    (`PROGRESS_POLL_SECONDS`), which rides the media path's wake-ups, and to its end once ffmpeg has exited.

    `log_prefix` and every line logged are masked; the argv is never logged unmasked.
    """

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
        super().__init__(argv, log_prefix)
        self._subscriber = subscriber
        self._secrets = tuple(secrets)
        self._on_progress = on_progress
        self._on_input_end = on_input_end
        self._readers: list[asyncio.Task[None]] = []
        self._feeder: asyncio.Task[None] | None = None
        self._progress_fd = -1
        """The read end of ffmpeg's stdout, non-blocking; -1 once read to its end (or never opened)."""
        self._progress_lines = CappedLines()
        self._progress_parser = ProgressParser()
        self._progress_timer: TimerHandle | None = None
        self._clock = LoopClock()
        self._stopped = False
        self._refused = False
        self._last_error: str | None = None
        self.recent_lines: deque[str] = deque(maxlen=_KEEP_LINES)
        self.bytes_in = 0

    @property
    def last_error(self) -> str | None:
        return self._last_error

    @property
    def link_stats(self) -> SendStats | None:
        """The destination link's figures, when the relay itself sends (relay.push.srt_process)."""
        return None

    async def start(self) -> None:
        """Spawn ffmpeg; raises OSError if it cannot be started."""
        await self._start_push()
        self._start_pipes()

    async def _start_push(self, pass_fds: Sequence[int] = ()) -> None:
        """Spawn ffmpeg, its stdout a pipe of ours that the loop does not watch (the progress)."""
        read_fd, write_fd = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        os.set_blocking(write_fd, True)  # ffmpeg's end: a write waits rather than fail (it never fills)
        try:
            await self._start_child(asyncio.subprocess.PIPE, pass_fds=pass_fds, stdout=write_fd)
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # ffmpeg holds it now: its exit is the pipe's end
        self._progress_fd = read_fd

    def _start_pipes(self) -> None:
        self._readers = [self._spawn(self._read_log())]
        self._feeder = self._spawn(self._feed())
        self._poll_progress()

    def _poll_progress(self) -> None:
        self._progress_timer = None
        try:
            self._read_progress()
        finally:  # a consumer that fails must not leave the pipe unread: ffmpeg would block once it is full
            if self._progress_fd >= 0:
                self._progress_timer = self._clock.call_later(
                    PROGRESS_POLL_SECONDS, self._poll_progress, slack=PROGRESS_POLL_SECONDS
                )

    def _read_progress(self) -> None:
        """Take what ffmpeg wrote to its progress pipe since the last read; at its end, close it."""
        fd = self._progress_fd
        if fd < 0:
            return
        lines = self._progress_lines
        while True:
            try:
                data = os.read(fd, _READ_BYTES)
            except BlockingIOError:
                return  # all read; ffmpeg still has it open
            except OSError:
                data = b""
            got = lines.feed(data) if data else lines.end()
            for line in got:
                progress = self._progress_parser.feed_line(line)
                if progress is not None:
                    self._on_progress(progress)
            if not data:
                self._progress_fd = -1
                os.close(fd)
                return

    def _end_progress(self) -> None:
        """ffmpeg has exited (or is being cut): read what its pipe still holds, then let it go. A grandchild
        that keeps the pipe open leaves it unfinished, not waited for."""
        if self._progress_timer is not None:
            self._progress_timer.cancel()
            self._progress_timer = None
        with contextlib.suppress(Exception):  # the last block's consumer failing must not stop the reaping
            self._read_progress()
        if self._progress_fd >= 0:
            os.close(self._progress_fd)
            self._progress_fd = -1

    async def _cancel_tasks(self) -> None:
        self._end_progress()
        await super()._cancel_tasks()

    async def wait(self) -> PushExit:
        """Wait for the exit and for the pipes to drain; reaps the child and every task."""
        returncode = await self._reap(self._readers)
        return PushExit(
            returncode=returncode,
            stopped=self._stopped,
            killed=self._killed,
            refused=self._refused,
            last_error=self._last_error,
            input_end=self._subscriber.end_cause,
        )

    async def stop(self, timeout_seconds: float) -> PushExit:
        """End cleanly if ffmpeg can, within `timeout_seconds`: EOF on stdin first (it then writes the
        FLV trailer and closes the destination properly), SIGINT to the group if that is not enough,
        SIGKILL at the end. Always reaps."""
        assert self._proc is not None
        self._stopped = True
        phase = min(1.0, timeout_seconds / 3)
        feeder = self._feeder
        if self._subscriber.end_cause is not None and feeder is not None and not feeder.done():
            # The stream itself ended: what is still queued is the end of the broadcast, and the feeder
            # closes stdin after it. Give it the first phase to deliver that before we cut the input.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(feeder), phase)
        self._close_stdin()
        if not await self._exited_within(phase):
            self._signal(signal.SIGINT)
            if not await self._exited_within(timeout_seconds - min(1.0, timeout_seconds / 3)):
                log.warning("%s: ffmpeg did not stop within %.1fs, killing", self._log_prefix, timeout_seconds)
                self.kill()
        return await self.wait()

    async def _exited_within(self, seconds: float) -> bool:
        assert self._proc is not None
        try:
            await asyncio.wait_for(asyncio.shield(self._proc.wait()), max(0.0, seconds))
        except TimeoutError:
            return False
        return True

    # -- internals ------------------------------------------------------------------------------------

    def _close_stdin(self) -> None:
        if self._proc is not None and self._proc.stdin is not None and not self._proc.stdin.is_closing():
            self._proc.stdin.close()

    async def _feed(self) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        stdin = self._proc.stdin
        pipe = stdin.transport

        def write_through(data: bytes) -> bool:
            # Only while the pipe's transport holds nothing back: then write() is one os.write, in order
            # after everything before it, and a full pipe leaves the rest buffered for the loop below.
            if pipe.get_write_buffer_size() or pipe.is_closing():
                return False
            pipe.write(data)
            self.bytes_in += len(data)
            return True

        self._subscriber.write_through(write_through)
        try:
            while True:
                data = await self._subscriber.read()
                if not data:
                    break
                stdin.write(data)
                self.bytes_in += len(data)
                await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return  # ffmpeg is gone; wait() reports how
        finally:
            self._subscriber.write_through(None)
        if self._subscriber.end_cause is EndCause.HUB_CLOSED and self._subscriber.discarded:
            # A hub closed with its queues thrown away (a node that lost the stream's lease: another node
            # pushes now): what ffmpeg still holds (its muxer's interleaving queue) is as stale as what
            # was queued here, and an EOF would make it send that. Killed, it sends nothing more.
            self.kill()
        self._close_stdin()
        self._on_input_end(self._subscriber.end_cause)

    async def _read_log(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in capped_lines(self._proc.stderr):
            line = mask_secrets(raw, self._secrets)
            self.recent_lines.append(line)
            kind = classify_error(line)
            if kind is None:
                log.debug("%s: %s", self._log_prefix, line)
                continue
            # A refusal is the most telling line: the generic "Error opening output" after it is not.
            if kind is ErrorKind.REFUSED or not self._refused:
                self._last_error = line
            if kind is ErrorKind.REFUSED:
                self._refused = True
            log.warning("%s: %s", self._log_prefix, line)
            # Decide on ffmpeg's own words (`raw`); masking is for what we show, and could hide them.
            if _TRAILER_FAILED in raw and not self._stopped:
                # The output already failed; closing it would only wait (libsrt's cleanup blocks ~1 s on a
                # broken SRT socket before ffmpeg exits). Nothing is left to deliver: end it now.
                self.kill()


STDIN_PIPE_BYTES = 256 * 1024
"""The push's stdin pipe (Linux's default is 64 KiB): a 1080p keyframe is often larger, and a chunk that
does not fit in the pipe at once costs a partial write, a wake-up when the pipe drains and a second write."""


def widen_pipe(proc: Child | None) -> None:
    """Give the push's stdin `STDIN_PIPE_BYTES` of room (best effort): a pipe's size, or a socket pair's send
    buffer where libuv started the child (uvloop on a kernel without pidfds, `relay.spawn`)."""
    if proc is None or proc.stdin is None:
        return
    pipe = proc.stdin.transport.get_extra_info("pipe")
    if pipe is not None:
        with contextlib.suppress(OSError, AttributeError):  # not Linux, or over pipe-max-size: keep the default
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, STDIN_PIPE_BYTES)
        return
    # libuv gives a child a socket pair instead of a pipe: what a write may leave in it is the
    # sending socket's buffer (which Linux doubles, for its bookkeeping), so that gets the same room.
    sock = proc.stdin.transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, STDIN_PIPE_BYTES)
