"""The relay's SRT caller fed through a pipe the test writes, as a push's ffmpeg writes its MPEG-TS."""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field

from relay.srt.caller import CallerConfig, CallerEnd, SrtCaller, caller_libsrt


@dataclass
class PipedCaller:
    """`start()` it, write TS to `write_fd`, `close_pipe()` for the end of the stream; `ends` holds how it ended
    (set on its thread, with `ended`)."""

    config: CallerConfig
    connected: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    ends: list[CallerEnd] = field(default_factory=list)
    write_fd: int = -1
    caller: SrtCaller = field(init=False)

    def __post_init__(self) -> None:
        read_fd, self.write_fd = os.pipe()
        self.caller = SrtCaller(
            caller_libsrt(), self.config, read_fd, on_connected=self.connected.set, on_end=self._end
        )

    def _end(self, end: CallerEnd) -> None:
        self.ends.append(end)
        self.ended.set()

    def start(self) -> None:
        self.caller.start()

    def close_pipe(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def stop(self) -> None:
        """Abort the caller (if still running) and close the pipe: for a test's `finally`."""
        self.caller.abort()
        self.close_pipe()
