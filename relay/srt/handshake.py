"""SRT handshake admission: the listen callback libsrt runs before a connection exists.

libsrt's receiver thread ("SRT:RcvQ") runs the listener callback for every handshake, before the
connection exists. It reads the streamid, asks `admit` (synchronous, must be quick: while it runs
no packet of ANY connection on the port is received), and on success sets the stream's passphrase
and latency on the new socket, so that libsrt's own key exchange refuses a wrong or missing
passphrase. Nothing of ours may raise into that thread: errors become a rejection.

A handshake said yes to waits here until the listener's worker thread accepts it (`claim`); the
waiting handshakes and the accepted connections together are bounded by `max_connections`. No lock
of ours is held while calling libsrt, because libsrt may be inside our callback (holding its own
locks) waiting for that same lock.

Refusals are logged through a `ThrottledLog`: a handshake costs a caller one UDP packet, so without it a
flood of bad handshakes would be a flood of log lines written on libsrt's receiver thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from relay.doors import DoorRefusal
from relay.ratelimit import ThrottledLog
from relay.srt.libsrt import LibSrt, RejectCode, SockOpt, SrtError, format_peer, make_listen_callback, read_sockaddr_at

log = logging.getLogger("relay.srt.listener")  # the listener's logger, shared with listener.py

Peer = tuple[str, int] | None

SRT_DOOR_REFUSALS = (
    DoorRefusal.MAX_CONNECTIONS,
    DoorRefusal.RATE_LIMITED,
    DoorRefusal.BAD_HANDSHAKE,
    DoorRefusal.INTERNAL_ERROR,
)
"""The refusals an SRT listener counts (each shown from 0 on /metrics)."""


@dataclass(frozen=True, slots=True)
class Accept:
    """`admit`'s yes: the passphrase (None = unencrypted only) and latency to set on the new socket."""

    passphrase: str | None = None
    latency_ms: int | None = None
    context: Any = None
    """Whatever the admitter wants back in `Connected` (e.g. the stream it resolved)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """`admit`'s no: the rejection code the caller will see, and a log line without secrets."""

    code: int
    reason: str
    door: DoorRefusal | None = None
    """Set for a refusal at the door, before the stream's admission decided (counted by `Handshakes` for
    metrics); None for the admission's own refusals (counted by the admission)."""


Admit = Callable[[str, Peer], Accept | Reject]


@dataclass(frozen=True, slots=True)
class Admitted:
    """A handshake `admit` said yes to, waiting for the worker's accept."""

    accept: Accept
    streamid: str
    created: float
    peer: Peer


class Handshakes:
    """Owns the listen callback of one listener and the handshakes it admitted.

    What libsrt's receiver thread and the listener's worker share (the admitted handshakes not yet
    accepted, the count of open connections) lives here, always under `_lock`.
    """

    def __init__(
        self,
        lib: LibSrt,
        admit: Admit,
        *,
        max_connections: int,
        latency_ms: int,
        peer_idle_timeout_ms: int,
        connect_timeout_ms: int,
        refusal_log: ThrottledLog | None = None,
        on_admitted: Callable[[], None] = lambda: None,
        on_failed: Callable[[Any, Peer], None] = lambda context, peer: None,
    ) -> None:
        self._lib = lib
        self._admit = admit
        self._max_connections = max_connections
        self._latency_ms = latency_ms
        self._peer_idle_timeout_ms = peer_idle_timeout_ms
        self._lock = threading.Lock()
        self._pending: dict[int, Admitted] = {}
        self._connections = 0
        self._refused: Counter[DoorRefusal] = Counter(dict.fromkeys(SRT_DOOR_REFUSALS, 0))
        """Handshakes this layer refused, counted on libsrt's thread and read by the loop: under `_lock`."""
        self._stale_after = connect_timeout_ms / 1000 + 2.0
        """An admitted handshake not accepted by then failed after the callback (bad passphrase): forgotten."""
        self._on_admitted = on_admitted
        self._on_failed = on_failed
        """Told of each admitted handshake forgotten as stale (its `Accept.context` and peer), outside our
        lock, on the thread that noticed: libsrt refused it after the callback, almost always over the
        passphrase (wrong, missing, or sent to a stream without one), or the caller gave up meanwhile."""
        self._refusal_log = refusal_log or ThrottledLog(log, "SRT handshake refusals")
        self.callback: Any = make_listen_callback(self._on_handshake)
        """The C callback object for `LibSrt.set_listen_callback`; it must outlive the listener socket:
        libsrt keeps only the raw pointer."""

    def claim(self, sock: int) -> Admitted | None:
        """The worker accepted `sock`: its admission, now counted as a connection (None: never admitted)."""
        with self._lock:
            admitted = self._pending.pop(sock, None)
            if admitted is not None:
                self._connections += 1
        return admitted

    def waiting_seconds(self) -> float | None:
        """Forget stale admitted handshakes; then how long until the oldest left goes stale (None: none left)."""
        now = time.monotonic()
        with self._lock:
            failed = self._forget_stale(now)
            oldest = min((p.created for p in self._pending.values()), default=None)
        self._report_failed(failed)
        return None if oldest is None else max(0.0, oldest + self._stale_after - now)

    def _forget_stale(self, now: float) -> list[Admitted]:
        stale = [k for k, p in self._pending.items() if now - p.created > self._stale_after]
        return [self._pending.pop(ns) for ns in stale]

    def _report_failed(self, failed: list[Admitted]) -> None:
        for admitted in failed:
            self._on_failed(admitted.accept.context, admitted.peer)

    @property
    def connections(self) -> int:
        """Accepted connections not yet released."""
        with self._lock:
            return self._connections

    def refusals(self) -> dict[DoorRefusal, int]:
        """Handshakes refused here (not by `admit`) since the listener started, by reason."""
        with self._lock:
            return dict(self._refused)

    def release(self) -> None:
        """A claimed connection is closed (or failed its set-up)."""
        with self._lock:
            self._connections -= 1

    def _on_handshake(self, _opaque: int, ns: int, hsversion: int, peer_ptr: int | None, sid: bytes | None) -> int:
        """Listener callback (libsrt's receiver thread): decide before the connection exists."""
        try:
            peer = read_sockaddr_at(peer_ptr)
            decision = self._decide(hsversion, peer, sid)
            if isinstance(decision, Reject):
                if decision.door is not None:
                    self._count(decision.door)
                self._refusal_log.log(
                    logging.INFO,
                    str(decision.code),
                    "SRT handshake from %s refused (%d): %s",
                    format_peer(peer),
                    decision.code,
                    decision.reason,
                )
                self._lib.set_reject_reason(ns, decision.code)
                return -1
            self._refusal_log.flush()  # a window that held refusals back says so, even if none follow
            try:
                if decision.passphrase:
                    self._lib.set_str(ns, SockOpt.PASSPHRASE, decision.passphrase)
                latency_ms = decision.latency_ms if decision.latency_ms is not None else self._latency_ms
                self._lib.set_int(ns, SockOpt.LATENCY, latency_ms)
                # Set per connection rather than trusting inheritance from the listener. Note that
                # libsrt 1.5.1 also waits for 16 unanswered EXP checks (about 5 s) before it
                # declares a peer gone, so shorter timeouts behave like ~5 s.
                self._lib.set_int(ns, SockOpt.PEERIDLETIMEO, self._peer_idle_timeout_ms)
            except SrtError as exc:
                # e.g. a stored passphrase outside libsrt's 10..79 characters; exc never holds it.
                log.error("SRT handshake from %s refused: cannot apply stream settings: %s", format_peer(peer), exc)
                self._count(DoorRefusal.INTERNAL_ERROR)
                self._lib.set_reject_reason(ns, RejectCode.ISE)
                return -1
            with self._lock:
                self._pending[ns] = Admitted(decision, (sid or b"").decode(), time.monotonic(), peer)
            self._on_admitted()  # the worker may sleep without watching libsrt: it has a connection to accept
            return 0
        except BaseException:
            log.exception("SRT listener callback failed; refusing the connection")
            try:
                self._count(DoorRefusal.INTERNAL_ERROR)
                self._lib.set_reject_reason(ns, RejectCode.ISE)
            except BaseException:  # never raise into libsrt
                pass
            return -1

    def _count(self, refusal: DoorRefusal) -> None:
        with self._lock:  # held only for a count or a scrape's copy
            self._refused[refusal] += 1

    def _decide(self, hsversion: int, peer: Peer, sid: bytes | None) -> Accept | Reject:
        if hsversion < 5:
            return Reject(RejectCode.BAD_REQUEST, "HSv4 caller (no streamid support)", DoorRefusal.BAD_HANDSHAKE)
        try:
            streamid = (sid or b"").decode("utf-8")
        except UnicodeDecodeError:
            return Reject(RejectCode.BAD_REQUEST, "streamid is not UTF-8", DoorRefusal.BAD_HANDSHAKE)
        now = time.monotonic()
        with self._lock:
            # A handshake can still fail after the callback said yes (bad passphrase): forget those.
            failed = self._forget_stale(now)
            busy = self._connections + len(self._pending)
        self._report_failed(failed)
        if busy >= self._max_connections:
            return Reject(
                RejectCode.OVERLOAD, f"max_connections ({self._max_connections}) reached", DoorRefusal.MAX_CONNECTIONS
            )
        return self._admit(streamid, peer)
