"""SRT ingest: one UDP port, publishers routed by streamid, each stream with its own passphrase.

Admission happens twice, for two different reasons:

1. In libsrt's handshake (its receiver thread, synchronous): `SrtAdmission.check(streamid)` says
   whether the stream exists, the token is right, the stream is active and not already published
   by a live encoder; it also gives the stream's passphrase, which libsrt then enforces in the
   same handshake. A refused caller never gets a connection, and its rejection code says why
   (1400 bad streamid, 1403 wrong token or inactive, 1404 unknown stream, 1405 mode not publish,
   1409 already live, 1402 server full, 1503 engine unavailable; libsrt's own 1010/1011 for a
   wrong or missing/unexpected passphrase).
2. After accept, on the event loop: `PublishGate.open_publish` as for RTMP, which opens the sink
   (and may kick a silent earlier publisher). If it refuses now (a race with a change in the store),
   the connection is closed.

Passphrase policy: a stream with a passphrase accepts only callers with that passphrase; a stream
without one accepts only unencrypted callers (libsrt's enforced-encryption rule: an encrypted caller
is refused with 1011 rather than silently sending media we could not decrypt).

Data path: the listener's worker thread reads SRT messages and posts them to the loop with
`call_soon_threadsafe`; the loop splits them into TS packets (`MpegTsReader`) and writes them to
the sink. What is in flight between the thread and the loop is bounded per connection
(`max_pending_bytes`); beyond it the data is dropped and counted, never queued without limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishGate,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInfo,
    Transport,
)
from relay.media.mpegts import MpegTsReader, TsStreamInfo
from relay.media.packets import ContainerFormat
from relay.srt.handshake import Accept, Peer, Reject
from relay.srt.libsrt import LibSrt, LinkStats, RejectCode, SrtUnavailable, format_peer, version_string
from relay.srt.listener import CloseCause, Connected, ListenerConfig, SrtListener
from relay.srt.streamid import InvalidStreamId, parse_streamid

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


@dataclass(frozen=True, slots=True)
class SrtSettings:
    """SRT ingest settings (units in the names)."""

    host: str = "0.0.0.0"
    """A literal IP address ("::" for IPv6)."""
    port: int = 5001
    latency_ms: int = 120
    max_connections: int = 64
    """Connections plus handshakes in progress; more are refused with 1402."""
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
    poll_interval_seconds: float = 0.05
    """Longest the worker thread sleeps before noticing close requests and shutdown."""
    max_pending_bytes: int = 8 * 1024 * 1024
    """Per connection: received bytes not yet taken by the event loop (or waiting for the gate)."""
    stop_timeout_seconds: float = 5.0


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


def _safe_id(stream_id: str) -> str:
    """The (untrusted) stream id as it may appear in a log line."""
    return repr(stream_id[:64])


class _Wire:
    """What the worker thread and the loop share about one connection, under `lock`."""

    def __init__(self, now: float) -> None:
        self.lock = threading.Lock()
        self.in_flight_bytes = 0
        self.dropped_bytes = 0
        self.last_data = now


class SrtPublisher:
    """One accepted SRT publisher, as the gate sees it (`PublisherHandle`), plus its link stats."""

    def __init__(self, server: SrtServer, conn: Connected, stream_id: str, wire: _Wire) -> None:
        self._server = server
        self._conn = conn
        self._wire = wire
        self._stats: LinkStats | None = None
        self.stream_id = stream_id
        """The id part of the streamid (safe to log; the token is not kept here)."""
        self.kick_reason: EndReason | None = None

    @property
    def transport(self) -> Transport:
        return Transport.SRT

    @property
    def peer(self) -> str:
        return format_peer(self._conn.peer)

    @property
    def encrypted(self) -> bool:
        """Whether the connection negotiated a passphrase."""
        return self._conn.encrypted

    @property
    def latency_ms(self) -> int:
        """The receiver latency libsrt negotiated."""
        return self._conn.latency_ms

    @property
    def dropped_bytes(self) -> int:
        """Bytes dropped because the event loop fell behind by more than `max_pending_bytes`."""
        return self._wire.dropped_bytes

    def idle_seconds(self) -> float:
        """Seconds since the last received message (thread-safe: the admission check calls it)."""
        return max(0.0, self._server.clock() - self._wire.last_data)

    def disconnect(self, reason: EndReason) -> None:
        """Close soon; the sink is then closed with `reason` (non-blocking, idempotent)."""
        if self.kick_reason is None:
            self.kick_reason = reason
        self._server.request_close(self._conn.sock)

    def link_stats(self) -> LinkStats | None:
        """libsrt's statistics; after the link broke, the last ones read (None if never read)."""
        stats = self._server.link_stats(self._conn.sock)
        if stats is not None:
            self._stats = stats
        return self._stats


@dataclass(slots=True)
class _Session:
    handle: SrtPublisher
    wire: _Wire
    started: float
    reader: MpegTsReader = field(default_factory=MpegTsReader)
    sink: IngestSink | None = None
    backlog: list[tuple[float, list[bytes]]] = field(default_factory=list)
    backlog_bytes: int = 0
    ended: EndReason | None = None
    task: asyncio.Task[None] | None = None


def _to_stream_info(info: TsStreamInfo) -> StreamInfo:
    extra = {"video_pid": str(info.video_pid)} if info.video_pid is not None else {}
    return StreamInfo(
        video_width=info.width,
        video_height=info.height,
        frame_rate=info.frame_rate,
        video_codec=info.video_codec,
        audio_codec=info.audio_codec,
        extra=extra,
    )


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
    ) -> None:
        self._gate = gate
        self._admission = admission
        self.settings = settings or SrtSettings()
        self.clock = clock
        self._library_names = library_names
        self._lib: LibSrt | None = None
        self._listener: SrtListener | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sessions: dict[int, _Session] = {}  # loop only
        self._wires: dict[int, _Wire] = {}  # worker thread only
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """True while listening."""
        return self._listener is not None and not self._closed

    @property
    def port(self) -> int | None:
        """The UDP port listened on (the real one if settings asked for 0)."""
        addr = self._listener.address if self._listener else None
        return addr[1] if addr else None

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
            poll_interval_ms=max(1, round(s.poll_interval_seconds * 1000)),
            join_timeout_seconds=s.stop_timeout_seconds,
        )
        lib.startup()
        listener = SrtListener(lib, config, self._admit, _ThreadBridge(self))
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

    # --- libsrt's thread: admission -------------------------------------------------------------

    def _admit(self, streamid: str, peer: Peer) -> Accept | Reject:
        try:
            stream_id, _token = parse_streamid(streamid)
        except InvalidStreamId as exc:
            code = RejectCode.BAD_MODE if exc.bad_mode else RejectCode.BAD_REQUEST
            return Reject(code, str(exc))
        try:
            admit = self._admission.check(streamid)
        except PublishRefused as exc:
            return Reject(reject_code(exc.reason), f"stream {_safe_id(stream_id)}: {exc.reason.value}")
        return Accept(passphrase=admit.passphrase or None, latency_ms=admit.latency_ms, context=(stream_id, admit))

    # --- worker thread: hand-off to the loop ----------------------------------------------------

    def _post(self, callback: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed: nothing left to deliver to
            loop.call_soon_threadsafe(callback, *args)

    def _thread_connected(self, conn: Connected) -> None:
        wire = _Wire(self.clock())
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

    # --- the loop -------------------------------------------------------------------------------

    def _connected(self, conn: Connected, wire: _Wire) -> None:
        stream_id, _admit = conn.context
        handle = SrtPublisher(self, conn, stream_id, wire)
        session = _Session(handle, wire, self.clock())
        self._sessions[conn.sock] = session
        log.info(
            "SRT publisher %s connected for stream %s (latency %d ms, %s)",
            handle.peer,
            _safe_id(stream_id),
            conn.latency_ms,
            "encrypted" if conn.encrypted else "unencrypted",
        )
        request = PublishRequest(stream_key=conn.streamid, container=ContainerFormat.MPEGTS, publisher=handle, app="")
        session.task = asyncio.get_running_loop().create_task(self._open(conn.sock, session, request))

    async def _open(self, sock: int, session: _Session, request: PublishRequest) -> None:
        stream = _safe_id(session.handle.stream_id)
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
            self._feed(session, received, messages)

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
        self._feed(session, received, messages)

    def _feed(self, session: _Session, received: float, messages: list[bytes]) -> None:
        sink = session.sink
        assert sink is not None
        now_ms = max(0, round((received - session.started) * 1000))
        reader = session.reader
        for message in messages:
            for packet in reader.feed(message, now_ms):
                sink.write(packet)
        info = reader.take_info()
        if info is not None:
            sink.update_info(_to_stream_info(info))

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
            _safe_id(session.handle.stream_id),
            reason.value,
        )
        if session.sink is not None:
            try:
                session.sink.close(reason)
            except Exception:
                log.exception("closing the sink of SRT stream %s failed", _safe_id(session.handle.stream_id))


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
