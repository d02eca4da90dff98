"""Starting a child process from the node's event loop without stopping the loop for long, whatever the loop.

asyncio's own loop spawns with `subprocess.Popen`, which forks with vfork(): the parent waits only until
the child has exec'd, ~1 ms for an ffmpeg. uvloop spawns through libuv's uv_spawn, which forks with fork():
the kernel copies the parent's page tables first, and the loop stands still meanwhile: `python -m
bench.spawn --libuv` (16 children in a row from a process holding 100 MB, the development VM) measured
6.1-6.5 ms a start, ~100 ms for the 16, against 0.6-0.8 ms a start on asyncio's loop. When a stream goes
live with 16 destinations, that is time the hub does not feed the pushes already started: the slower
start of many pushes `RELAY_EVENT_LOOP=uvloop` showed.

`spawn` keeps asyncio's loop on `asyncio.create_subprocess_exec` and starts a child on any other loop
with `subprocess.Popen` too, then hands its pipes to the loop (`connect_read_pipe`, `connect_write_pipe`)
and learns of its exit through a pidfd the loop watches. Either way the caller gets the same interface,
`Child`, that `asyncio.subprocess.Process` has.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO, Protocol

STREAM_LIMIT = 64 * 1024
"""A pipe reader's buffer limit, asyncio.subprocess's own."""


class Child(Protocol):
    """What the node uses of a child process: `asyncio.subprocess.Process`'s interface."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    @property
    def stdin(self) -> asyncio.StreamWriter | None: ...

    @property
    def stdout(self) -> asyncio.StreamReader | None: ...

    @property
    def stderr(self) -> asyncio.StreamReader | None: ...

    async def wait(self) -> int: ...


async def spawn(
    argv: Sequence[str],
    *,
    stdin: int,
    env: Mapping[str, str],
    pass_fds: Sequence[int] = (),
    stdout: int = asyncio.subprocess.PIPE,
) -> Child:
    """Start `argv` in a session of its own, stderr piped, stdin as asked (`asyncio.subprocess.PIPE` or
    `DEVNULL`), stdout piped or to a descriptor of the caller's (`Child.stdout` is then None), `pass_fds`
    inherited under their own numbers. Raises OSError if it cannot be started."""
    loop = asyncio.get_running_loop()
    if isinstance(loop, asyncio.BaseEventLoop) or not pidfds_work():
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
            env=dict(env),
            pass_fds=tuple(pass_fds),
        )
    # Blocking, as asyncio's own spawn is: vfork() returns once the child has exec'd (~1 ms).
    popen = subprocess.Popen(  # noqa: ASYNC220
        list(argv),
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        start_new_session=True,
        env=dict(env),
        pass_fds=tuple(pass_fds),
    )
    child = PopenChild(popen, loop)
    try:
        await child.connect()
    except BaseException:
        child.abandon()
        raise
    return child


@functools.cache
def pidfds_work() -> bool:
    """Whether this kernel gives pidfds (Linux 5.3 and later). Without them a child on uvloop is started by
    libuv, as before: the loop then stands still through each fork."""
    try:
        os.close(os.pidfd_open(os.getpid()))
    except (AttributeError, OSError):
        return False
    return True


class _StdinProtocol(asyncio.streams.FlowControlMixin, asyncio.BaseProtocol):
    """A child's stdin as a `StreamWriter`'s protocol: flow control for `drain`, a waiter for `wait_closed`."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop=loop)
        self._closed: asyncio.Future[None] = loop.create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed


class _PipeReaderProtocol(asyncio.StreamReaderProtocol):
    """A child's stdout or stderr: at its end the transport closes (uvloop keeps a transport open after EOF
    when the protocol asks to, as `StreamReaderProtocol` does for a socket's half-close)."""

    def eof_received(self) -> bool:
        super().eof_received()
        return False


class PopenChild:
    """A child started by `subprocess.Popen` on a loop other than asyncio's own: its pipes on the loop, its
    exit seen through a pidfd (readable once the child has exited) and reaped here, never by `Popen`."""

    def __init__(self, popen: subprocess.Popen[bytes], loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        self.returncode: int | None = None
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._exit: asyncio.Future[int] = loop.create_future()
        self._transports: list[asyncio.BaseTransport] = []
        self._handed: list[IO[bytes]] = []
        """Pipes a transport of the loop took (and closes)."""
        self._pidfd = os.pidfd_open(popen.pid)
        loop.add_reader(self._pidfd, self._reap)

    async def connect(self) -> None:
        """Hand the pipes to the loop."""
        loop = self._loop
        if self._popen.stdin is not None:
            transport, protocol = await loop.connect_write_pipe(lambda: _StdinProtocol(loop), self._popen.stdin)
            self._transports.append(transport)
            self._handed.append(self._popen.stdin)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        self.stdout = await self._reader(self._popen.stdout)
        self.stderr = await self._reader(self._popen.stderr)

    async def _reader(self, pipe: IO[bytes] | None) -> asyncio.StreamReader | None:
        if pipe is None:
            return None
        reader = asyncio.StreamReader(limit=STREAM_LIMIT, loop=self._loop)
        transport, _ = await self._loop.connect_read_pipe(lambda: _PipeReaderProtocol(reader, loop=self._loop), pipe)
        self._transports.append(transport)
        self._handed.append(pipe)
        return reader

    async def wait(self) -> int:
        return await asyncio.shield(self._exit)

    def _reap(self) -> None:
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:  # reaped elsewhere: its status is lost
            pid, status = self.pid, 255 << 8
        if pid == 0:
            return  # not exited yet (a pidfd is readable only once it has)
        self._loop.remove_reader(self._pidfd)
        os.close(self._pidfd)
        self.returncode = self._popen.returncode = os.waitstatus_to_exitcode(status)
        if not self._exit.done():
            self._exit.set_result(self.returncode)

    def abandon(self) -> None:
        """The pipes could not be handed to the loop: kill the child and close what is open (it is reaped
        when it has exited, as ever). A pipe a transport took is closed by its transport, the others here:
        never a descriptor twice."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        for transport in self._transports:
            transport.close()
        for pipe in (self._popen.stdin, self._popen.stdout, self._popen.stderr):
            if pipe is not None and pipe not in self._handed:
                with contextlib.suppress(OSError):
                    pipe.close()
