"""Parse what ffmpeg says: `-progress` blocks on stdout, log lines on stderr.

Only progress counts as progress (datarhei's lesson): a block whose output time or size grew. Log lines
are classified so that a destination refusing us (wrong key, bad passphrase) is told apart from one that
is merely unreachable: the first must not be retried in a tight loop.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Progress:
    """One `-progress` block."""

    frame: int
    fps: float
    bitrate_kbps: float | None
    total_size_bytes: int
    out_time_us: int
    speed: float | None
    ended: bool
    """`progress=end`: ffmpeg finished writing (clean end)."""


def _int(value: str | None) -> int:
    try:
        return int(value) if value is not None else 0
    except ValueError:
        return 0


def _float(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.rstrip("x").replace("kbits/s", "").strip())
    except ValueError:
        return None


class ProgressParser:
    """Accumulates `key=value` lines; returns a Progress at each block's closing `progress=` line."""

    _MAX_KEYS = 64

    def __init__(self) -> None:
        self._fields: dict[str, str] = {}

    def feed_line(self, line: str) -> Progress | None:
        key, sep, value = line.strip().partition("=")
        if not sep:
            return None
        if key != "progress":
            if len(self._fields) < self._MAX_KEYS or key in self._fields:
                self._fields[key] = value.strip()
            return None
        f, self._fields = self._fields, {}
        out_time = _int(f.get("out_time_us")) or _int(f.get("out_time_ms"))  # both are µs in ffmpeg
        return Progress(
            frame=_int(f.get("frame")),
            fps=_float(f.get("fps")) or 0.0,
            bitrate_kbps=_float(f.get("bitrate")),
            total_size_bytes=_int(f.get("total_size")),
            out_time_us=max(0, out_time),
            speed=_float(f.get("speed")),
            ended=value.strip() == "end",
        )


class ErrorKind(StrEnum):
    REFUSED = "refused"
    """The destination answered and said no (key, auth, passphrase): retry only slowly."""
    OTHER = "other"


# What destinations say when the key or credentials are wrong. "Connection refused" (nothing listening)
# is deliberately absent: that is an outage, not a refusal.
_REFUSAL = re.compile(
    r"BadName|Publish\.(Denied|Rejected)|Connect\.Rejected|authenticat|unauthori[sz]ed|forbidden|"
    r"access denied|\b401\b|\b403\b|invalid (stream )?key|bad (stream )?key|stream key|"
    r"incorrect passphrase|BADSECRET|REJ_[A-Z]+|connection rejected|\brejected\b",
    re.IGNORECASE,
)
_LEVEL = re.compile(r"\[(error|fatal|panic)\]")


_PROBE_SKIPPED = re.compile(r"\] \[error\] Codec \([\w-]+\) not on whitelist '")
"""The push's probe refusing a video decoder on purpose (`-codec_whitelist`, relay/push/command.py)."""


def classify_error(line: str) -> ErrorKind | None:
    """REFUSED for a refusal, OTHER for any other error-level line, None for the rest (and for the
    probe's refusal of a decoder we did not allow: expected, it is how the push avoids decoding)."""
    if _PROBE_SKIPPED.search(line):
        return None
    if _REFUSAL.search(line) and "connection refused" not in line.lower():
        return ErrorKind.REFUSED
    if _LEVEL.search(line):
        return ErrorKind.OTHER
    return None
