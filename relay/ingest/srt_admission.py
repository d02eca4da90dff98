"""SRT admission: the engine's check in libsrt's handshake, and the rejection code a caller sees.

Admission happens twice, for two different reasons:

1. In libsrt's handshake (its receiver thread, synchronous): `SrtAdmission.check(streamid)` says
   whether the stream exists, the token is right, the stream is active and not already published
   by a live encoder; it also gives the stream's passphrase, which libsrt then enforces in the
   same handshake. A refused caller never gets a connection, and its rejection code says why
   (1400 bad streamid, 1403 wrong token or inactive, 1404 unknown stream, 1405 mode not publish,
   1409 already live, 1402 server full or handshakes from this address over their rate, 1503 engine
   unavailable; libsrt's own 1010/1011 for a wrong or missing/unexpected passphrase).

   Before any of that, each address (an IPv6 /64, see `relay.ingest.peers`) has a token bucket: a caller
   over its rate is refused at once, without the store being read. A handshake costs the caller a UDP
   packet and us a store read on the thread every SRT packet of the port waits for.
2. After accept, on the event loop: `PublishGate.open_publish` as for RTMP, which opens the sink
   (and may kick a silent earlier publisher). If it refuses now (a race with a change in the store),
   the connection is closed.

Passphrase policy: a stream with a passphrase accepts only callers with that passphrase; a stream
without one accepts only unencrypted callers (libsrt's enforced-encryption rule: an encrypted caller
is refused with 1011 rather than silently sending media we could not decrypt).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from relay.doors import DoorRefusal
from relay.ingest.gate import PublishRefused, RefusalReason, Transport, stream_label
from relay.ingest.peers import peer_key
from relay.ratelimit import TokenBuckets
from relay.srt.handshake import Accept, Peer, Reject
from relay.srt.libsrt import RejectCode
from relay.srt.streamid import InvalidStreamId, parse_streamid


@dataclass(frozen=True, slots=True)
class SrtAdmit:
    """The engine's yes to an SRT handshake: which stream, and the settings libsrt must enforce."""

    stream_id: int
    passphrase: str | None = None
    """None or empty: the stream accepts unencrypted callers only. Secret: never logged."""
    latency_ms: int | None = None
    """Per-stream receiver latency; None uses `SrtSettings.latency_ms`."""


class SrtAdmission(Protocol):
    """The engine's synchronous admission check, called on libsrt's receiver thread.

    It must be thread-safe and quick (no I/O that can block: while it runs, no packet of any SRT
    connection on the port is processed). Raise `PublishRefused` to refuse; the streamid is the raw
    value the caller sent (see `parse_streamid`).
    """

    def check(self, streamid: str) -> SrtAdmit: ...


_REJECT_CODES: dict[RefusalReason, int] = {
    RefusalReason.UNKNOWN_STREAM: RejectCode.NOTFOUND,
    RefusalReason.BAD_TOKEN: RejectCode.FORBIDDEN,
    RefusalReason.INACTIVE: RejectCode.FORBIDDEN,
    RefusalReason.ALREADY_LIVE: RejectCode.CONFLICT,
    RefusalReason.BAD_REQUEST: RejectCode.BAD_REQUEST,
    RefusalReason.UNAVAILABLE: RejectCode.DOWN,
}


def reject_code(reason: RefusalReason) -> int:
    """The SRT rejection code a caller sees for a refusal reason."""
    return int(_REJECT_CODES.get(reason, RejectCode.FORBIDDEN))


def admit_handshake(
    admission: SrtAdmission,
    streamid: str,
    peer: Peer,
    *,
    throttle: TokenBuckets | None = None,
    on_refused: Callable[[Transport, RefusalReason], None] | None = None,
) -> Accept | Reject:
    """The listener's `Admit` (libsrt's receiver thread): the address's rate, the streamid, then `admission`.

    `on_refused` is told of the refusals decided here rather than by `admission` (the rate): for metrics.
    """
    if throttle is not None and not throttle.take(peer_key(peer[0]) if peer else "?"):
        if on_refused is not None:
            on_refused(Transport.SRT, RefusalReason.RATE_LIMITED)
        return Reject(RejectCode.OVERLOAD, "too many handshakes from this address", DoorRefusal.RATE_LIMITED)
    try:
        stream_id, _token = parse_streamid(streamid)
    except InvalidStreamId as exc:
        code = RejectCode.BAD_MODE if exc.bad_mode else RejectCode.BAD_REQUEST
        return Reject(code, str(exc), DoorRefusal.BAD_HANDSHAKE)
    try:
        admit = admission.check(streamid)
    except PublishRefused as exc:
        return Reject(reject_code(exc.reason), f"stream {stream_label(stream_id)}: {exc.reason.value}")
    return Accept(passphrase=admit.passphrase or None, latency_ms=admit.latency_ms, context=(stream_id, admit))
