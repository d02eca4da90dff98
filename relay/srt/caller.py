"""An SRT caller that sends what a push's ffmpeg writes to a pipe: one per SRT destination, one thread each.

Why the relay sends instead of ffmpeg's own libsrt output: ffmpeg does not expose SRTO_PEERIDLETIMEO, so
a dead destination is noticed only at libsrt's 5 s default; its socket is non-blocking, so what is queued
at `srt_close` is never sent (`-linger` or not); and it reports no link statistics. Here:

- `CallerConfig.from_destination` reads the destination URI's options exactly as ffmpeg's libsrt protocol
  does (same names, same units: latency and timeouts in microseconds, connect_timeout in ms) and maps each
  to its socket option; the peer idle timeout is the relay's setting, kept by the thread itself
  (`_Watchdog`): libsrt's own cannot fire before ~5 s on a short link.
- `SrtCaller.run` (on its own thread) creates the socket, connects (blocking, bounded by SRTO_CONNTIMEO),
  then reads the pipe and sends it in messages of `payload_size` bytes (1316: seven TS packets). When the
  pipe has nothing more to give right now, the whole TS packets it holds go out in a shorter message, as
  ffmpeg does when its muxer flushes: nothing waits for the next write. At EOF (ffmpeg wrote its last
  packet and exited) it sends the rest and waits until libsrt's send buffer is empty, i.e. every packet
  was acknowledged or given up on, bounded by `linger_seconds`: an exact end of stream.
- Every 100 ms while packets wait for an acknowledgement it reads `srt_bistats` (while ffmpeg writes, at the
  first read of the pipe once due, up to 100 ms later): acknowledgements that
  stop while packets wait for one end the link after the peer idle timeout; every
  `stats_interval_seconds` the figures become a frozen `SendStats` (`stats`). The socket's state is
  checked too, so libsrt's own break ends the caller. With nothing in flight and nothing to send (the
  publisher is away) it looks only every `stats_interval_seconds`: there is nothing to judge, and an
  `abort()` wakes it at once (an eventfd beside the pipe in its `poll`).
- It never raises into its thread: how it ended is a frozen `CallerEnd` handed to `on_end`, on its thread
  (the push process passes it to the event loop).

Blocking calls on its own thread are the point: a destination that reads slowly blocks this thread's send,
then ffmpeg's write to the pipe, then the push's stdin, and the hub's bounded queue for that subscriber
overflows as for any slow destination. Nothing else waits.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import select
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from relay.destinations import Destination, srt_options
from relay.srt.libsrt import (
    SRT_LIVE_MAX_PAYLOAD_BYTES,
    EpollFlag,
    LibSrt,
    SockOpt,
    SockStatus,
    SrtEpollEvent,
    SrtErrno,
    SrtError,
    SrtUnavailable,
    TraceBStats,
    TransType,
)

log = logging.getLogger("relay.push.srt")

TS_PACKET_BYTES = 188
DEFAULT_PAYLOAD_BYTES = 1316
"""Seven TS packets: what fits a 1500-byte MTU (ffmpeg's and libsrt's live default)."""
_READ_BYTES = 64 * 1024
_CHECK_SECONDS = 0.1
"""How often the thread reads libsrt's statistics to judge the link while packets are in flight (and every
`stats_interval` keeps them); with nothing in flight, every `stats_interval` only."""
_CHECK_SLACK_SECONDS = 0.1
"""While ffmpeg writes (15-30 times a second), a check once due is made at the thread's next read of the pipe: the
thread wakes for it on its own only this much later, when no read has come since the last check, and from then
on on time. A wake-up of its own for every check was a third of the thread's (~8 of ~24 a second at one
4.5 Mbit/s destination)."""
_PLAY_MARGIN_MS = 20
"""At the end, beyond the destination's latency and half an RTT, before the close (its clock may lag ours)."""

# URI option -> (socket option, divisor from the URI's unit to libsrt's). Times: microseconds in the URI
# (ffmpeg's unit), milliseconds in libsrt; `connect_timeout` is already in ms in both.
_INT_OPTIONS: dict[str, tuple[SockOpt, int]] = {
    "latency": (SockOpt.LATENCY, 1000),
    "rcvlatency": (SockOpt.RCVLATENCY, 1000),
    "peerlatency": (SockOpt.PEERLATENCY, 1000),
    "snddropdelay": (SockOpt.SNDDROPDELAY, 1000),
    "sndbuf": (SockOpt.SNDBUF, 1),
    "rcvbuf": (SockOpt.RCVBUF, 1),
    "send_buffer_size": (SockOpt.UDP_SNDBUF, 1),
    "recv_buffer_size": (SockOpt.UDP_RCVBUF, 1),
    "oheadbw": (SockOpt.OHEADBW, 1),
    "lossmaxttl": (SockOpt.LOSSMAXTTL, 1),
    "tlpktdrop": (SockOpt.TLPKTDROP, 1),
    "nakreport": (SockOpt.NAKREPORT, 1),
    "enforced_encryption": (SockOpt.ENFORCEDENCRYPTION, 1),
    "messageapi": (SockOpt.MESSAGEAPI, 1),
    "tsbpd": (SockOpt.TSBPDMODE, 1),
    "pbkeylen": (SockOpt.PBKEYLEN, 1),
    "minversion": (SockOpt.MINVERSION, 1),
    "ipttl": (SockOpt.IPTTL, 1),
    "iptos": (SockOpt.IPTOS, 1),
    "kmrefreshrate": (SockOpt.KMREFRESHRATE, 1),
    "kmpreannounce": (SockOpt.KMPREANNOUNCE, 1),
}
_I64_OPTIONS = {"maxbw": SockOpt.MAXBW, "inputbw": SockOpt.INPUTBW}
_TEXT_OPTIONS = {"streamid": SockOpt.STREAMID, "passphrase": SockOpt.PASSPHRASE, "smoother": SockOpt.CONGESTION}
_TEXT_OPTIONS["congestion"] = SockOpt.CONGESTION
_IGNORED = frozenset({"mode", "transtype", "listen_timeout"})
"""Checked by relay/destinations.py (caller, live) or meaningless for a caller."""
_REJ_TIMEOUT = 16
"""libsrt's SRT_REJ_TIMEOUT: nobody answered the handshake (an outage, not a refusal)."""
_REFUSALS = frozenset({10, 11, 1401, 1403, 1404})
"""Rejections that mean "not you" (libsrt's BADSECRET and UNSECURE; a listener's 401, 403, 404): retried
only slowly, as an RTMP server refusing the key is (relay/supervisor/exits.py)."""


@dataclass(frozen=True, slots=True)
class CallerConfig:
    """Where one SRT caller connects and the socket options it sets (no secret is ever logged from here)."""

    host: str
    """A name or a literal address (the destination policy's checked address when there is a policy)."""
    port: int
    int_options: tuple[tuple[SockOpt, int], ...] = ()
    i64_options: tuple[tuple[SockOpt, int], ...] = ()
    text_options: tuple[tuple[SockOpt, str], ...] = ()
    payload_bytes: int = DEFAULT_PAYLOAD_BYTES
    """Largest message: whole TS packets, at most libsrt's live payload (1456)."""
    peer_idle_timeout_ms: int = 1000
    """No acknowledgement from the destination for this long while packets wait for one: the link is broken
    (`_Watchdog`; libsrt's own SRTO_PEERIDLETIMEO, set to it too, cannot act before ~5 s)."""
    send_timeout_ms: int = 10_000
    """A blocked send (destination reading nothing) fails after this long; the URI's `timeout`."""
    connect_timeout_ms: int = 3000
    """How long the connection may take (the URI's `connect_timeout`; libsrt's default)."""
    linger_seconds: int = 2
    """At the end, how long unacknowledged packets may still be waited for; the URI's `linger`."""
    stats_interval_seconds: float = 1.0

    @classmethod
    def from_destination(
        cls,
        destination: Destination,
        *,
        host: str | None = None,
        peer_idle_timeout_ms: int = 1000,
        linger_seconds: int = 2,
        send_timeout_ms: int = 10_000,
        connect_timeout_ms: int = 3000,
    ) -> CallerConfig:
        """The config of `destination` (an srt:// URI the API accepted); `host` overrides its host (the
        destination policy's checked address). The URI's `linger` and `timeout` override the defaults."""
        ints: list[tuple[SockOpt, int]] = []
        i64s: list[tuple[SockOpt, int]] = []
        texts: list[tuple[SockOpt, str]] = []
        payload = DEFAULT_PAYLOAD_BYTES
        for name, value, raw in srt_options(destination):
            if name in _INT_OPTIONS:
                opt, divisor = _INT_OPTIONS[name]
                number = int(raw)
                ints.append((opt, number if divisor == 1 or number < 0 else number // divisor))
            elif name in _I64_OPTIONS:
                i64s.append((_I64_OPTIONS[name], int(raw)))
            elif name in _TEXT_OPTIONS:
                texts.append((_TEXT_OPTIONS[name], value))
            elif name in ("payload_size", "pkt_size"):
                payload = int(raw)
            elif name == "connect_timeout":
                connect_timeout_ms = int(raw)
            elif name == "linger":
                linger_seconds = int(raw)
            elif name == "timeout":
                send_timeout_ms = max(1, int(raw) // 1000)
        payload = max(TS_PACKET_BYTES, min(payload, SRT_LIVE_MAX_PAYLOAD_BYTES))
        return cls(
            host=host or destination.host,
            port=destination.port,
            int_options=tuple(ints),
            i64_options=tuple(i64s),
            text_options=tuple(texts),
            payload_bytes=payload,
            peer_idle_timeout_ms=peer_idle_timeout_ms,
            send_timeout_ms=send_timeout_ms,
            connect_timeout_ms=connect_timeout_ms,
            linger_seconds=linger_seconds,
        )

    @property
    def chunk_bytes(self) -> int:
        """The message size in whole TS packets (a `payload_size` of 1400 sends 1316)."""
        return max(TS_PACKET_BYTES, self.payload_bytes - self.payload_bytes % TS_PACKET_BYTES)


@dataclass(frozen=True, slots=True)
class SendStats:
    """libsrt's figures for one SRT destination's link, sampled about once a second."""

    rtt_ms: float
    send_rate_kbps: float
    """Payload sent (retransmissions excluded) per second over the last sample."""
    bandwidth_mbps: float
    """libsrt's estimate of the link's capacity."""
    send_buffer_ms: int
    """Media sent but not yet acknowledged, in milliseconds: grows when the destination falls behind."""
    latency_ms: int
    """The latency negotiated with the destination (its TSBPD delay)."""
    packets_sent: int
    """Data packets sent, retransmissions excluded."""
    packets_lost: int
    """Packets the destination reported missing (most are then retransmitted)."""
    packets_retransmitted: int
    packets_dropped: int
    """Packets given up on (too late to play): holes the destination will show."""
    bytes_sent: int
    encrypted: bool
    uptime_ms: int


@dataclass(frozen=True, slots=True)
class CallerEnd:
    """How one caller ended."""

    error: str | None
    """None: the pipe ended and the tail was delivered (or the caller was aborted). Never holds a secret."""
    refused: bool = False
    """The destination rejected the connection (passphrase, stream id): as a refused RTMP key."""
    connected: bool = False
    """It had connected before it ended."""


class SrtCaller:
    """Owns one SRT caller socket, the read end of the pipe it sends from, and the thread that does both."""

    def __init__(
        self,
        lib: LibSrt,
        config: CallerConfig,
        read_fd: int,
        *,
        on_connected: Callable[[], None],
        on_end: Callable[[CallerEnd], None],
        name: str = "srt-caller",
    ) -> None:
        self._lib = lib
        self._config = config
        self._fd = read_fd
        self._on_connected = on_connected
        self._on_end = on_end
        self._name = name
        self._sock: int | None = None
        self._abort = threading.Event()
        self._wake: int | None = None
        """An eventfd beside the pipe in the send loop's `poll`, made by `start()`, closed by the thread:
        `abort()` writes it, so the loop ends at once."""
        self._wake_lock = threading.Lock()
        """Held to write or close `_wake`: a late `abort()` must never write to a closed (reused) descriptor."""
        self._thread: threading.Thread | None = None
        self.stats: SendStats | None = None
        """The latest sample (replaced whole, so any thread may read it)."""
        self._encrypted = False
        self._last_bytes = 0
        self._last_sample = 0.0

    def start(self) -> None:
        """Start the thread; it owns the pipe's read end from here on and closes it."""
        with self._wake_lock:
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def abort(self) -> None:
        """End now (any thread): no tail wait; a blocked send or connect is cut by closing the socket."""
        self._abort.set()
        with self._wake_lock:
            if self._wake is not None:
                os.eventfd_write(self._wake, 1)
        sock = self._sock
        if sock is not None:
            self._lib.close(sock)

    # --- the thread -----------------------------------------------------------------------------

    def _run(self) -> None:
        _name_os_thread(self._name)
        end = CallerEnd(error="srt: caller ended unexpectedly")
        try:
            self._lib.startup()
            end = self._connect_and_send()
        except Exception:
            log.exception("%s: SRT caller failed", self._name)
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            with self._wake_lock:
                wake, self._wake = self._wake, None
                if wake is not None:
                    os.close(wake)
            sock, self._sock = self._sock, None
            if sock is not None:
                self._lib.close(sock)
            self._lib.cleanup()
            with contextlib.suppress(Exception):
                self._on_end(end)

    def _connect_and_send(self) -> CallerEnd:
        started = time.monotonic()
        try:
            self._connect()
        except SrtError as exc:
            log.debug("%s: SRT connect failed after %.2fs: %s", self._name, time.monotonic() - started, exc)
            if self._abort.is_set():
                return CallerEnd(error=None)
            return self._connect_failure(exc)
        except OSError as exc:  # the host did not resolve
            return CallerEnd(error=f"srt: cannot reach the destination: {exc.strerror or exc}")
        log.debug("%s: SRT connected in %.2fs", self._name, time.monotonic() - started)
        self._on_connected()
        self._sample(time.monotonic())
        return self._send_loop()

    def _connect(self) -> None:
        """Connect within `connect_timeout_ms`; `SrtError` if it fails (rejected, timed out, aborted).

        Non-blocking: libsrt's blocking connect resends its handshake only once a second (its wait for a
        response wakes each second), so a destination that comes back would wait up to a second for us;
        its asynchronous connect resends every 250 ms. Sends are blocking (SRTO_SNDSYN) once connected.
        """
        cfg, lib = self._config, self._lib
        address = _resolve(cfg.host, cfg.port)
        sock = self._sock = self._new_socket()
        lib.set_int(sock, SockOpt.RCVSYN, 0)
        lib.set_int(sock, SockOpt.CONNTIMEO, cfg.connect_timeout_ms)
        eid = lib.epoll_create()
        try:
            lib.epoll_add(eid, sock, EpollFlag.OUT | EpollFlag.ERR)
            lib.connect(sock, address, cfg.port)
            events = (SrtEpollEvent * 1)()
            deadline = time.monotonic() + cfg.connect_timeout_ms / 1000 + 1.0  # libsrt's own timeout first
            while not self._abort.is_set() and time.monotonic() < deadline:
                lib.epoll_wait(eid, events, 100)
                state = lib.state(sock)
                if state == SockStatus.CONNECTED:
                    break
                if state not in (SockStatus.CONNECTING, SockStatus.OPENED, SockStatus.INIT):
                    raise SrtError("srt_connect", SrtErrno.ECONNREJ, "connection failed")
            else:
                raise SrtError("srt_connect", SrtErrno.ENOSERVER, "connection timed out")
        finally:
            lib.epoll_release(eid)
        with contextlib.suppress(SrtError):
            self._encrypted = lib.get_int(sock, SockOpt.SNDKMSTATE) != 0

    def _new_socket(self) -> int:
        lib, cfg = self._lib, self._config
        sock = lib.create_socket()
        try:
            lib.set_int(sock, SockOpt.TRANSTYPE, TransType.LIVE)  # first: it resets the options below
            lib.set_int(sock, SockOpt.SENDER, 1)
            lib.set_int(sock, SockOpt.SNDSYN, 1)
            lib.set_int(sock, SockOpt.PAYLOADSIZE, cfg.payload_bytes)
            lib.set_int(sock, SockOpt.PEERIDLETIMEO, cfg.peer_idle_timeout_ms)
            lib.set_int(sock, SockOpt.SNDTIMEO, cfg.send_timeout_ms)
            lib.set_linger(sock, 0)  # the tail is waited for in `_finish`; a close never blocks
            for opt, value in cfg.int_options:
                lib.set_int(sock, opt, value)
            for opt, value in cfg.i64_options:
                lib.set_i64(sock, opt, value)
            for opt, text in cfg.text_options:
                lib.set_str(sock, opt, text)
        except BaseException:
            lib.close(sock)
            raise
        return sock

    def _connect_failure(self, exc: SrtError) -> CallerEnd:
        reason = self._lib.reject_reason(self._sock) if self._sock is not None else 0
        if reason == _REJ_TIMEOUT or exc.code == SrtErrno.ENOSERVER:
            return CallerEnd(error="srt: cannot connect: connection timed out (nobody answered)")
        if reason:
            text = self._lib.reject_reason_text(reason)
            return CallerEnd(error=f"srt: connection rejected: {text} ({reason})", refused=reason in _REFUSALS)
        return CallerEnd(error=f"srt: cannot connect: {exc.srt_message}")

    def _send_loop(self) -> CallerEnd:
        assert self._sock is not None
        cfg, lib, sock = self._config, self._lib, self._sock
        chunk = cfg.chunk_bytes
        pending = bytearray()
        assert self._wake is not None
        poller = select.poll()  # the pipe, and the eventfd `abort()` writes
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake, select.POLLIN)
        pipe = select.poll()  # the pipe alone: has ffmpeg written more already?
        pipe.register(self._fd, select.POLLIN)
        watch = _Watchdog(cfg.peer_idle_timeout_ms / 1000)
        next_check = time.monotonic() + _CHECK_SECONDS
        next_sample = time.monotonic() + cfg.stats_interval_seconds
        read_since_check = False
        try:
            while not self._abort.is_set():
                now = time.monotonic()
                if now >= next_check:
                    raw = lib.raw_stats(sock)
                    # What was just sent may not be counted in the send buffer yet (read as 0 right after a
                    # send): a read since the last check means packets in flight.
                    in_flight = raw.pktSndBuf > 0 or read_since_check
                    read_since_check = False
                    if lib.state(sock) != SockStatus.CONNECTED or watch.dead(raw, now, in_flight):
                        return CallerEnd(error=self._broken_text(), connected=True)
                    if now >= next_sample:
                        next_sample = now + cfg.stats_interval_seconds
                        self._sample(now, raw)
                    # Nothing in flight: nothing to judge until the next send (or the next sample).
                    next_check = now + _CHECK_SECONDS if in_flight else next_sample
                slack = _CHECK_SLACK_SECONDS if read_since_check else 0.0
                ready = poller.poll(max(0, int((next_check + slack - now) * 1000) + 1))
                if not any(fd == self._fd for fd, _ in ready):
                    continue
                next_check = min(next_check, now + _CHECK_SECONDS)  # packets are about to be in flight
                read_since_check = True
                data = os.read(self._fd, _READ_BYTES)
                if not data:
                    if pending:
                        lib.send(sock, bytes(pending))
                    return self._finish()
                pending += data
                sent = 0
                while len(pending) - sent >= chunk:
                    lib.send(sock, bytes(pending[sent : sent + chunk]))
                    sent += chunk
                whole = len(pending) - sent - (len(pending) - sent) % TS_PACKET_BYTES
                if whole and not pipe.poll(0):  # ffmpeg flushed: nothing should wait for its next write
                    lib.send(sock, bytes(pending[sent : sent + whole]))
                    sent += whole
                del pending[:sent]
        except SrtError as exc:
            if self._abort.is_set():
                return CallerEnd(error=None, connected=True)
            if exc.code in (SrtErrno.EASYNCSND, SrtErrno.ETIMEOUT):
                return CallerEnd(error="srt: send timed out: the destination takes nothing", connected=True)
            return CallerEnd(error=self._broken_text(), connected=True)
        return CallerEnd(error=None, connected=True)

    def _finish(self) -> CallerEnd:
        """The pipe ended: wait until every packet sent was acknowledged (or dropped) and the destination
        has played it out, then close.

        A live-mode receiver hands a packet to its application only at its play time (sent + latency),
        and a receiver whose peer closed stops reading (ffmpeg's does): closing at the last ack would
        lose the last `latency` of media. So the close waits until the last packet's play time too.
        """
        assert self._sock is not None
        ended_at = time.monotonic()
        deadline = ended_at + self._config.linger_seconds
        played_at = ended_at
        while not self._abort.is_set() and time.monotonic() < deadline:
            try:
                raw = self._lib.raw_stats(self._sock)
            except SrtError:
                break
            if self._lib.state(self._sock) != SockStatus.CONNECTED:
                break
            if raw.pktSndBuf <= 0:
                played_at = ended_at + (raw.msSndTsbPdDelay + raw.msRTT / 2 + _PLAY_MARGIN_MS) / 1000
                if time.monotonic() >= played_at:
                    break
            self._abort.wait(0.005)
        self._sample(time.monotonic())
        return CallerEnd(error=None, connected=True)

    def _broken_text(self) -> str:
        return f"srt: connection lost (nothing from the destination for {self._config.peer_idle_timeout_ms} ms)"

    def _sample(self, now: float, raw: TraceBStats | None = None) -> None:
        sock = self._sock
        if sock is None:
            return
        if raw is None:
            try:
                raw = self._lib.raw_stats(sock)
            except SrtError:
                return
        elapsed = now - self._last_sample if self._last_sample else 0.0
        sent = int(raw.byteSentUniqueTotal)
        rate = (sent - self._last_bytes) * 8 / 1000 / elapsed if elapsed > 0 else 0.0
        self._last_bytes, self._last_sample = sent, now
        self.stats = _send_stats(raw, rate, self._encrypted)


_PR_SET_NAME = 15


def _name_os_thread(name: str) -> None:
    """Name the calling thread in the kernel too (its first 15 bytes), as libsrt names its own (`SRT:SndQ:w2`):
    what `top -H`, `ps -L` and /proc/<pid>/task/<tid>/comm show. Python 3.11 names its threads for itself only.
    A label for tools: a C library without `prctl` leaves the thread unnamed, and the caller runs as ever."""
    with contextlib.suppress(AttributeError):
        ctypes.CDLL(None).prctl(_PR_SET_NAME, name.encode()[:15], 0, 0, 0)


@functools.cache
def _loaded() -> LibSrt | None:
    try:
        return LibSrt.load()
    except SrtUnavailable as exc:
        log.warning("SRT destinations go through ffmpeg's own SRT output: %s", exc)
        return None


def caller_libsrt_available() -> bool:
    """libsrt can be loaded for callers (said once in the log when it cannot)."""
    return _loaded() is not None


def caller_libsrt() -> LibSrt:
    """A handle on libsrt for one caller (its own startup/cleanup pairing); SrtUnavailable without it."""
    lib = _loaded()
    if lib is None:
        raise SrtUnavailable("libsrt not available")
    return lib.another()


class _Watchdog:
    """Tells a dead destination from `srt_bistats`, since libsrt cannot do it in time.

    libsrt breaks a silent connection only after 16 expiry periods of at least 300 ms each (core.cpp,
    checkExpTimer): about 5.1 s on any short link, whatever SRTO_PEERIDLETIMEO says (measured). A live
    receiver acknowledges every 10 ms while data arrives, so acknowledgements (or loss reports) that stop
    while packets wait for one mean the destination is gone. With nothing in flight (the publisher is
    away) nothing is judged: an idle peer only sends a keepalive a second.
    """

    def __init__(self, timeout_seconds: float) -> None:
        self._timeout = timeout_seconds
        self._responses = -1
        self._silent_since: float | None = None

    def dead(self, raw: TraceBStats, now: float, in_flight: bool) -> bool:
        """Judged at `now` from `raw`; `in_flight`: packets wait for an acknowledgement (what the send buffer
        holds, or a send since the last look, which libsrt may not count yet)."""
        responses = int(raw.pktRecvACKTotal) + int(raw.pktRecvNAKTotal)
        if responses != self._responses or not in_flight:
            self._responses, self._silent_since = responses, None
            return False
        if self._silent_since is None:
            self._silent_since = now
        return now - self._silent_since >= self._timeout


def _send_stats(raw: TraceBStats, rate_kbps: float, encrypted: bool) -> SendStats:
    return SendStats(
        rtt_ms=round(float(raw.msRTT), 3),
        send_rate_kbps=round(rate_kbps, 1),
        bandwidth_mbps=round(float(raw.mbpsBandwidth), 3),
        send_buffer_ms=int(raw.msSndBuf),
        latency_ms=int(raw.msSndTsbPdDelay),
        packets_sent=int(raw.pktSentUniqueTotal),
        packets_lost=int(raw.pktSndLossTotal),
        packets_retransmitted=int(raw.pktRetransTotal),
        packets_dropped=int(raw.pktSndDropTotal),
        bytes_sent=int(raw.byteSentUniqueTotal),
        encrypted=encrypted,
        uptime_ms=int(raw.msTimeStamp),
    )


def _resolve(host: str, port: int) -> str:
    """`host` when it is a literal address, else its first UDP address (no policy: as ffmpeg would)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):
            socket.inet_pton(family, host)
            return host
    info = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    return str(info[0][4][0])
