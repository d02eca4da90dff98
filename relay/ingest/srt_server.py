"""SRT ingest: one UDP port, publishers routed by streamid, each stream with its own passphrase.

The server owns the libsrt listener's lifecycle and the hand-off from its worker thread to the event
loop. Admission (in the handshake, then by the gate) is in `relay.ingest.srt_admission`; one
publisher's handle and loop-side state are in `relay.ingest.srt_session`.

Data path: the listener's worker thread reads SRT messages and posts them to the loop with
`call_soon_threadsafe`; the loop splits them into TS packets (`MpegTsReader`) and writes them to
the sink. What is in flight between the thread and the loop is bounded per connection
(`max_pending_bytes`); beyond it the data is dropped and counted, never queued without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import cast

from relay.doors import DoorCounts
from relay.ingest.gate import (
    EndReason,
    PublishGate,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    Transport,
    stream_label,
)
from relay.ingest.srt_admission import SrtAdmission, SrtAdmit, admit_handshake
from relay.ingest.srt_session import SrtPublisher, SrtSession, SrtWire
from relay.media.packets import ContainerFormat
from relay.ratelimit import TokenBuckets
from relay.srt.handshake import Peer
from relay.srt.libsrt import LibSrt, LinkStats, SrtUnavailable, format_peer, version_string
from relay.srt.listener import CloseCause, Connected, ListenerConfig, SrtListener
from relay.srt.streamid import parse_streamid

# SrtAdmission, SrtAdmit and SrtPublisher live in srt_admission and srt_session; the engine and the
# tests import them from here.
__all__ = [
    "LinkStats",
    "SrtAdmission",
    "SrtAdmit",
    "SrtPublisher",
    "SrtServer",
    "SrtSettings",
    "parse_streamid",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SrtSettings:
    """SRT ingest settings (units in the names)."""

    host: str = "0.0.0.0"
    """A literal IP address ("::" for IPv6)."""
    port: int = 5001
    latency_ms: int = 120
    max_connections: int = 64
    """Connections plus handshakes in progress; more are refused with 1402."""
    handshakes_per_second_per_address: float = 5.0
    """Handshakes an address (an IPv6 /64) may make per second, sustained; more are refused with 1402
    before the stream is looked up. An encoder makes one per connection attempt."""
    handshake_burst_per_address: int = 20
    """Handshakes an address may make at once before its rate applies (encoders behind one NAT)."""
    handshake_addresses_tracked: int = 4096
    """Addresses whose handshake rate is remembered (the least recently seen is forgotten first)."""
    handshake_timeout_seconds: float = 3.0
    """SRTO_CONNTIMEO, and the limit for the gate to answer after accept."""
    idle_timeout_seconds: float = 5.0
    """SRTO_PEERIDLETIMEO: a publisher silent this long (not even keepalives) is dropped.
    libsrt 1.5.1 never breaks a link before about 5 s of silence, whatever is set here.

    libsrt reports an encoder's clean close and a timed-out link alike ("broken"); the relay tells
    them apart by the media silence before the break: at least 80% of this timeout means the link
    was lost (EndReason.DROP), less means the encoder closed (UNPUBLISH). Some encoders go quiet
    for about a second before closing (ffmpeg 5.1 does), so keep this well above 1.5 s."""
    payload_size_bytes: int = 1316
    """SRTO_PAYLOADSIZE: 7 TS packets, what every SRT encoder sends in live mode."""
    max_pending_bytes: int = 8 * 1024 * 1024
    """Per connection: received bytes not yet taken by the event loop (or waiting for the gate)."""
    stop_timeout_seconds: float = 5.0
    park_after_seconds: float | None = 10.0
    """Idle this long (no publisher, no handshake), libsrt's listener and its polling threads are closed
    until the next datagram; the port stays bound (`SrtListener`, parked). None: never."""


class SrtServer:
    """The SRT ingest listener of one relay: owns the libsrt listener, its thread and all sessions.

    `start()` returns False (and logs "SRT ingest off" once) when libsrt is missing; the rest of the
    relay runs without SRT. `close()` is idempotent: listener and connections first, then the
    sinks (each closed exactly once), then libsrt.
    """

    def __init__(
        self,
        gate: PublishGate,
        admission: SrtAdmission,
        settings: SrtSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        library_names: list[str] | None = None,
        on_refused: Callable[[Transport, RefusalReason], None] | None = None,
    ) -> None:
        self._gate = gate
        self._admission = admission
        self._on_refused = on_refused
        """Told of the refusals decided here rather than by the admission (the handshake rate, and a
        passphrase libsrt refused after the admission said yes): for metrics."""
        self.settings = settings or SrtSettings()
        self.clock = clock
        self._library_names = library_names
        self._lib: LibSrt | None = None
        self._listener: SrtListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[int, SrtSession] = {}  # loop only
        self._wires: dict[int, SrtWire] = {}  # worker thread only
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True while listening."""
        return self._listener is not None and not self._closed

    @property
    def parked(self) -> bool:
        """True while the listener is idle with libsrt's listener closed (the port is still bound)."""
        return self._listener is not None and self._listener.parked

    @property
    def port(self) -> int | None:
        """The UDP port listened on (the real one if settings asked for 0)."""
        addr = self._listener.address if self._listener else None
        return addr[1] if addr else None

    def door_counts(self) -> DoorCounts:
        """Open connections and the handshakes refused since start (SRT cuts none at its door: a handshake
        is admitted whole, and a silent peer is libsrt's to drop)."""
        listener = self._listener
        if listener is None:
            return DoorCounts(Transport.SRT.value, 0, {}, {})
        return DoorCounts(Transport.SRT.value, listener.connections, listener.refusals(), {})

    @property
    def library_version(self) -> str | None:
        """libsrt's version, once loaded."""
        return version_string(self._lib.version) if self._lib else None

    async def start(self) -> bool:
        """Listen; False if libsrt is unavailable. Raises `SrtError` if the port cannot be bound."""
        if self._closed:
            raise RuntimeError("SrtServer was closed")
        try:
            lib = LibSrt.load(self._library_names)
        except SrtUnavailable as exc:
            log.warning("SRT ingest off: %s", exc)
            return False
        self._loop = asyncio.get_running_loop()
        s = self.settings
        config = ListenerConfig(
            host=s.host,
            port=s.port,
            latency_ms=s.latency_ms,
            max_connections=s.max_connections,
            connect_timeout_ms=round(s.handshake_timeout_seconds * 1000),
            peer_idle_timeout_ms=round(s.idle_timeout_seconds * 1000),
            payload_size_bytes=s.payload_size_bytes,
            join_timeout_seconds=s.stop_timeout_seconds,
            park_after_seconds=s.park_after_seconds,
        )
        throttle = TokenBuckets(
            s.handshakes_per_second_per_address,
            s.handshake_burst_per_address,
            max_keys=s.handshake_addresses_tracked,
            clock=self.clock,
        )
        admit = functools.partial(admit_handshake, self._admission, throttle=throttle, on_refused=self._on_refused)
        lib.startup()
        listener = SrtListener(lib, config, admit, _ThreadBridge(self))
        try:
            listener.start()
        except BaseException:
            lib.cleanup()
            raise
        self._lib, self._listener = lib, listener
        log.info("SRT ingest listening on %s (libsrt %s)", format_peer(listener.address), self.library_version)
        return True

    async def close(self) -> None:
        """Stop listening, end every session, release libsrt (idempotent)."""
        if self._closed:
            return
        self._closed = True
        listener, self._listener = self._listener, None
        if listener is not None:
            # The worker posts on_closed for every connection before it exits; those callbacks run
            # on the loop before this coroutine resumes (call_soon_threadsafe is FIFO).
            await asyncio.to_thread(listener.stop)
        tasks = [s.task for s in self._sessions.values() if s.task is not None and not s.task.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        for sock in list(self._sessions):
            self._end(sock, EndReason.KICKED)
        if self._lib is not None:
            self._lib.cleanup()

    async def __aenter__(self) -> SrtServer:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # --- for handles ----------------------------------------------------------------------------

    def request_close(self, sock: int) -> None:
        """Ask the worker thread to close a connection (any thread)."""
        if self._listener is not None:
            self._listener.close_connection(sock)

    def link_stats(self, sock: int) -> LinkStats | None:
        """Current libsrt statistics of a connection, None if it is gone."""
        listener = self._listener
        return listener.link_stats(sock) if listener is not None else None

    def publishers(self) -> list[SrtPublisher]:
        """The publishers currently connected (for the API)."""
        return [s.handle for s in self._sessions.values() if s.ended is None]

    # --- worker thread: hand-off to the loop ----------------------------------------------------

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing left to deliver to
            loop.call_soon_threadsafe(callback, *args)

    def _thread_connected(self, conn: Connected) -> None:
        wire = SrtWire(self.clock())
        self._wires[conn.sock] = wire
        self._post(self._connected, conn, wire)

    def _thread_data(self, sock: int, messages: list[bytes]) -> None:
        wire = self._wires.get(sock)
        if wire is None:
            return
        size = sum(len(m) for m in messages)
        now = self.clock()
        with wire.lock:
            wire.last_data = now
            if wire.in_flight_bytes + size > self.settings.max_pending_bytes:
                first_drop = wire.dropped_bytes == 0
                wire.dropped_bytes += size
                if first_drop:
                    log.warning("SRT ingest falling behind on sock %d: dropping received data", sock)
                return
            wire.in_flight_bytes += size
        self._post(self._data, sock, now, messages, size)

    def _thread_closed(self, sock: int, cause: CloseCause, silence_seconds: float) -> None:
        self._wires.pop(sock, None)
        self._post(self._closed_cb, sock, cause, silence_seconds)

    def _thread_handshake_failed(self, context: object, peer: Peer) -> None:
        self._post(self._handshake_failed, context, peer)

    # --- the loop -------------------------------------------------------------------------------

    def _handshake_failed(self, context: object, peer: Peer) -> None:
        """The streamid and token were good, and the handshake never connected: libsrt refused it after the
        callback, almost always over a passphrase that does not match the stream's (wrong, missing, or sent
        to a stream without one; libsrt tells us nothing), rarely because the caller gave up meanwhile."""
        stream_id, _admit = cast(tuple[str, SrtAdmit], context)
        log.info(
            "SRT handshake from %s for stream %s refused by libsrt after admission "
            "(most likely the passphrase: wrong, missing, or one the stream does not have)",
            format_peer(peer),
            stream_label(stream_id),
        )
        if self._on_refused is not None:
            self._on_refused(Transport.SRT, RefusalReason.PASSPHRASE)

    def _connected(self, conn: Connected, wire: SrtWire) -> None:
        stream_id, _admit = conn.context
        handle = SrtPublisher(self, conn, stream_id, wire)
        session = SrtSession(handle, wire, self.clock())
        self._sessions[conn.sock] = session
        log.info(
            "SRT publisher %s connected for stream %s (latency %d ms, %s)",
            handle.peer,
            stream_label(stream_id),
            conn.latency_ms,
            "encrypted" if conn.encrypted else "unencrypted",
        )
        request = PublishRequest(stream_key=conn.streamid, container=ContainerFormat.MPEGTS, publisher=handle, app="")
        session.task = asyncio.get_running_loop().create_task(self._open(conn.sock, session, request))

    async def _open(self, sock: int, session: SrtSession, request: PublishRequest) -> None:
        stream = stream_label(session.handle.stream_id)
        try:
            async with asyncio.timeout(self.settings.handshake_timeout_seconds):
                sink = await self._gate.open_publish(request)
        except PublishRefused as exc:
            log.info("SRT publish refused for stream %s: %s", stream, exc.reason.value)
            self.request_close(sock)
            return
        except TimeoutError:
            log.warning("SRT publish for stream %s: the gate did not answer in time", stream)
            self.request_close(sock)
            return
        except Exception:
            log.exception("SRT publish for stream %s: the gate failed", stream)
            self.request_close(sock)
            return
        if session.ended is not None:  # the connection ended while the gate was deciding
            sink.close(session.ended)
            return
        session.sink = sink
        backlog, session.backlog, session.backlog_bytes = session.backlog, [], 0
        for received, messages in backlog:
            session.feed(received, messages)

    def _data(self, sock: int, received: float, messages: list[bytes], size: int) -> None:
        session = self._sessions.get(sock)
        if session is None:
            return
        with session.wire.lock:
            session.wire.in_flight_bytes -= size
        if session.ended is not None:
            return
        if session.sink is None:
            # Waiting for the gate: keep it (bounded), it holds the stream's first PAT/PMT/keyframe.
            if session.backlog_bytes + size > self.settings.max_pending_bytes:
                with session.wire.lock:
                    session.wire.dropped_bytes += size
                return
            session.backlog.append((received, messages))
            session.backlog_bytes += size
            return
        session.feed(received, messages)

    def _closed_cb(self, sock: int, cause: CloseCause, silence_seconds: float) -> None:
        session = self._sessions.get(sock)
        if session is None:
            return
        if cause == CloseCause.BROKEN:
            # libsrt's "broken" covers both an encoder's clean close and a lost link: tell them
            # apart by the silence before it (a lost link is only noticed after the idle timeout).
            log.debug("SRT sock %d broke after %.3fs of silence", sock, silence_seconds)
            quiet = silence_seconds >= 0.8 * self.settings.idle_timeout_seconds
            reason = EndReason.DROP if quiet else EndReason.UNPUBLISH
        elif cause == CloseCause.REQUESTED:
            reason = session.handle.kick_reason or EndReason.KICKED
        else:
            reason = EndReason.KICKED
        if session.sink is not None:
            with session.sink.batch():
                for packet in session.reader.flush(max(0, round((self.clock() - session.started) * 1000))):
                    session.sink.write(packet)
        self._end(sock, reason)

    def _end(self, sock: int, reason: EndReason) -> None:
        session = self._sessions.pop(sock, None)
        if session is None or session.ended is not None:
            return
        session.ended = reason
        log.info(
            "SRT publisher %s for stream %s ended: %s",
            session.handle.peer,
            stream_label(session.handle.stream_id),
            reason.value,
        )
        if session.sink is not None:
            try:
                session.sink.close(reason)
            except Exception:
                log.exception("closing the sink of SRT stream %s failed", stream_label(session.handle.stream_id))


class _ThreadBridge:
    """`ListenerHandler` for the server: runs on the worker thread, forwards to the loop."""

    def __init__(self, server: SrtServer) -> None:
        self._server = server

    def on_connected(self, conn: Connected) -> None:
        self._server._thread_connected(conn)

    def on_data(self, sock: int, messages: list[bytes]) -> None:
        self._server._thread_data(sock, messages)

    def on_closed(self, sock: int, cause: CloseCause, silence_seconds: float) -> None:
        self._server._thread_closed(sock, cause, silence_seconds)

    def on_handshake_failed(self, context: object, peer: Peer) -> None:
        self._server._thread_handshake_failed(context, peer)
