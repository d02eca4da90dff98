"""Supervisor settings; every name carries its unit."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from relay.push.command import CommandSettings


class BehindPolicy(StrEnum):
    """What to do with a push further behind live than `max_behind_seconds`."""

    SKIP = "skip"
    """Drop its queue and carry on from the next keyframe (counted in `overflows`)."""
    RESTART = "restart"
    """End the attempt and start again at once (on the live edge: the hub's cached GOP)."""


@dataclass(frozen=True, slots=True)
class SupervisorSettings:
    """Restart, stall and stop timings of every push, and the ffmpeg command tunables."""

    restart_initial_delay_seconds: float = 0.5
    """First retry delay; with jitter it stays under 1 s."""
    restart_max_delay_seconds: float = 30.0
    """Cap of the backoff, and the retry period of a destination that refused us."""
    restart_multiplier: float = 2.0
    restart_jitter_ratio: float = 0.2
    """Each delay is scaled by a random factor in [1 - ratio, 1 + ratio] (never above the cap)."""
    stable_after_seconds: float = 60.0
    """A push that ran this long before failing restarts from the initial delay again."""
    fast_retry_min_run_seconds: float = 5.0
    """A push that had run at least this long and then broke gets the fast-retry window below; a
    destination that drops us within seconds of every connect gets plain exponential backoff."""
    fast_retry_window_seconds: float = 15.0
    """After such a break, retry every `restart_initial_delay_seconds` (no growth) for this long, so a
    destination that restarts (a server reboot, a receiver restart) is reconnected within a second of
    its return; past the window the delay grows as usual. Measured by `make bench` (recovery)."""
    stall_timeout_seconds: float = 15.0
    """No output progress for this long while input flows: kill and restart."""
    stop_timeout_seconds: float = 5.0
    """From stop request (EOF, then SIGINT) to SIGKILL."""
    resolve_timeout_seconds: float = 5.0
    """How long the destination's host name may take to resolve before a push starts (with a destination
    policy); well below `stall_timeout_seconds`, which only a running process can satisfy."""
    transport_sample_interval_seconds: float = 0.5
    """How often the kernel's view of every RTMP(S) push connection is read (one sock_diag lookup per push), at
    the first read of a publisher after each interval (at most one interval later without one)."""
    acked_window_seconds: float = 5.0
    """The window of `acked_bitrate_kbps`: what the destination acknowledged over the last seconds."""
    ack_stall_seconds: float = 4.0
    """RTMP(S): the destination acknowledged nothing for this long while bytes of ours wait for it and
    input flows: dead, kill and restart (with backoff), whatever ffmpeg's own timeouts. Sampled twice a
    second, it is noticed within `ack_stall_seconds` + 0.5 s (the last advancing sample may postdate the
    last ack by one interval), and one merge interval (`RELAY_MERGE_INTERVAL_MS`): the ticks ride the
    publisher's reads (relay.hub.clock)."""
    max_behind_seconds: float = 5.0
    """A push further behind live than this (our queue plus what its socket holds unacknowledged) is
    handled by `behind_policy`."""
    behind_policy: BehindPolicy = BehindPolicy.SKIP
    command: CommandSettings = field(default_factory=CommandSettings)
