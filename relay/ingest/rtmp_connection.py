"""One RTMP connection: a thin asyncio layer over `relay.rtmp.session.ServerSession`.

The connection reads at most `read_chunk_bytes` at a time and processes them fully (events to the
gate's sink) before reading again, so a publisher can never get ahead of us: asyncio's StreamReader
pauses the socket when its small buffer fills.  Whatever goes wrong with one client ends that
client's connection with one log line and nothing else (for a client that never published, a line
the server's throttled log may hold back and count).

Until its publish is accepted a connection is anonymous: it must get there within
`preauth_timeout_seconds` of accept (TLS handshake included: RTMPS connections are accepted as plain
TCP and upgraded here, so that they count against the limits from their first byte), and its session
holds it to the small pre-auth message limits. The server may evict it meanwhile to make room.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishGate,
    PublishRefused,
    PublishRequest,
    Transport,
    stream_label,
)
from relay.ingest.rtmp_info import InfoTracker
from relay.ingest.rtmp_settings import RtmpServerSettings
from relay.media.packets import ContainerFormat
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


class _ConnectionClosed(Exception):
    """Internal: end this connection with the given log reason."""

    def __init__(self, reason: str, *, warn: bool = True) -> None:
        super().__init__(reason)
        self.warn = warn


class RtmpConnection:
    """One client connection: owns its session, its sink while publishing, and the socket.

    It is the `PublisherHandle` the gate sees.
    """

    def __init__(
        self,
        gate: PublishGate,
        settings: RtmpServerSettings,
        transport: Transport,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        peer: str,
        address: str,
        *,
        ssl_context: ssl.SSLContext | None = None,
        on_publishing: Callable[[RtmpConnection], None] | None = None,
        log_anonymous_end: Callable[[int, str, str, str], None] | None = None,
    ) -> None:
        self._gate = gate
        self._settings = settings
        self._transport = transport
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self.address = address
        """The key the peer's connections are counted under (its IP address, its /64 for IPv6)."""
        self._ssl_context = ssl_context
        self._on_publishing = on_publishing
        self._log_anonymous_end = log_anonymous_end
        self._loop = asyncio.get_running_loop()
        self._last_receive = self._loop.time()
        self._accepted = self._last_receive
        self.published = False
        """A publish was accepted on this connection (it showed a valid key): it is no longer anonymous."""
        self.at_gate = False
        """The gate is deciding this connection's publish (not evictable meanwhile: it may be taking over)."""
        self._evicted = False
        self._tls_handshake: asyncio.Future[None] | None = None
        self._kick_reason: EndReason | None = None
        self._sink: IngestSink | None = None
        self._label = ""
        self._app = ""
        self._info = InfoTracker()
        settings = self._settings
        self._session = ServerSession(settings.session_config(), epoch_ms=int(self._loop.time() * 1000))
        self._expired: str | None = None
        """Why the pre-auth deadline closed this connection, once it has."""
        self._deadline: asyncio.TimerHandle | None = None
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_expired = False
        handshake_seconds = min(settings.handshake_timeout_seconds, settings.preauth_timeout_seconds)
        self._arm_deadline(self._accepted + handshake_seconds, "TLS or RTMP handshake timeout")
        self._close_after_flush: str | None = None

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

    def evict(self) -> None:
        """Close this anonymous connection at once to make room for a newer one (the server's call)."""
        if not self._evicted and self._kick_reason is None:
            self._evicted = True
            self._cut()

    def disconnect(self, reason: EndReason) -> None:
        """Close soon; the sink is then closed with `reason` (idempotent, non-blocking)."""
        if self._kick_reason is None:
            self._kick_reason = reason
            self._cut()

    # -- the connection's task -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the client until it leaves, breaks a rule or is kicked; cleans up in every case."""
        reason, warn = "closed by peer", False
        end = EndReason.DROP
        try:
            if self._ssl_context is not None:
                await self._start_tls(self._ssl_context)
            await self._serve()
        except _ConnectionClosed as exc:
            reason, warn = str(exc), exc.warn
        except ProtocolError as exc:
            reason, warn = f"protocol error: {exc}", True
        except TimeoutError:
            reason, warn = "idle timeout", True
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            reason, warn = f"connection error: {type(exc).__name__}", True
        except asyncio.CancelledError:
            reason = "server closing"
            raise
        except Exception:
            # A bug of ours (or of the gate/sink) must still end only this connection.
            log.exception("rtmp %s %s: internal error", self.transport.value, self._peer)
            reason, warn = "internal error", True
        finally:
            if self._kick_reason is not None:
                end = self._kick_reason
                reason, warn = f"disconnected by relay ({end.value})", False
            elif self._evicted:
                reason, warn = "evicted: too many connections not publishing", True
            elif self._expired is not None:
                reason, warn = self._expired, True
            elif self._idle_expired:
                reason, warn = "idle timeout", True
            self._disarm_deadline()
            if self._idle_timer is not None:
                self._idle_timer.cancel()
            self._close_sink(end)
            self._writer.transport.abort()
            label = f" stream {self._label}" if self._label else ""
            level = logging.WARNING if warn else logging.INFO
            if not self.published and self._log_anonymous_end is not None:
                self._log_anonymous_end(level, reason, self._peer, label)
            else:
                log.log(level, "rtmp %s %s%s: %s", self.transport.value, self._peer, label, reason)

    def _arm_deadline(self, when: float, reason: str) -> None:
        # A timer rather than a read timeout: it also ends a client that stalls our writes (never reads
        # our replies), the TLS handshake and everything else an anonymous connection could wait on.
        self._disarm_deadline()
        self._deadline = self._loop.call_at(when, self._expire, reason)

    def _disarm_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, reason: str) -> None:
        self._deadline = None
        if not self.published and self._expired is None and self._kick_reason is None and not self._evicted:
            self._expired = reason
            self._cut()

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        # The server paused reading at accept, so the ClientHello is still in the socket for the TLS layer.
        # The handshake runs in a task of its own so that eviction and the deadline can cancel it:
        # aborting the socket under it instead makes CPython 3.11's start_tls return no transport at all.
        handshake = asyncio.ensure_future(self._writer.start_tls(context))
        self._tls_handshake = handshake
        try:
            await handshake
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # our own task is being cancelled (the server is closing)
            raise ConnectionAbortedError("TLS handshake cut short") from None
        finally:
            self._tls_handshake = None

    def _cut(self) -> None:
        """End the connection now: the pending read, drain or TLS handshake ends, and run() cleans up."""
        if self._tls_handshake is not None:
            self._tls_handshake.cancel()
        else:
            self._writer.transport.abort()

    def _close_sink(self, reason: EndReason) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close(reason)

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

    async def _serve(self) -> None:
        settings = self._settings
        session = self._session
        self._idle_timer = self._loop.call_at(self._last_receive + settings.idle_timeout_seconds, self._check_idle)
        while True:
            data = await self._reader.read(settings.read_chunk_bytes)
            if not data:
                if self._kick_reason is None and self._sink is not None:
                    raise _ConnectionClosed("connection closed while publishing (no unpublish)")
                return
            self._last_receive = self._loop.time()
            session.receive_data(data)
            await self._process_events()
            await self._flush()
            if self._close_after_flush is not None:
                await self._close_gracefully()
                raise _ConnectionClosed(self._close_after_flush, warn=False)

    async def _close_gracefully(self) -> None:
        # close() sends what is still buffered (the refusal the client should see) before closing;
        # abort() in run()'s cleanup would drop it.
        self._writer.close()
        try:
            async with asyncio.timeout(self._settings.handshake_timeout_seconds):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError, ssl.SSLError, OSError):
            pass  # the cleanup aborts the transport anyway

    async def _flush(self) -> None:
        out = self._session.data_to_send()
        if out:
            self._writer.write(out)
            await self._writer.drain()

    async def _process_events(self) -> None:
        session = self._session
        while self._close_after_flush is None:
            event = session.next_event()
            if event is NEED_DATA:
                return
            if isinstance(event, MediaReceived):
                if self._sink is not None:
                    packet = event.packet
                    self._sink.write(packet)
                    if packet.config:
                        self._info.from_packet(packet)
                        self._push_info()
            elif isinstance(event, MetadataReceived):
                if self._sink is not None:
                    self._sink.write(event.packet)
                    self._info.from_metadata(event.values)
                    self._push_info()
            elif isinstance(event, HandshakeDone):
                self._arm_deadline(self._accepted + self._settings.preauth_timeout_seconds, "no publish in time")
            elif isinstance(event, ConnectRequested):
                self._app = event.app
                session.accept_connect()
            elif isinstance(event, PublishRequested):
                await self._publish(event)
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
                self._close_after_flush = event.reason

    def _push_info(self) -> None:
        info = self._info.merged()
        if info is not None and self._sink is not None:
            self._sink.update_info(info)

    async def _publish(self, event: PublishRequested) -> None:
        self._label = stream_label(event.name)
        request = PublishRequest(stream_key=event.name, container=ContainerFormat.FLV, publisher=self, app=self._app)
        self.at_gate = True
        try:
            await self._flush()  # the client should not wait for createStream's answer while we ask the gate
            sink = await self._gate.open_publish(request)
        except PublishRefused as exc:
            # BadName for every refusal: encoders know it, and it tells a guesser nothing more.
            self._session.reject_publish("NetStream.Publish.BadName", "Publish refused.")
            self._close_after_flush = f"publish refused ({exc.reason.value})"
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
        if self._on_publishing is not None:
            self._on_publishing(self)
        log.info("rtmp %s %s stream %s: publishing", self.transport.value, self._peer, self._label)
