"""SRT's passphrase rule, one for every place a passphrase enters: a stream's `srt_passphrase` (our SRT
listener sets it on each admitted socket) and a destination's `passphrase` option (ffmpeg's caller).

libsrt refuses a passphrase outside 10 to 79 characters when it is set on a socket; checked only
there, a bad one would surface as a refused handshake or a push that retries forever, long after the
API said yes.
"""

from __future__ import annotations

PASSPHRASE_MIN_CHARS = 10
PASSPHRASE_MAX_CHARS = 79
PASSPHRASE_LENGTH_RULE = f"must be {PASSPHRASE_MIN_CHARS} to {PASSPHRASE_MAX_CHARS} characters"


def passphrase_length_ok(value: str) -> bool:
    """True if libsrt accepts a passphrase of this length."""
    return PASSPHRASE_MIN_CHARS <= len(value) <= PASSPHRASE_MAX_CHARS
