"""One RTMP connection: an `asyncio.BufferedProtocol` over `relay.rtmp.session.ServerSession`.

The kernel reads straight into the connection's buffer (`get_buffer`), and `buffer_updated` feeds the
bytes to the session and processes its events in the same callback: media to the gate's sink, replies
written. No StreamReader, no task step per read; once published, a read that stops inside a message is
followed at once by another in the same callback (`_read_on`: ffmpeg writes each header apart). At most
`read_chunk_bytes` are read at a time (4 KiB until a publish is accepted) and processed fully before the
next read, so a publisher never gets ahead of us: what the session holds unparsed stays under its
`max_buffered_bytes` (a published RTMPS connection reads what the TLS layer holds at once, up to
`TLS_MAX_READ_BYTES`: see `get_buffer`).
Reading is paused while the gate decides a publish (the bytes behind the publish wait in the session
and are processed in order once it is accepted) and while the transport's write buffer is over its
high-water mark (a client that does not read our replies cannot make us buffer them without bound).

A small task per connection (`run`) owns its lifetime: the TLS upgrade, the gate's decision (async),
the graceful close after a refusal, and the cleanup with one log line whatever ended it. Whatever goes
wrong with one client ends that client's connection only (for a client that never published, a line
the server's throttled log may hold back and count).

Until its publish is accepted a connection is anonymous: it must get there within
`preauth_timeout_seconds` of accept (TLS handshake included: RTMPS connections are accepted as plain
TCP and upgraded here, so that they count against the limits from their first byte), and its session
holds it to the small pre-auth message limits. The server may evict it meanwhile to make room.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import cast

from relay.doors import DoorCut
from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishGate,
    PublishRefused,
    PublishRequest,
    Transport,
    stream_label,
)
from relay.ingest.peers import peer_key
from relay.ingest.read_ticker import ReadTicker
from relay.ingest.rtmp_info import InfoTracker
from relay.ingest.rtmp_settings import RtmpServerSettings
from relay.media.packets import ContainerFormat, MediaPacket
from relay.rtmp.errors import ProtocolError
from relay.rtmp.events import (
    NEED_DATA,
    CloseRequested,
    ConnectRequested,
    HandshakeDone,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    Unpublished,
)
from relay.rtmp.session import ServerSession

log = logging.getLogger("relay.ingest.rtmp")  # the RTMP ingest logger, shared with rtmp_server

TLS_MAX_READ_BYTES = 1 << 20
"""The most a published RTMPS connection reads at once (see `RtmpConnection.get_buffer`): asyncio's TLS layer
holds at most ~512 KiB encrypted (its 256 KiB high-water mark plus one socket read) before it stops reading."""
PREAUTH_READ_BYTES = 4096
"""The read buffer of an anonymous connection: hundreds of them may be open (flooded, evicted, back again),
and a publish needs a handshake (1.5 KiB at a time) and a few hundred bytes of commands."""
READ_ON_TIMES = 8
"""Reads a published plain connection may make in one callback while a message is incomplete (see
`_read_on`); then, or when nothing more is there, the loop's reader takes over."""
_TLS_RECORD_HEADROOM = 32 * 1024
"""More than the plaintext of one TLS record (16 KiB) that the TLS object may hold already decrypted."""


class _ConnectionClosed(Exception):
    """Internal: end this connection with the given log reason."""

    def __init__(self, reason: str, *, warn: bool = True) -> None:
        super().__init__(reason)
        self.warn = warn


class _Pause(Enum):
    """Why reading is paused; it resumes when no reason is left."""

    GATE = "the gate is deciding a publish"
    WRITES = "the transport's write buffer is over its high-water mark"
    MERGE = "merged reads: the next read waits for the interval (`RtmpServerSettings.merge_interval_seconds`)"


@dataclass(frozen=True, slots=True)
class _End:
    """How the connection ends, decided in a protocol callback."""

    reason: str
    warn: bool
    graceful: bool
    """Close after sending what is buffered (a refusal the client should see) instead of aborting."""


def _describe(exc: BaseException) -> tuple[str, bool]:
    """The log reason and whether it warns, for an exception that ends a connection."""
    if isinstance(exc, _ConnectionClosed):
        return str(exc), exc.warn
    if isinstance(exc, ProtocolError):
        return f"protocol error: {exc}", True
    if isinstance(exc, TimeoutError):
        return "idle timeout", True
    if isinstance(exc, ConnectionError | ssl.SSLError | OSError):
        return f"connection error: {type(exc).__name__}", True
    return "internal error", True


class RtmpConnection(asyncio.BufferedProtocol):
    """One client connection: owns its session, its sink while publishing, and the socket.

    It is the `PublisherHandle` the gate sees. The server makes one per accepted socket; `admit` (the
    server's limits) decides in `connection_made` whether it is served, and then starts `run`.
    """

    def __init__(
        self,
        gate: PublishGate,
        settings: RtmpServerSettings,
        transport: Transport,
        *,
        admit: Callable[[RtmpConnection], bool],
        ssl_context: ssl.SSLContext | None = None,
        on_publishing: Callable[[RtmpConnection], None] | None = None,
        log_anonymous_end: Callable[[int, str, str, str], None] | None = None,
        ticker: ReadTicker | None = None,
    ) -> None:
        self._gate = gate
        self._settings = settings
        self._transport = transport
        self._admit = admit
        self._peer = "?"
        self.address = "?"
        """The key the peer's connections are counted under (its IP address, its /64 for IPv6)."""
        self._ssl_context = ssl_context
        self._on_publishing = on_publishing
        self._log_anonymous_end = log_anonymous_end
        self._loop = asyncio.get_running_loop()
        self._io: asyncio.Transport | None = None
        """The socket's transport (TLS's once upgraded)."""
        self._fd = -1
        """The plain socket's descriptor, for `_read_on` (-1: TLS, or no socket)."""
        self._last_receive = self._loop.time()
        self._accepted = self._last_receive
        self.published = False
        """A publish was accepted on this connection (it showed a valid key): it is no longer anonymous."""
        self.at_gate = False
        """The gate is deciding this connection's publish (not evictable meanwhile: it may be taking over)."""
        self._evicted = False
        self._evicted_because = ""
        self._tls_handshake: asyncio.Future[asyncio.Transport | None] | None = None
        self._kick_reason: EndReason | None = None
        self._sink: IngestSink | None = None
        self._label = ""
        self._app = ""
        self._info = InfoTracker()
        session_config = settings.session_config()
        if ssl_context is not None:  # a published TLS connection's buffer may grow (get_buffer), up to this
            session_config = replace(session_config, max_buffered_bytes=TLS_MAX_READ_BYTES + 4096)
        self._session = ServerSession(session_config, epoch_ms=int(self._loop.time() * 1000))
        self._read_buffer = memoryview(bytearray(min(PREAUTH_READ_BYTES, settings.read_chunk_bytes)))
        """Small while anonymous (a handshake and a publish's commands fit); `read_chunk_bytes` once published."""
        self._serving = False
        """The session's events are processed as bytes arrive (after the TLS upgrade for RTMPS)."""
        self._paused: set[_Pause] = set()
        self._publish_request: PublishRequested | None = None
        """A publish for `run` to take to the gate (reading is paused meanwhile)."""
        self._end: _End | None = None
        self._wake: asyncio.Future[None] = self._loop.create_future()
        """Done when `run` has something to do: a publish for the gate, or the end."""
        self._lost: asyncio.Future[None] = self._loop.create_future()
        self._expired: str | None = None
        """Why the pre-auth deadline closed this connection, once it has."""
        self._expired_cut = DoorCut.PUBLISH_TIMEOUT
        """Which deadline `_expired` was (the handshake's or the publish's)."""
        self._protocol_error = False
        """The end was the client breaking the protocol (or the pre-auth limits)."""
        self.cut: DoorCut | None = None
        """Why the relay itself closed this connection, set when it has ended (None: the peer closed it, or
        a kick: takeover, stream deleted, shutdown): counted by the server for /metrics."""
        self._deadline: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._ticker = ticker if ticker is not None else ReadTicker(settings.merge_interval_seconds, self._loop)
        """Where a connection that merges its reads waits for the next one (the server's: one for all)."""
        self._read_full = False
        """The last read filled the read buffer: more may be waiting in the socket."""
        self._idle_expired = False

    # -- PublisherHandle -----------------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """RTMP or RTMPS."""
        return self._transport

    @property
    def peer(self) -> str:
        """`host:port` of the client."""
        return self._peer

    def idle_seconds(self) -> float:
        """Seconds since the client last sent any byte."""
        return max(0.0, self._loop.time() - self._last_receive)

    def evict(self, why: str) -> None:
        """Close this anonymous connection at once to make room for a newer one (the server's call; `why`:
        the limit that was full, for the log line)."""
        if not self._evicted and self._kick_reason is None:
            self._evicted = True
            self._evicted_because = why
            self._cut()

    def disconnect(self, reason: EndReason) -> None:
        """Close soon; the sink is then closed with `reason` (idempotent, non-blocking)."""
        if self._kick_reason is None:
            self._kick_reason = reason
            self._cut()

    # -- asyncio protocol callbacks ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self._io = transport
        if self._ssl_context is None:
            sock = transport.get_extra_info("socket")
            self._fd = -1 if sock is None else sock.fileno()
        else:
            # Before the transport's first read: the ClientHello must stay in the socket for start_tls.
            transport.pause_reading()
        peername = transport.get_extra_info("peername")
        host = str(peername[0]) if peername else "?"
        self._peer = f"{host}:{peername[1]}" if peername else "?"
        self._accepted = self._last_receive = self._loop.time()
        self.address = peer_key(host)
        if not self._admit(self):
            self._end = _End("refused", False, graceful=False)
            transport.abort()
            return
        settings = self._settings
        handshake_seconds = min(settings.handshake_timeout_seconds, settings.preauth_timeout_seconds)
        self._arm_deadline(
            self._accepted + handshake_seconds, "TLS or RTMP handshake timeout", DoorCut.HANDSHAKE_TIMEOUT
        )
        if self._ssl_context is None:
            self._start_serving()

    def get_buffer(self, sizehint: int) -> memoryview:
        # asyncio's TLS layer (CPython 3.11-3.13) asks with `sizehint` = the encrypted bytes it holds. When the
        # buffer it gets comes back full, it reads the rest on a later loop turn, and an EOF or close_notify
        # handled before that turn drops the rest: a publisher's last messages, its unpublish among them (seen
        # with Debian's ffmpeg 5.1 over RTMPS, 1 close in 6). A published TLS connection's buffer is kept larger
        # than what it could decrypt (the bytes held plus a record already opened), so it never comes back full.
        # A plain socket asks with -1 (asyncio) or with libuv's 64 KiB (uvloop): only a TLS connection grows.
        if sizehint > 0 and self.published and self._ssl_context is not None:
            size = min(TLS_MAX_READ_BYTES, sizehint + _TLS_RECORD_HEADROOM)
            if size > len(self._read_buffer):
                self._read_buffer = memoryview(bytearray(size))
        return self._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        if not self._received(nbytes):
            return
        # Before the TLS upgrade has handed over, and while the gate decides, bytes wait in the session.
        if self._serving and not self.at_gate:
            sink = self._sink
            if sink is None:
                self._advance()
                return
            # What this read's messages fan out is written at its end, once per push; a read of a connection
            # that merges its reads is already an interval's media.
            with sink.batch(self._merges_reads):
                self._advance()
                if self.published and self._fd >= 0:
                    self._read_on()
            if self._merges_reads:
                self._merge_reads()

    @property
    def _merges_reads(self) -> bool:
        """Published on plain TCP with `merge_interval_seconds`: read at most once an interval (`_merge_reads`),
        each read handed to the sink as merged."""
        return self._fd >= 0 and self.published and self._settings.merge_interval_seconds > 0

    def _merge_reads(self) -> None:
        """Read next at the ticker's next tick, at most `merge_interval_seconds` (`RELAY_MERGE_INTERVAL_MS`) from
        now (the server's connections share its ticks: one wake-up reads them all, `relay.ingest.read_ticker`),
        unless the last read filled the buffer: what waits in the socket is read at once, so a publisher faster
        than a buffer an interval (a keyframe, a burst, a high bitrate) is never held back, only one that leaves
        the socket empty. A 1080p30 publisher was read ~65 times a second, each read one loop turn; at 66 ms, ~15.

        Plain TCP only: under TLS a paused transport still takes the socket's bytes into its TLS layer, where
        an end handled before they are delivered has lost a publisher's last messages (`get_buffer`); an
        RTMPS publisher is read as its data comes, and only the hub's writes are merged."""
        if self._read_full or self._end is not None:
            return
        self._pause(_Pause.MERGE)
        self._ticker.wait(self, self._merge_due)  # waiting already keeps its place

    def _merge_due(self) -> None:
        """The interval is over: read at once (plain TCP), as `_read_on` does, instead of waiting for the loop's
        next turn to report the socket readable (a second wake-up of the loop for every read).

        The transport's reader stays off through that read: a read that brings media pauses again for the
        next interval (`_merge_reads`), and only when none does (nothing there, the peer's close, a full
        buffer, another pause) is the transport resumed. Resuming first made every interval add the socket
        to the loop's selector and take it out again (two `epoll_ctl` calls and their Python a read)."""
        self._paused.discard(_Pause.MERGE)  # what pauses meanwhile finds the transport paused already
        if not self._paused and self._end is None and (nbytes := self._read_direct()):
            self.buffer_updated(nbytes)
        if _Pause.MERGE not in self._paused:
            self._resume(_Pause.MERGE)  # no new interval armed: the loop's reader takes over

    def _read_direct(self) -> int:
        """Read the plain TCP socket into the read buffer now, bypassing the transport's reader: the bytes read,
        or 0 when there is nothing to process. Nothing there (EAGAIN) hands back to the loop's reader; the
        peer's close is left to the transport's read, which sees it as ever (the socket stays readable); a
        reset ends the connection as the transport's own read would."""
        try:
            return os.readv(self._fd, (self._read_buffer,))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as exc:
            self._fail(exc)
            return 0

    def _read_on(self) -> None:
        """Read again at once while the session is inside a message (plain TCP, once published).

        ffmpeg writes each message's chunk header apart from its body: the loop woke for the header, and
        the body follows within microseconds. Reading it in this callback instead of the next loop turn
        halves a publisher's turns (one epoll_wait and one transport callback fewer per message: 121 ->
        63 epoll_wait a second for a 1080p30 publish, `strace -c`), and adds no delay: nothing there
        (EAGAIN) hands back to the loop's reader as before. Each read is processed fully before the next,
        as the transport's are, within `read_chunk_bytes`."""
        session = self._session
        for _ in range(READ_ON_TIMES):
            if self._end is not None or self._paused or not session.inside_message:
                return
            nbytes = self._read_direct()
            if not nbytes or not self._received(nbytes):
                return
            self._advance()

    def _received(self, nbytes: int) -> bool:
        """Feed `nbytes` of the read buffer to the session; False when the connection is ending (or now
        failed)."""
        if self._end is not None:
            return False
        self._last_receive = self._loop.time()
        self._read_full = nbytes >= len(self._read_buffer)
        try:
            self._session.receive_data(self._read_buffer[:nbytes])
        except Exception as exc:
            self._fail(exc)
            return False
        return True

    def eof_received(self) -> bool:
        self._peer_closed()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._lost.done():
            self._lost.set_result(None)
        if exc is None:
            self._peer_closed()
        else:
            self._finish(*_describe(exc))

    def pause_writing(self) -> None:
        self._pause(_Pause.WRITES)

    def resume_writing(self) -> None:
        self._resume(_Pause.WRITES)

    # -- the connection's task -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the client until it leaves, breaks a rule or is kicked; cleans up in every case."""
        reason, warn = "closed by peer", False
        end = EndReason.DROP
        try:
            if self._ssl_context is not None and self._end is None:
                await self._start_tls(self._ssl_context)
                if self._end is None:
                    self._start_serving()
            await self._serve()
        except asyncio.CancelledError:
            reason = "server closing"
            raise
        except Exception as exc:
            reason, warn = _describe(exc)
            if reason == "internal error":
                # A bug of ours (or of the gate/sink) must still end only this connection.
                log.exception("rtmp %s %s: internal error", self.transport.value, self._peer)
        finally:
            if self._end is None:
                self._end = _End(reason, warn, graceful=False)
            if self._kick_reason is not None:
                end = self._kick_reason
                reason, warn = f"disconnected by relay ({end.value})", False
            elif self._evicted:
                reason, warn = f"evicted: {self._evicted_because}", True
                self.cut = DoorCut.EVICTED
            elif self._expired is not None:
                reason, warn = self._expired, True
                self.cut = self._expired_cut
            elif self._idle_expired:
                reason, warn = "idle timeout", True
                self.cut = DoorCut.IDLE_TIMEOUT
            elif self._protocol_error:
                self.cut = DoorCut.PROTOCOL_ERROR
            self._disarm_deadline()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._ticker.cancel(self)  # if it waits for a tick
            self._close_sink(end)
            if self._io is not None:
                self._io.abort()
            label = f" stream {self._label}" if self._label else ""
            level = logging.WARNING if warn else logging.INFO
            if not self.published and self._log_anonymous_end is not None:
                self._log_anonymous_end(level, reason, self._peer, label)
            else:
                log.log(level, "rtmp %s %s%s: %s", self.transport.value, self._peer, label, reason)

    async def _serve(self) -> None:
        """Wait for what the callbacks hand over: a publish for the gate, then the end."""
        while self._end is None:
            request, self._publish_request = self._publish_request, None
            if request is not None:
                await self._publish(request)
                continue
            await self._wake
            self._wake = self._loop.create_future()
        if self._end.graceful:
            await self._close_gracefully()
        raise _ConnectionClosed(self._end.reason, warn=self._end.warn)

    async def _close_gracefully(self) -> None:
        # close() sends what is still buffered (the refusal the client should see) before closing;
        # abort() in run()'s cleanup would drop it.
        assert self._io is not None
        self._io.close()
        try:
            async with asyncio.timeout(self._settings.handshake_timeout_seconds):
                await self._lost
        except TimeoutError:
            pass  # the cleanup aborts the transport anyway

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        # Reading was paused at accept, so the ClientHello is still in the socket for the TLS layer.
        # The handshake runs in a task of its own so that eviction and the deadline can cancel it:
        # aborting the socket under it instead makes CPython 3.11's start_tls return no transport at all.
        assert self._io is not None
        handshake = asyncio.ensure_future(self._loop.start_tls(self._io, self, context, server_side=True))
        self._tls_handshake = handshake
        try:
            tls = await handshake
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own task is being cancelled (the server is closing)
            raise ConnectionAbortedError("TLS handshake cut short") from None
        finally:
            self._tls_handshake = None
        if tls is None:
            raise ConnectionAbortedError("TLS handshake gave no transport")
        self._io = tls

    def _start_serving(self) -> None:
        self._serving = True
        self._idle_timer = self._loop.call_at(
            self._last_receive + self._settings.idle_timeout_seconds, self._check_idle
        )
        if self._session.buffered_bytes:
            self._advance()  # what arrived with the end of the TLS handshake

    # -- timers and ending ---------------------------------------------------------------------------

    def _arm_deadline(self, when: float, reason: str, cut: DoorCut) -> None:
        # A timer rather than a read timeout: it also ends a client that stalls our writes (never reads
        # our replies), the TLS handshake and everything else an anonymous connection could wait on.
        self._disarm_deadline()
        self._deadline = self._loop.call_at(when, self._expire, reason, cut)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str, cut: DoorCut) -> None:
        self._deadline = None
        if not self.published and self._expired is None and self._kick_reason is None and not self._evicted:
            self._expired, self._expired_cut = reason, cut
            self._cut()

    def _check_idle(self) -> None:
        # One timer per connection, re-armed only when it fires, instead of a timeout around every read
        # (a Timeout, a timer handle and a heap push and cancel per read: measurably the ingest's CPU).
        idle_at = self._last_receive + self._settings.idle_timeout_seconds
        if self._loop.time() < idle_at:
            self._idle_timer = self._loop.call_at(idle_at, self._check_idle)
            return
        self._idle_timer = None
        if self._kick_reason is None and not self._evicted:
            self._idle_expired = True
            self._cut()

    def _cut(self) -> None:
        """End the connection now; run()'s cleanup says why (kick, eviction, deadline or idle)."""
        self._finish("cut", True, force=True)

    def _finish(self, reason: str, warn: bool, *, graceful: bool = False, force: bool = False) -> None:
        """End the connection (the first reason given is kept) and wake run() to clean up.

        Graceful: reading stops and run() closes after our replies are sent. Once an end is decided,
        only `force` (a kick, an eviction, a timer) cuts it short: not the peer's close meanwhile.
        """
        first = self._end is None
        if first:
            self._end = _End(reason, warn, graceful)
        if not self._wake.done():
            self._wake.set_result(None)
        if graceful:
            if self._io is not None:
                self._io.pause_reading()
            return
        if not (first or force):
            return
        if self._tls_handshake is not None:
            self._tls_handshake.cancel()
        elif self._io is not None:
            self._io.abort()

    def _fail(self, exc: Exception) -> None:
        reason, warn = _describe(exc)
        self._protocol_error = self._end is None and isinstance(exc, ProtocolError)
        if reason == "internal error":
            # A bug of ours (or of the sink) must still end only this connection.
            log.exception("rtmp %s %s: internal error", self.transport.value, self._peer)
        self._finish(reason, warn)

    def _peer_closed(self) -> None:
        if self._kick_reason is None and self._sink is not None:
            self._finish("connection closed while publishing (no unpublish)", True)
        else:
            self._finish("closed by peer", False)

    def _pause(self, why: _Pause) -> None:
        if not self._paused and self._io is not None:
            self._io.pause_reading()
        self._paused.add(why)

    def _resume(self, why: _Pause) -> None:
        self._paused.discard(why)
        if not self._paused and self._end is None and self._io is not None:
            self._io.resume_reading()

    def _close_sink(self, reason: EndReason) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close(reason)

    # -- the session's events ------------------------------------------------------------------------

    def _advance(self) -> None:
        """Process every event the session can give, then send its replies; never raises."""
        try:
            close_reason = self._process_events()
            out = self._session.data_to_send()
            if out and self._io is not None:
                self._io.write(out)
        except Exception as exc:
            self._fail(exc)
            return
        if close_reason is not None:
            self._finish(close_reason, False, graceful=True)

    def _process_events(self) -> str | None:
        """Events until the session needs data; stops at a publish (for the gate) or a close (its reason). The
        media messages between two other events go to the sink in one `write_many` (`ServerSession.take_media`)."""
        session = self._session
        packets: list[MediaPacket] = []
        while True:
            try:
                event = session.take_media(packets)
            except ProtocolError:
                self._write_media(packets)  # what came before the fault still goes, as it did a message at a time
                raise
            if packets:
                self._write_media(packets)
                packets = []
            if event is NEED_DATA:
                return None
            if isinstance(event, MediaReceived):
                self._write_media([event.packet])
            elif isinstance(event, MetadataReceived):
                if self._sink is not None:
                    self._sink.write(event.packet)
                    self._info.from_metadata(event.values)
                    self._push_info()
            elif isinstance(event, HandshakeDone):
                self._arm_deadline(
                    self._accepted + self._settings.preauth_timeout_seconds,
                    "no publish in time",
                    DoorCut.PUBLISH_TIMEOUT,
                )
            elif isinstance(event, ConnectRequested):
                self._app = event.app
                session.accept_connect()
            elif isinstance(event, PublishRequested):
                # The session answers nothing more until the gate decides: the bytes behind the publish
                # stay in it, and reading stops so that no more come meanwhile.
                self.at_gate = True
                self._label = stream_label(event.name)
                self._pause(_Pause.GATE)
                self._publish_request = event
                if not self._wake.done():
                    self._wake.set_result(None)
                return None
            elif isinstance(event, Unpublished):
                log.info(
                    "rtmp %s %s stream %s: unpublished (%s)",
                    self.transport.value,
                    self._peer,
                    self._label,
                    event.command,
                )
                self._close_sink(EndReason.UNPUBLISH)
            elif isinstance(event, CloseRequested):
                return event.reason

    def _write_media(self, packets: list[MediaPacket]) -> None:
        sink = self._sink
        if sink is None:
            return
        sink.write_many(packets)
        for packet in packets:
            if packet.config:  # a sequence header: what the stream's info says may change
                self._info.from_packet(packet)
                self._push_info()

    def _push_info(self) -> None:
        info = self._info.merged()
        if info is not None and self._sink is not None:
            self._sink.update_info(info)

    async def _publish(self, event: PublishRequested) -> None:
        request = PublishRequest(stream_key=event.name, container=ContainerFormat.FLV, publisher=self, app=self._app)
        try:
            sink = await self._gate.open_publish(request)
        except PublishRefused as exc:
            # BadName for every refusal: encoders know it, and it tells a guesser nothing more.
            self._session.reject_publish("NetStream.Publish.BadName", "Publish refused.")
            out = self._session.data_to_send()
            if self._io is not None:
                self._io.write(out)
            self._finish(f"publish refused ({exc.reason.value})", False, graceful=True)
            return
        finally:
            self.at_gate = False
        if self._kick_reason is not None:  # kicked while the gate was deciding
            sink.close(self._kick_reason)
            raise _ConnectionClosed("disconnected while publishing started", warn=False)
        if self._expired is not None:  # the deadline passed while the gate was deciding
            sink.close(EndReason.DROP)
            raise _ConnectionClosed(self._expired)
        self._sink = sink
        self._session.accept_publish()
        self._disarm_deadline()
        self.published = True
        if len(self._read_buffer) < self._settings.read_chunk_bytes:  # between reads: no read holds it
            self._read_buffer = memoryview(bytearray(self._settings.read_chunk_bytes))
        if self._on_publishing is not None:
            self._on_publishing(self)
        log.info("rtmp %s %s stream %s: publishing", self.transport.value, self._peer, self._label)
        if self._end is None:
            # Resumed first: a selector or TLS transport reads again only from the next loop iteration,
            # after what waited behind the publish has been processed here, in order.
            self._resume(_Pause.GATE)
            self._advance()
