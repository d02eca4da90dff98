"""A push to an SRT destination that the relay sends itself: ffmpeg muxes MPEG-TS into a pipe, our
SRT caller (relay/srt/caller.py) sends it on.

Still one supervised ffmpeg per destination, fed and stopped like any push (`FfmpegProcess`): stdin from
the hub, progress on stdout, log on stderr, plus a fourth pipe for the media, whose write end ffmpeg
inherits under its own number and whose read end the caller's thread owns. The attempt ends when ffmpeg
exits, as for every push; the caller makes it exit when the link fails: a connection refused, lost or
timed out ends the caller, which (back on the event loop) kills ffmpeg, so the supervisor sees a failed
attempt with the caller's words as its error, and classifies it as it does an ffmpeg of its own that
lost its destination (a rejection by passphrase or stream id as a refusal). On a clean end ffmpeg exits
first; the caller then delivers the tail and closes once it is acknowledged, and `wait` returns only then.

`push_process` is the supervisor's production process factory: this class for a command with an
`srt_output`, `FfmpegProcess` for every other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import Callable, Sequence

from relay.hub.subscriber import EndCause, Subscriber
from relay.push.command import SRT_PIPE
from relay.push.process import FfmpegProcess, PushExit, log
from relay.push.progress import Progress
from relay.srt.caller import CallerConfig, CallerEnd, SendStats, SrtCaller, caller_libsrt
from relay.srt.libsrt import SrtUnavailable

_END_GRACE_SECONDS = 3.0
"""Beyond the linger time, how long `wait` gives the caller to end before cutting it."""


class SrtPushProcess(FfmpegProcess):
    """Owns one push's ffmpeg (as `FfmpegProcess`) and the `SrtCaller` that sends its output."""

    def __init__(
        self,
        argv: Sequence[str],
        subscriber: Subscriber,
        secrets: Sequence[str],
        *,
        srt_output: CallerConfig,
        on_progress: Callable[[Progress], None],
        on_input_end: Callable[[EndCause | None], None],
        log_prefix: str,
    ) -> None:
        super().__init__(
            argv, subscriber, secrets, on_progress=on_progress, on_input_end=on_input_end, log_prefix=log_prefix
        )
        self._config = srt_output
        self._caller: SrtCaller | None = None
        self._caller_end: asyncio.Future[CallerEnd] | None = None
        self._connected = False

    @property
    def link_stats(self) -> SendStats | None:
        return self._caller.stats if self._caller is not None else None

    async def start(self) -> None:
        """Make the media pipe, spawn ffmpeg writing to it, start the caller; OSError if either cannot start."""
        try:
            lib = caller_libsrt()
        except SrtUnavailable as exc:
            raise OSError(str(exc)) from None
        loop = asyncio.get_running_loop()
        read_fd, write_fd = os.pipe()
        os.set_inheritable(write_fd, True)
        self._argv = [f"pipe:{write_fd}" if arg == SRT_PIPE else arg for arg in self._argv]
        try:
            await self._start_push(pass_fds=(write_fd,))
        except BaseException:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)  # ffmpeg holds it now: its exit is the pipe's EOF
        self._caller_end = loop.create_future()

        def ended(end: CallerEnd) -> None:  # on the caller's thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(self._on_caller_end, end)

        def connected() -> None:  # on the caller's thread; a plain flag, read on the loop
            self._connected = True

        self._caller = SrtCaller(
            lib, self._config, read_fd, on_connected=connected, on_end=ended, name=f"srt-push:{self.pid}"
        )
        self._caller.start()
        self._start_pipes()

    def _on_caller_end(self, end: CallerEnd) -> None:
        assert self._caller_end is not None
        if not self._caller_end.done():
            self._caller_end.set_result(end)
        if end.error is not None:
            log.warning("%s: %s", self._log_prefix, end.error)
            self.recent_lines.append(end.error)
            super().kill()  # the destination is gone: end this attempt now, as a broken ffmpeg output would

    def kill(self) -> None:
        super().kill()
        if self._caller is not None:
            self._caller.abort()  # a send blocked on a destination that takes nothing ends too

    async def stop(self, timeout_seconds: float) -> PushExit:
        if self._caller is not None and not self._connected:
            self._caller.abort()  # still connecting: nobody is there to receive the tail
        return await super().stop(timeout_seconds)

    async def wait(self) -> PushExit:
        """Wait for ffmpeg's exit, then for the caller to deliver the tail (bounded); reaps both."""
        result = await super().wait()
        if self._caller is not None and not self._connected:
            self._caller.abort()  # ffmpeg is done and nobody answered yet: no tail to deliver
        end = await self._wait_caller(self._config.linger_seconds + _END_GRACE_SECONDS)
        if end is None or end.error is None:
            return result
        # The caller's words say why; ffmpeg's own last line would only be the broken pipe we caused.
        return dataclasses.replace(result, last_error=end.error, refused=result.refused or end.refused)

    async def aclose(self) -> None:
        if self._caller is not None:
            self._caller.abort()
        await super().aclose()
        await self._wait_caller(_END_GRACE_SECONDS)

    async def _wait_caller(self, within_seconds: float) -> CallerEnd | None:
        if self._caller_end is None or self._caller is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(self._caller_end), within_seconds)
        except TimeoutError:
            log.warning("%s: SRT caller did not end within %.1fs, cutting it", self._log_prefix, within_seconds)
            self._caller.abort()
            with contextlib.suppress(TimeoutError):
                return await asyncio.wait_for(asyncio.shield(self._caller_end), 1.0)
            return None


def push_process(
    argv: Sequence[str],
    subscriber: Subscriber,
    secrets: Sequence[str],
    *,
    on_progress: Callable[[Progress], None],
    on_input_end: Callable[[EndCause | None], None],
    log_prefix: str,
    srt_output: CallerConfig | None = None,
) -> FfmpegProcess:
    """The production process factory: the relay's SRT caller behind ffmpeg when `srt_output` is set."""
    if srt_output is None:
        return FfmpegProcess(
            argv, subscriber, secrets, on_progress=on_progress, on_input_end=on_input_end, log_prefix=log_prefix
        )
    return SrtPushProcess(
        argv,
        subscriber,
        secrets,
        srt_output=srt_output,
        on_progress=on_progress,
        on_input_end=on_input_end,
        log_prefix=log_prefix,
    )
