"""What one push's destination really took: the kernel's samples of its connection, over a recent window.

ffmpeg's figures say what it wrote into its socket. A `TransportWatch` keeps the kernel's samples of
that socket (relay/push/tcp_diag.py, one per sampling tick) for one attempt and answers what the status
and the stall watch need: the acknowledged rate over the last seconds, how long acknowledgements have
not advanced, and how many bytes sit unacknowledged. No I/O and no clock of its own: the supervisor
passes the samples and the time in (tests/supervisor/test_transport.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection
from typing import Protocol

from relay.push.tcp_diag import TcpSample


class TransportProbe(Protocol):
    """Reads the connection of each push process (`relay.push.tcp_diag.SockDiagProbe` in production)."""

    async def sample(self, pids: Collection[int]) -> dict[int, TcpSample]:
        """pid -> the TCP connection it pushes over; a pid without one is absent."""


class TransportWatch:
    """The samples of one attempt's connection within `window_seconds`, and when acks last advanced."""

    def __init__(self, window_seconds: float) -> None:
        self._window_seconds = window_seconds
        self._acked: deque[tuple[float, int]] = deque()
        """(time, bytes_acked), oldest first, spanning at least the window once it is that old."""
        self.last: TcpSample | None = None
        self.last_ack_advance_at: float | None = None
        """When bytes_acked last grew, the connection was first seen, or nothing was left to acknowledge."""

    def record(self, sample: TcpSample, now: float) -> None:
        if self.last is not None and sample.inode != self.last.inode:
            self._acked.clear()  # ffmpeg opened another connection: its counters start again
            self.last_ack_advance_at = None
        advanced = bool(self._acked) and sample.bytes_acked > self._acked[-1][1]
        if self.last_ack_advance_at is None or advanced or sample.unacked_bytes == 0:
            self.last_ack_advance_at = now  # nothing outstanding is not waiting on the peer
        self.last = sample
        self._acked.append((now, sample.bytes_acked))
        while len(self._acked) > 2 and now - self._acked[1][0] >= self._window_seconds:
            self._acked.popleft()

    def acked_bitrate_kbps(self) -> float | None:
        """Acknowledged kbit/s over the window (None before two samples)."""
        if len(self._acked) < 2:
            return None
        (t0, b0), (t1, b1) = self._acked[0], self._acked[-1]
        if t1 <= t0:
            return None
        return (b1 - b0) * 8 / 1000 / (t1 - t0)

    def ack_stalled_for(self, now: float) -> float:
        """Seconds since acknowledgements last advanced (0 before the connection is seen)."""
        return 0.0 if self.last_ack_advance_at is None else now - self.last_ack_advance_at
