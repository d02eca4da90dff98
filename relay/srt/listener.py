"""An SRT listener on one UDP port: admission in libsrt's handshake, reception in one worker thread.

Threads and why:

- libsrt's receiver thread ("SRT:RcvQ") runs the listener callback for every handshake, before the
  connection exists: `relay.srt.handshake` asks `admit` there and sets the stream's passphrase and
  latency on the new socket.
- One worker thread (ours) waits on a libsrt epoll for the listener, all connections and an eventfd,
  accepts, reads messages and hands them to the `ListenerHandler`. It sleeps until one of them is
  ready: `close_connection` and `stop()` write the eventfd, so stopping is prompt and bounded without
  a timeout. Only a connection draining after a break (`_start_drain`) makes it look again every
  `drain_poll_ms`, up to the drain's deadline. libsrt's epoll wait re-checks every 10 ms inside the
  library, so with no connection and no admitted handshake the worker waits on the eventfd alone
  (`poll`), and the listen callback writes it when it admits a handshake. (An idle relay's worker
  woke 20 times a second before, plus libsrt's 100: ~0.24 CPU s/min.)
- libsrt's own threads (a receiver and a sender per UDP port) poll even with nothing to do: its receiver
  reads the socket every ~10 ms, most of an idle relay's CPU. So after `park_after_seconds` with no
  connection and no admitted handshake the worker closes libsrt's listening socket, and libsrt's threads
  go with its multiplexer (*parked*). The UDP sockets are ours (`srt_bind_acquire`), in one SO_REUSEPORT
  group: parking binds a socket of ours to the port first, then connects libsrt's to the listener's own
  address, which leaves it nothing to receive while libsrt takes its time (~5 s) to let it go. Parked, the
  worker waits on the eventfd and our socket; the first datagram (a caller's handshake) gives that very
  socket to a new libsrt listener. That datagram gets no answer (libsrt's receiver thread reads it as soon
  as the socket is bound, before `srt_listen` has made it a listener): the caller's next handshake, which
  libsrt callers send 250 ms later, connects. A caller to a parked listener connects ~0.25 s later than to
  a listening one (a relay process, ffmpeg publishing: +0.33 s against +0.05-0.06 s from the publisher's
  start to "connected", two runs each); the port never refuses it.

The listener never calls back into asyncio; `relay.ingest.srt_server` adapts the handler calls to the
event loop. What the two threads share (admitted handshakes, the connection count) is in `Handshakes`,
under a lock never held while calling libsrt.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import queue
import select
import socket
import threading
import time
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from relay.doors import DoorRefusal
from relay.srt.handshake import Admit, Handshakes, Peer
from relay.srt.libsrt import (
    SRT_LIVE_MAX_PAYLOAD_BYTES,
    EpollFlag,
    EpollReady,
    LibSrt,
    LinkStats,
    SockOpt,
    SrtErrno,
    SrtError,
    TransType,
    format_peer,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerConfig:
    """libsrt-level settings of one listener (the ingest server derives them from its settings)."""

    host: str = "0.0.0.0"
    port: int = 5001
    latency_ms: int = 120
    max_connections: int = 64
    connect_timeout_ms: int = 3000
    peer_idle_timeout_ms: int = 5000
    payload_size_bytes: int = 1316
    drain_poll_ms: int = 10
    """While a broken connection drains (its socket out of the epoll), how often the worker reads it."""
    max_messages_per_wakeup: int = 256
    """Messages read from one connection before the worker serves the others (fairness)."""
    join_timeout_seconds: float = 5.0
    park_after_seconds: float | None = 10.0
    """With no connection and no admitted handshake for this long, libsrt's listener (and its polling
    threads) is closed until the next datagram; None: never."""


@dataclass(frozen=True, slots=True)
class Connected:
    """A connection that passed the handshake and was accepted."""

    sock: int
    peer: Peer
    streamid: str
    latency_ms: int
    encrypted: bool
    context: Any


class CloseCause(str, Enum):
    """Why a connection ended, as far as libsrt lets us tell."""

    BROKEN = "broken"
    """Peer closed it or the link timed out (libsrt reports both as 'Connection was broken')."""
    REQUESTED = "requested"
    """`close_connection` was called."""
    LISTENER_CLOSED = "listener_closed"


class ListenerHandler(Protocol):
    """Receives a listener's events, on the worker thread: must be quick and must not raise."""

    def on_connected(self, conn: Connected) -> None: ...

    def on_data(self, sock: int, messages: list[bytes]) -> None: ...

    def on_closed(self, sock: int, cause: CloseCause, silence_seconds: float) -> None:
        """`silence_seconds`: how long nothing had arrived when the connection broke or was closed."""
        ...

    def on_handshake_failed(self, context: Any, peer: Peer) -> None:
        """A handshake `admit` said yes to never connected (`context`: its `Accept.context`): libsrt
        refused it afterwards, almost always over the passphrase. On the worker or libsrt's thread."""
        ...


@dataclass(slots=True)
class _Conn:
    info: Connected
    last_data: float
    drain_deadline: float | None = None
    """Set when libsrt reported the connection broken: see `_start_drain`."""
    silence_seconds: float | None = None
    """Time between the last message and the break (drained messages do not count)."""


class SrtListener:
    """Owns one listening SRT socket, its handshake admission (`Handshakes`), its epoll and its worker thread."""

    def __init__(self, lib: LibSrt, config: ListenerConfig, admit: Admit, handler: ListenerHandler) -> None:
        self._lib = lib
        self._config = config
        self._handler = handler
        self._handshakes = Handshakes(
            lib,
            admit,
            max_connections=config.max_connections,
            latency_ms=config.latency_ms,
            peer_idle_timeout_ms=config.peer_idle_timeout_ms,
            connect_timeout_ms=config.connect_timeout_ms,
            on_admitted=self._wake_worker,
            on_failed=handler.on_handshake_failed,
        )
        self._sock: int | None = None
        self._eid: int | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._requests: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wake: int | None = None
        """An eventfd in the worker's epoll: written after a request is queued, when stop() is asked and when
        the listen callback admits a handshake."""
        self._wake_lock = threading.Lock()
        """Held to write or close `_wake`: a late writer must never write to a closed (reused) descriptor."""
        self._conns: dict[int, _Conn] = {}  # worker thread only
        self._draining: list[_Conn] = []  # worker thread only: the connections with a drain deadline
        self._handshakes_due = 0.0
        """Worker thread only: when, while connections are served, to ask `Handshakes` again for the admitted
        handshakes gone stale (inf: none is waiting; 0: ask at once)."""
        self._bound: Peer = None
        self._srt_udp = -1
        """The UDP socket libsrt's listener owns (closed by libsrt), while it listens; -1 while parked."""
        self._udp: socket.socket | None = None
        """Our UDP socket on the port while parked (the next listener gets it); None while libsrt listens."""
        self._can_park = True
        self._idle_since = 0.0
        """Worker thread only: when the listener last had a connection or an admitted handshake."""

    @property
    def connections(self) -> int:
        """Connections accepted and not closed yet (any thread)."""
        return self._handshakes.connections

    def refusals(self) -> dict[DoorRefusal, int]:
        """Handshakes refused before the stream's admission said yes or no (any thread)."""
        return self._handshakes.refusals()

    @property
    def address(self) -> Peer:
        """The bound (host, port); the port is the real one when 0 was asked for."""
        return self._bound

    @property
    def parked(self) -> bool:
        """True while libsrt's listener is closed for idleness (the port stays ours)."""
        return self._udp is not None and self._sock is None

    def start(self) -> None:
        """Bind, listen and start the worker; raises `SrtError` (e.g. port in use) and cleans up."""
        lib = self._lib
        udp = _bind_udp(self._config.host, self._config.port)
        self._bound = udp.getsockname()[:2]
        sock = self._open_listening(udp)  # libsrt owns `udp` from here (closes it even on failure)
        try:
            eid = lib.epoll_create()
        except BaseException:
            lib.close(sock)
            raise
        wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            lib.epoll_add(eid, sock, EpollFlag.IN | EpollFlag.ERR)
            lib.epoll_add_system(eid, wake)
        except BaseException:
            lib.epoll_release(eid)
            os.close(wake)
            lib.close(sock)
            raise
        self._sock, self._eid = sock, eid
        self._idle_since = time.monotonic()
        with self._wake_lock:
            self._wake = wake
        self._thread = threading.Thread(target=self._run, name=f"srt-listener:{self._bound}", daemon=True)
        self._thread.start()

    def _open_listening(self, udp: socket.socket) -> int:
        """A libsrt listening socket on `udp`, which libsrt owns from then on; `SrtError` if libsrt refuses."""
        lib, cfg = self._lib, self._config
        sock = lib.create_socket()
        try:
            lib.set_int(sock, SockOpt.TRANSTYPE, TransType.LIVE)
            lib.set_int(sock, SockOpt.RCVSYN, 0)
            lib.set_int(sock, SockOpt.SNDSYN, 0)
            lib.set_int(sock, SockOpt.LATENCY, cfg.latency_ms)
            lib.set_int(sock, SockOpt.CONNTIMEO, cfg.connect_timeout_ms)
            lib.set_int(sock, SockOpt.PEERIDLETIMEO, cfg.peer_idle_timeout_ms)
            lib.set_int(sock, SockOpt.PAYLOADSIZE, cfg.payload_size_bytes)
            # Refuse any passphrase mismatch in the handshake, including an encrypted caller
            # reaching a stream without passphrase (libsrt's default, stated here on purpose).
            lib.set_int(sock, SockOpt.ENFORCEDENCRYPTION, 1)
            try:
                lib.bind_acquire(sock, udp.fileno())
            except BaseException:
                udp.close()  # libsrt owns it only once bound
                raise
            self._srt_udp = udp.detach()
            lib.set_listen_callback(sock, self._handshakes.callback)
            # libsrt refuses a handshake with its own SRT_REJ_BACKLOG (5), before our callback runs, once as many
            # connections as the backlog wait for the worker's accept. Our callback already bounds those (handshakes
            # admitted and connections together, `max_connections`): one more keeps libsrt's check from deciding,
            # so a full listener answers 1402, counted and logged, however late the worker accepts.
            lib.listen(sock, max(1, cfg.max_connections) + 1)
        except BaseException:
            lib.close(sock)
            raise
        return sock

    def stop(self) -> None:
        """Stop the worker, close every connection and the listener (bounded by join_timeout)."""
        self._stop.set()
        self._wake_worker()
        thread = self._thread
        if thread is not None:
            thread.join(self._config.join_timeout_seconds)
            if thread.is_alive():
                log.error("SRT listener worker did not stop within %.1fs", self._config.join_timeout_seconds)
        elif self._sock is not None:
            self._close_everything()

    def close_connection(self, sock: int) -> None:
        """Ask the worker to close one connection (any thread, non-blocking, idempotent)."""
        self._requests.put(sock)
        self._wake_worker()

    def _wake_worker(self) -> None:
        with self._wake_lock:
            if self._wake is not None:
                os.eventfd_write(self._wake, 1)

    def link_stats(self, sock: int) -> LinkStats | None:
        """libsrt's statistics of a live connection; None once it is broken or closed."""
        try:
            return self._lib.bistats(sock)
        except SrtError:
            return None

    # --- the worker thread ----------------------------------------------------------------------

    def _run(self) -> None:
        assert self._eid is not None and self._sock is not None
        assert self._wake is not None
        ready = EpollReady(64)
        buf = ctypes.create_string_buffer(max(SRT_LIVE_MAX_PAYLOAD_BYTES, self._config.payload_size_bytes) + 64)
        woken = select.poll()
        woken.register(self._wake, select.POLLIN)
        try:
            while not self._stop.is_set():
                # Admitted handshakes that failed after the callback are forgotten (and reported) when they
                # go stale, whether connections are served or not: the wait ends by then at the latest.
                now = time.monotonic()
                if now >= self._handshakes_due:
                    handshakes_wait = self._handshakes.waiting_seconds()
                    self._handshakes_due = math.inf if handshakes_wait is None else now + handshakes_wait
                if not self._conns and self._handshakes_due == math.inf:
                    # Nothing connected, no handshake admitted: only our eventfd can bring work (the listen
                    # callback writes it too), or, parked, a datagram. libsrt's epoll wait re-checks 100
                    # times a second.
                    self._wait_idle(woken)
                    continue
                self._idle_since = now
                timeout_ms = self._drain_timeout_ms() if self._draining else -1
                if self._handshakes_due != math.inf:
                    until_ms = math.ceil((self._handshakes_due - now) * 1000) + 1
                    timeout_ms = until_ms if timeout_ms < 0 else min(timeout_ms, until_ms)
                try:
                    got = self._lib.epoll_wait_with_system(self._eid, ready, timeout_ms)
                except SrtError as exc:
                    log.error("SRT epoll wait failed: %s", exc)
                    self._stop.wait(0.05)
                    continue
                if got:
                    if ready.system_count.value:
                        self._on_wake()
                    broken = ready.write if ready.write_count.value else ()
                    for sock in ready.read:
                        if sock == self._sock:
                            self._accept_one()
                        elif sock in self._conns:
                            self._read(self._conns[sock], buf, broken=sock in broken)
                if self._draining:
                    self._run_drains(buf)
        except BaseException:
            log.exception("SRT listener worker crashed")
        finally:
            self._close_everything()

    def _wait_idle(self, woken: select.poll) -> None:
        """Nothing to serve: sleep until the eventfd (or, parked, a datagram) brings work; park once idle
        for `park_after_seconds`."""
        after = self._config.park_after_seconds
        if self._sock is not None:
            if after is None or not self._can_park:
                woken.poll()
                self._on_wake()
                return
            wait = after - (time.monotonic() - self._idle_since)
            if wait > 0:
                if woken.poll(math.ceil(wait * 1000)):
                    self._on_wake()
                return
            self._park()
            return
        assert self._udp is not None and self._wake is not None
        parked = select.poll()
        parked.register(self._wake, select.POLLIN)
        parked.register(self._udp.fileno(), select.POLLIN)
        for fd, _ in parked.poll():
            if fd == self._wake:
                self._on_wake()
            else:
                self._unpark()

    def _park(self) -> None:
        """Close libsrt's listening socket, its threads going with it; a socket of ours keeps the port."""
        assert self._sock is not None and self._eid is not None and self._bound is not None
        try:
            ours = _bind_udp(*self._bound, join=True)
            try:
                # libsrt's socket, until libsrt closes it (~5 s), must take nothing more: connected to the
                # listener's own address, it receives from nobody, and the port's datagrams come to ours.
                with socket.socket(fileno=os.dup(self._srt_udp)) as theirs:
                    theirs.connect(_own_address(self._bound))
            except BaseException:
                ours.close()
                raise
        except OSError as exc:
            log.warning("SRT listener on %s stays up while idle: %s", format_peer(self._bound), exc)
            self._can_park = False
            return
        self._lib.epoll_remove(self._eid, self._sock)
        self._lib.close(self._sock)
        self._sock, self._srt_udp, self._udp = None, -1, ours
        log.debug("SRT listener on %s parked (idle)", format_peer(self._bound))

    def _unpark(self) -> None:
        """A datagram came while parked: our socket goes to a new libsrt listener, which reads it."""
        assert self._eid is not None and self._udp is not None and self._bound is not None
        udp, self._udp = self._udp, None
        try:
            sock = self._open_listening(udp)
        except SrtError as exc:
            log.error("SRT listener on %s could not listen again: %s", format_peer(self._bound), exc)
            try:
                self._udp = _bind_udp(*self._bound, join=True)  # the old one is closed (by us or by libsrt)
            except OSError as bind_exc:
                log.error("SRT ingest on %s stops: the port is lost (%s)", format_peer(self._bound), bind_exc)
                self._stop.set()
                return
            self._stop.wait(1.0)  # no spin: the next datagram tries again
            return
        try:
            self._lib.epoll_add(self._eid, sock, EpollFlag.IN | EpollFlag.ERR)
        except SrtError:
            self._lib.close(sock)
            raise
        self._sock = sock
        self._idle_since = time.monotonic()
        log.debug("SRT listener on %s listening again", format_peer(self._bound))

    def _drain_timeout_ms(self) -> int:
        """While connections drain: their next read, or the nearest drain deadline if sooner."""
        until_deadline = max(0.0, min(conn.drain_deadline or 0.0 for conn in self._draining) - time.monotonic())
        return min(self._config.drain_poll_ms, math.ceil(until_deadline * 1000))

    def _on_wake(self) -> None:
        """The eventfd was written: a request was queued (each one writes it after queueing), a handshake
        was admitted, or stop()."""
        self._clear_wake()
        self._handshakes_due = 0.0  # an admitted handshake may be new: when it goes stale is asked again
        self._run_requests()

    def _clear_wake(self) -> None:
        assert self._wake is not None
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self._wake)

    def _run_requests(self) -> None:
        while True:
            try:
                sock = self._requests.get_nowait()
            except queue.Empty:
                return
            if sock in self._conns:
                self._finish(sock, CloseCause.REQUESTED)

    def _accept_one(self) -> None:
        # One accept per readiness event: epoll is level-triggered, so a second pending connection
        # wakes us again, and an accept with nothing pending would make libsrt log an error.
        assert self._sock is not None and self._eid is not None
        try:
            got = self._lib.accept(self._sock)
        except SrtError as exc:
            log.warning("SRT accept failed: %s", exc)
            return
        if got is None:
            return
        sock, peer = got
        pending = self._handshakes.claim(sock)
        if pending is None:  # not admitted by our callback: cannot happen, but never serve it
            log.error("SRT connection from %s accepted without admission; closing", format_peer(peer))
            self._lib.close(sock)
            return
        try:
            self._lib.set_int(sock, SockOpt.RCVSYN, 0)
            latency_ms = self._lib.get_int(sock, SockOpt.RCVLATENCY)
            encrypted = self._lib.get_int(sock, SockOpt.KMSTATE) != 0
            self._lib.epoll_add(self._eid, sock, EpollFlag.IN | EpollFlag.ERR)
        except SrtError as exc:
            log.warning("SRT connection from %s lost while being set up: %s", format_peer(peer), exc)
            self._lib.close(sock)
            self._handshakes.release()
            return
        info = Connected(sock, peer, pending.streamid, latency_ms, encrypted, pending.accept.context)
        self._conns[sock] = _Conn(info, time.monotonic())
        try:
            self._handler.on_connected(info)
        except Exception:
            log.exception("SRT connect handler failed; closing the connection")
            self._finish(sock, CloseCause.REQUESTED)

    def _read(self, conn: _Conn, buf: ctypes.Array[ctypes.c_char], *, broken: bool) -> None:
        messages: list[bytes] = []
        lost = False
        for _ in range(self._config.max_messages_per_wakeup):
            try:
                n = self._lib.recv(conn.info.sock, buf)
            except SrtError:
                lost = True
                break
            if n is None:
                break
            if n > 0:
                messages.append(buf.raw[:n])
        if messages:
            conn.last_data = time.monotonic()
            self._deliver(conn.info.sock, messages)
        if lost or (broken and not messages):
            self._start_drain(conn)

    def _deliver(self, sock: int, messages: list[bytes]) -> None:
        try:
            self._handler.on_data(sock, messages)
        except Exception:
            log.exception("SRT data handler failed")

    def _start_drain(self, conn: _Conn) -> None:
        """The connection broke; keep reading what libsrt still holds before closing it.

        In live mode libsrt releases a received packet only at its play time (TSBPD: arrival +
        latency) and, once the peer has closed, reports "broken" as soon as nothing is ready *now*.
        The last `latency` worth of media is still in its buffer and becomes readable over the next
        `latency_ms`: a publisher's final GOP would be lost without this drain.
        """
        if conn.drain_deadline is not None:
            return
        assert self._eid is not None
        self._lib.epoll_remove(self._eid, conn.info.sock)  # a broken socket is always "ready": no spin
        now = time.monotonic()
        conn.silence_seconds = now - conn.last_data
        conn.drain_deadline = now + (conn.info.latency_ms + 250) / 1000
        self._draining.append(conn)

    def _run_drains(self, buf: ctypes.Array[ctypes.c_char]) -> None:
        now = time.monotonic()
        for conn in list(self._draining):
            assert conn.drain_deadline is not None
            messages: list[bytes] = []
            for _ in range(self._config.max_messages_per_wakeup):
                try:
                    n = self._lib.recv(conn.info.sock, buf)
                except SrtError:
                    break  # in the broken state this means "nothing ready yet"
                if not n:
                    break
                messages.append(buf.raw[:n])
            if messages:
                self._deliver(conn.info.sock, messages)
            if now >= conn.drain_deadline:
                self._finish(conn.info.sock, CloseCause.BROKEN)

    def _finish(self, sock: int, cause: CloseCause) -> None:
        conn = self._conns.pop(sock)
        if conn.drain_deadline is not None:
            self._draining = [c for c in self._draining if c is not conn]
        if self._eid is not None and conn.drain_deadline is None:
            self._lib.epoll_remove(self._eid, sock)
        self._lib.close(sock)
        self._handshakes.release()
        self._idle_since = time.monotonic()
        silence = conn.silence_seconds if conn.silence_seconds is not None else time.monotonic() - conn.last_data
        try:
            self._handler.on_closed(sock, cause, silence)
        except Exception:
            log.exception("SRT close handler failed")

    def _close_everything(self) -> None:
        for sock in list(self._conns):
            self._finish(sock, CloseCause.LISTENER_CLOSED)
        if self._sock is not None:
            self._lib.close(self._sock)
            self._sock = None
        if self._eid is not None:
            self._lib.epoll_release(self._eid)
            self._eid = None
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        with self._wake_lock:
            wake, self._wake = self._wake, None
            if wake is not None:
                os.close(wake)


def _bind_udp(host: str, port: int, *, join: bool = False) -> socket.socket:
    """A UDP socket on (`host`, `port`) in the port's SO_REUSEPORT group, for libsrt or for the worker.

    The first (`join` false) binds alone, so a port in use fails as libsrt's bind would (`SrtError`); only
    then does it open the group, for the listener's own later sockets (`join`). Blocking, as libsrt's own
    are: its receiver thread waits in recvmsg on the socket's 10 ms receive timeout, and on a non-blocking
    socket it spun, a whole core."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if join:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        udp.bind((host, port))
        if not join:
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    except OSError as exc:
        udp.close()
        if join:
            raise
        raise SrtError(
            "bind", SrtErrno.ECONNSETUP, f"cannot bind UDP {host} port {port}: {exc.strerror}", exc.errno or 0
        ) from exc
    return udp


def _own_address(bound: tuple[str, int]) -> tuple[str, int]:
    """Where a parked listener's old socket is connected: its own address (a wildcard as loopback)."""
    host, port = bound
    return ("127.0.0.1" if host == "0.0.0.0" else "::1" if host == "::" else host), port
