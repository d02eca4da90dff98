"""The RTMP/RTMPS publishing server: a thin asyncio layer over `relay.rtmp.session.ServerSession`.

Each connection is one task owned by the server.  It reads at most `read_chunk_bytes` at a time and
processes them fully (events to the gate's sink) before reading again, so a publisher can never get
ahead of us: asyncio's StreamReader pauses the socket when its small buffer fills.  Whatever goes
wrong with one client ends that client's connection with one log line and nothing else.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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
from relay.media.avc import sps_from_flv_video
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from relay.rtmp.amf0 import AmfLimits
from relay.rtmp.chunks import ChunkLimits
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
from relay.rtmp.session import ServerSession, SessionConfig

log = logging.getLogger("relay.ingest.rtmp")


@dataclass(frozen=True, slots=True)
class RtmpServerSettings:
    """Where the server listens and what it tolerates from a client."""

    host: str = "0.0.0.0"
    """Listen address (tests use 127.0.0.1)."""
    port: int = 1935
    """Listen port; 0 picks a free one (see `RtmpServer.port`)."""
    handshake_timeout_seconds: float = 10.0
    """From accept to the end of the RTMP handshake (and the TLS handshake for RTMPS)."""
    publish_timeout_seconds: float = 30.0
    """From the end of the handshake to an accepted publish: a client may not idle in between."""
    idle_timeout_seconds: float = 30.0
    """Longest silence from a connected client."""
    max_message_bytes: int = 8 << 20
    """Largest RTMP message accepted."""
    max_chunk_size_bytes: int = 1 << 20
    """Largest Set Chunk Size accepted."""
    max_partial_bytes: int = 16 << 20
    """Bytes held in partially received messages of one connection."""
    max_connections: int = 256
    """Open connections in total; more are closed at once."""
    max_connections_per_address: int = 16
    """Open connections from one IP address."""
    takeover_idle_seconds: float = 4.0
    """How long a live publisher must be silent before a newcomer may take its stream over.

    The gate makes that decision with `PublisherHandle.idle_seconds()`; this value is here so the
    application configures it in one place and hands it to the gate."""
    read_chunk_bytes: int = 64 * 1024
    """Most bytes read from a socket before processing them."""
    amf_limits: AmfLimits = field(default_factory=AmfLimits)
    """Bounds on AMF0 decoding (nesting, element count, string size)."""

    def session_config(self) -> SessionConfig:
        """The sans-I/O session's limits derived from these settings."""
        return SessionConfig(
            chunk_limits=ChunkLimits(max_chunk_size_bytes=self.max_chunk_size_bytes,
                                     max_message_bytes=self.max_message_bytes,
                                     max_partial_bytes=self.max_partial_bytes),
            amf_limits=self.amf_limits,
            max_buffered_bytes=self.read_chunk_bytes + 4096,
        )


_VIDEO_CODECS = {2: "h263", 4: "vp6", 5: "vp6a", 7: "h264", 12: "hevc", 13: "av1"}
_AUDIO_CODECS = {2: "mp3", 10: "aac", 11: "speex", 14: "mp3", 1: "adpcm", 3: "pcm", 7: "g711a", 8: "g711u"}
_FOURCC_CODECS = {"avc1": "h264", "hvc1": "hevc", "av01": "av1", "vp09": "vp9", "vp08": "vp8",
                  "opus": "opus", "mp4a": "aac", ".mp3": "mp3", "ac-3": "ac3", "ec-3": "eac3", "flac": "flac"}


def _codec_name(value: Any, legacy: dict[int, str]) -> str | None:
    if isinstance(value, str):
        return _FOURCC_CODECS.get(value.lower(), value.lower())
    if isinstance(value, float | int) and value >= 0:
        number = int(value)
        if number > 255:  # enhanced RTMP writes the FourCC as a 32-bit number
            fourcc = number.to_bytes(4, "big").decode("latin-1").lower()
            return _FOURCC_CODECS.get(fourcc, fourcc)
        return legacy.get(number)
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, float | int) and 0 < value < 1 << 20:
        return int(value)
    return None


def stream_label(stream_key: str) -> str:
    """The part of a stream key that may be logged (the id before '?'), shortened."""
    return stream_key.split("?", 1)[0][:64]


class _InfoTracker:
    """Builds StreamInfo from metadata first, the AVC SPS and first tags second."""

    def __init__(self) -> None:
        self.meta = StreamInfo()
        self.sps = StreamInfo()
        self.current = StreamInfo()

    def from_metadata(self, values: dict[str, Any]) -> None:
        frame_rate = values.get("framerate", values.get("videoframerate"))
        encoder = values.get("encoder")
        self.meta = StreamInfo(
            video_width=_positive_int(values.get("width")),
            video_height=_positive_int(values.get("height")),
            frame_rate=float(frame_rate) if isinstance(frame_rate, float | int) and frame_rate > 0 else None,
            video_codec=_codec_name(values.get("videocodecid"), _VIDEO_CODECS),
            audio_codec=_codec_name(values.get("audiocodecid"), _AUDIO_CODECS),
            extra={"encoder": encoder[:128]} if isinstance(encoder, str) else {},
        )

    def from_packet(self, packet: MediaPacket) -> None:
        payload = packet.payload
        if not packet.config or len(payload) < 5:
            return
        if packet.kind is MediaKind.VIDEO:
            if payload[0] & 0x80:
                codec = _codec_name(payload[1:5].decode("latin-1"), {})
            else:
                codec = _VIDEO_CODECS.get(payload[0] & 0x0F)
            sps = sps_from_flv_video(payload)
            self.sps = StreamInfo(
                video_width=sps.width if sps else self.sps.video_width,
                video_height=sps.height if sps else self.sps.video_height,
                frame_rate=sps.frame_rate if sps else self.sps.frame_rate,
                video_codec=codec, audio_codec=self.sps.audio_codec)
        elif packet.kind is MediaKind.AUDIO:
            sound_format = payload[0] >> 4
            codec = (_codec_name(payload[1:5].decode("latin-1"), {}) if sound_format == 9
                     else _AUDIO_CODECS.get(sound_format))
            self.sps = StreamInfo(self.sps.video_width, self.sps.video_height, self.sps.frame_rate,
                                  self.sps.video_codec, codec)

    def merged(self) -> StreamInfo | None:
        """The combined info if it changed since the last call, else None."""
        m, s = self.meta, self.sps
        info = StreamInfo(
            video_width=m.video_width or s.video_width,
            video_height=m.video_height or s.video_height,
            frame_rate=m.frame_rate or s.frame_rate,
            video_codec=m.video_codec or s.video_codec,
            audio_codec=m.audio_codec or s.audio_codec,
            extra=dict(m.extra),
        )
        if info == self.current:
            return None
        self.current = info
        return info


class _ConnectionClosed(Exception):
    """Internal: end this connection with the given log reason."""

    def __init__(self, reason: str, *, warn: bool = True) -> None:
        super().__init__(reason)
        self.warn = warn


class RtmpConnection:
    """One client connection: owns its session, its sink while publishing, and the socket.

    It is the `PublisherHandle` the gate sees.
    """

    def __init__(self, server: RtmpServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 peer: str, address: str) -> None:
        self._server = server
        self._reader = reader
        self._writer = writer
        self._peer = peer
        self.address = address
        """The peer's IP address (for per-address limits)."""
        self._loop = asyncio.get_running_loop()
        self._last_receive = self._loop.time()
        self._kick_reason: EndReason | None = None
        self._sink: IngestSink | None = None
        self._label = ""
        self._app = ""
        self._info = _InfoTracker()
        settings = server.settings
        self._session = ServerSession(settings.session_config(),
                                      epoch_ms=int(self._loop.time() * 1000))
        self._deadline: float | None = self._last_receive + settings.handshake_timeout_seconds
        self._deadline_reason = "handshake timeout"
        self._close_after_flush: str | None = None

    # -- PublisherHandle -----------------------------------------------------------------------------

    @property
    def transport(self) -> Transport:
        """RTMP or RTMPS."""
        return self._server.transport

    @property
    def peer(self) -> str:
        """`host:port` of the client."""
        return self._peer

    def idle_seconds(self) -> float:
        """Seconds since the client last sent any byte."""
        return max(0.0, self._loop.time() - self._last_receive)

    def disconnect(self, reason: EndReason) -> None:
        """Close soon; the sink is then closed with `reason` (idempotent, non-blocking)."""
        if self._kick_reason is None:
            self._kick_reason = reason
            # Aborting makes the pending read (or drain) end at once; run() does the rest.
            self._writer.transport.abort()

    # -- the connection's task -----------------------------------------------------------------------

    async def run(self) -> None:
        """Serve the client until it leaves, breaks a rule or is kicked; cleans up in every case."""
        reason, warn = "closed by peer", False
        end = EndReason.DROP
        try:
            await self._serve()
        except _ConnectionClosed as exc:
            reason, warn = str(exc), exc.warn
        except ProtocolError as exc:
            reason, warn = f"protocol error: {exc}", True
        except TimeoutError:
            reason, warn = self._deadline_reason if self._deadline is not None else "idle timeout", True
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
            self._close_sink(end)
            self._writer.transport.abort()
            label = f" stream {self._label}" if self._label else ""
            log.log(logging.WARNING if warn else logging.INFO, "rtmp %s %s%s: %s",
                    self.transport.value, self._peer, label, reason)

    def _close_sink(self, reason: EndReason) -> None:
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close(reason)

    async def _serve(self) -> None:
        settings = self._server.settings
        session = self._session
        while True:
            timeout = settings.idle_timeout_seconds
            if self._deadline is not None:
                timeout = min(timeout, self._deadline - self._loop.time())
            async with asyncio.timeout(max(timeout, 0.0)):
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
            async with asyncio.timeout(self._server.settings.handshake_timeout_seconds):
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
                self._deadline = self._loop.time() + self._server.settings.publish_timeout_seconds
                self._deadline_reason = "no publish in time"
            elif isinstance(event, ConnectRequested):
                self._app = event.app
                session.accept_connect()
            elif isinstance(event, PublishRequested):
                await self._publish(event)
            elif isinstance(event, Unpublished):
                log.info("rtmp %s %s stream %s: unpublished (%s)", self.transport.value, self._peer,
                         self._label, event.command)
                self._close_sink(EndReason.UNPUBLISH)
            elif isinstance(event, CloseRequested):
                self._close_after_flush = event.reason

    def _push_info(self) -> None:
        info = self._info.merged()
        if info is not None and self._sink is not None:
            self._sink.update_info(info)

    async def _publish(self, event: PublishRequested) -> None:
        self._label = stream_label(event.name)
        await self._flush()  # the client should not wait for createStream's answer while we ask the gate
        request = PublishRequest(stream_key=event.name, container=ContainerFormat.FLV, publisher=self,
                                 app=self._app)
        try:
            sink = await self._server.gate.open_publish(request)
        except PublishRefused as exc:
            # BadName for every refusal: encoders know it, and it tells a guesser nothing more.
            self._session.reject_publish("NetStream.Publish.BadName", "Publish refused.")
            self._close_after_flush = f"publish refused ({exc.reason.value})"
            return
        if self._kick_reason is not None:  # kicked while the gate was deciding
            sink.close(self._kick_reason)
            raise _ConnectionClosed("disconnected while publishing started", warn=False)
        self._sink = sink
        self._session.accept_publish()
        self._deadline = None
        log.info("rtmp %s %s stream %s: publishing", self.transport.value, self._peer, self._label)


class RtmpServer:
    """Owns the listening socket and one task per connection; `close()` ends them all and waits.

    Use as ``async with RtmpServer(gate, settings) as server: ...`` or call start()/close().
    With `ssl_context` it is the RTMPS listener.
    """

    def __init__(self, gate: PublishGate, settings: RtmpServerSettings | None = None,
                 ssl_context: ssl.SSLContext | None = None,
                 on_refused: Callable[[Transport, RefusalReason], None] | None = None) -> None:
        self.gate = gate
        self._on_refused = on_refused
        """Told of the refusals decided here, before the gate (connection limits): for metrics."""
        self.settings = settings or RtmpServerSettings()
        self.ssl_context = ssl_context
        self.transport = Transport.RTMPS if ssl_context is not None else Transport.RTMP
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[RtmpConnection] = set()
        self._per_address: dict[str, int] = {}
        self._closed = False

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connection_count(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None or self._closed:
            raise RuntimeError("server already started or closed")
        self._server = await asyncio.start_server(
            self._on_client, self.settings.host, self.settings.port, ssl=self.ssl_context,
            ssl_handshake_timeout=self.settings.handshake_timeout_seconds if self.ssl_context else None,
            limit=self.settings.read_chunk_bytes)
        log.info("rtmp %s listening on %s:%d", self.transport.value, self.settings.host, self.port)

    async def close(self) -> None:
        """Stop listening, end every connection (sinks closed as DROP) and wait; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if peername else "?"
        peer = f"{address}:{peername[1]}" if peername else "?"
        if self._closed:
            writer.transport.abort()
            return
        if len(self._connections) >= self.settings.max_connections:
            log.warning("rtmp %s %s: refused: too many connections", self.transport.value, peer)
            self._refuse(writer)
            return
        if self._per_address.get(address, 0) >= self.settings.max_connections_per_address:
            log.warning("rtmp %s %s: refused: too many connections from this address",
                        self.transport.value, peer)
            self._refuse(writer)
            return
        connection = RtmpConnection(self, reader, writer, peer, address)
        self._connections.add(connection)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(connection), name=f"rtmp {peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()
        if self._on_refused is not None:
            self._on_refused(self.transport, RefusalReason.CONNECTION_LIMIT)

    async def _run(self, connection: RtmpConnection) -> None:
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            left = self._per_address.get(connection.address, 1) - 1
            if left:
                self._per_address[connection.address] = left
            else:
                self._per_address.pop(connection.address, None)
