"""The engine: decides who may publish, keeps live state, and keeps pushes in line with definitions.

It is the `PublishGate` behind every ingest server and the object the control API talks to. It owns
the live registry; hubs and the push supervisor hang off it (see ARCHITECTURE.md, data flow).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from relay.config import Settings
from relay.ingest.gate import (
    EndReason,
    IngestSink,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    SourceType,
    StreamInfo,
    Transport,
)
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.ingest.tls import load_server_context
from relay.live import LiveSession
from relay.media.packets import ContainerFormat, MediaPacket
from relay.stats import RateMeter
from relay.store.base import Store
from relay.store.models import RestreamRecord, StreamRecord

log = logging.getLogger("relay.engine")


@dataclass(frozen=True, slots=True)
class BoundPorts:
    """Ports the listeners really bound (differs from settings when those say 0)."""

    http: int | None = None
    rtmp: int | None = None
    rtmps: int | None = None
    srt: int | None = None


def split_stream_key(stream_key: str) -> tuple[int, str]:
    """`<id>?<token>` (RTMP) or `<id>#<token>` (SRT, after parsing) -> (id, token); raises PublishRefused."""
    key = stream_key.strip()
    for separator in ("?", "#", "%23"):
        if separator in key:
            ident, _, token = key.partition(separator)
            break
    else:
        raise PublishRefused(RefusalReason.BAD_REQUEST, "stream key has no token")
    ident = unquote(ident).rsplit("/", 1)[-1]
    if not ident.isdigit() or len(ident) > 18:
        raise PublishRefused(RefusalReason.UNKNOWN_STREAM, "stream key does not name a stream")
    return int(ident), unquote(token)


def check_token(stream: StreamRecord, token: str) -> None:
    if not hmac.compare_digest(stream.token.encode(), token.encode()):
        raise PublishRefused(RefusalReason.BAD_TOKEN, f"wrong token for stream {stream.id}")


class Relay:
    """Owns live state and the link between definitions (store) and media (ingest, hubs, pushes)."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.ports = BoundPorts()
        self._live: dict[int, LiveSession] = {}
        self._last_sessions: dict[int, LiveSession] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._servers: list[RtmpServer] = []
        self._ingest_rates: dict[int, RateMeter] = {}
        self.refusals: Counter[tuple[str, str]] = Counter()
        """Publish attempts refused, by (transport, reason): for metrics."""

    # Events for observers (API event feed, metrics) -------------------------------------------
    def add_listener(self, listener: Callable[[str, dict[str, Any]], None]) -> Callable[[], None]:
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        for listener in list(self._listeners):
            try:
                listener(kind, payload)
            except Exception:  # an observer's bug must not break publishing
                log.exception("event listener failed")

    # PublishGate ------------------------------------------------------------------------------
    async def open_publish(self, request: PublishRequest) -> IngestSink:
        try:
            return await self._open_publish(request)
        except PublishRefused as refused:
            self.refusals[(request.publisher.transport.value, refused.reason.value)] += 1
            raise

    def count_refusal(self, transport: Transport, reason: RefusalReason) -> None:
        """For refusals decided before the gate (connection limits, SRT handshake rejections)."""
        self.refusals[(transport.value, reason.value)] += 1

    async def _open_publish(self, request: PublishRequest) -> IngestSink:
        stream_id, token = split_stream_key(request.stream_key)
        stream = await self.store.get_stream(stream_id)
        if stream is None:
            raise PublishRefused(RefusalReason.UNKNOWN_STREAM, f"no stream {stream_id}")
        check_token(stream, token)
        if not stream.active:
            raise PublishRefused(RefusalReason.INACTIVE, f"stream {stream_id} is not active")
        self._take_over_or_refuse(stream_id)
        transport = request.publisher.transport
        session = LiveSession(
            stream_id=stream_id,
            client_id=stream.client_id,
            source_type=SourceType.SRT if transport is Transport.SRT else SourceType.RTMP,
            started_at=datetime.now(UTC),
            publisher=request.publisher,
        )
        self._live[stream_id] = session
        self._ingest_rates[stream_id] = RateMeter(self.clock)
        log.info("stream %d live from %s via %s", stream_id, request.publisher.peer, transport.value)
        self._emit("stream.live", {"client_id": stream.client_id, "stream_id": stream_id, "live": True,
                                   "transport": transport.value})
        return _SessionSink(self, stream_id, request.container, session)

    def _take_over_or_refuse(self, stream_id: int) -> None:
        current = self._live.get(stream_id)
        if current is None or current.publisher is None:
            return
        idle = current.publisher.idle_seconds()
        if idle < self.settings.takeover_idle_seconds:
            raise PublishRefused(RefusalReason.ALREADY_LIVE, f"stream {stream_id} already has a publisher")
        log.warning("stream %d: publisher silent for %.1f s, the newcomer takes over", stream_id, idle)
        current.publisher.disconnect(EndReason.KICKED)
        self._session_ended(stream_id, current, EndReason.KICKED)

    def _session_ended(self, stream_id: int, session: LiveSession, reason: EndReason) -> None:
        if self._live.get(stream_id) is not session:
            return  # already replaced by a newer session
        del self._live[stream_id]
        self._last_sessions[stream_id] = replace(session, live=False, publisher=None,
                                                 finished_at=datetime.now(UTC))
        self._ingest_rates.pop(stream_id, None)
        log.info("stream %d publishing ended (%s)", stream_id, reason.value)
        self._emit("stream.live", {"client_id": session.client_id, "stream_id": stream_id, "live": False,
                                   "reason": reason.value})

    def _update_info(self, stream_id: int, session: LiveSession, info: StreamInfo) -> LiveSession:
        if self._live.get(stream_id) is session:
            session = session.with_info(info)
            self._live[stream_id] = session
            self._emit("stream.info", {"client_id": session.client_id, "stream_id": stream_id,
                                       "video_width": info.video_width, "video_height": info.video_height,
                                       "frame_rate": info.frame_rate})
        return session

    def _count_ingest(self, stream_id: int, size: int) -> None:
        meter = self._ingest_rates.get(stream_id)
        if meter is not None:
            meter.add(size)

    # What the API asks -------------------------------------------------------------------------
    def live_session(self, stream_id: int) -> LiveSession | None:
        """The session now publishing, or else the last one since start-up (with live=False)."""
        return self._live.get(stream_id) or self._last_sessions.get(stream_id)

    def live_count(self) -> int:
        return len(self._live)

    def is_live(self, stream_id: int) -> bool:
        return stream_id in self._live

    def stream_status(self, stream_id: int) -> dict[str, Any]:
        """Extension object on a stream: what the ingest sees of the source."""
        session = self._live.get(stream_id)
        meter = self._ingest_rates.get(stream_id)
        if session is None or meter is None:
            return {"state": "offline", "transport": None, "video_codec": None, "audio_codec": None,
                    "bitrate_kbps": 0, "bytes_in": 0, "uptime_seconds": 0}
        return {
            "state": "live",
            "transport": session.publisher.transport.value if session.publisher else None,
            "video_codec": session.info.video_codec,
            "audio_codec": session.info.audio_codec,
            "bitrate_kbps": meter.bitrate_kbps(),
            "bytes_in": meter.total_bytes,
            "uptime_seconds": round(self.clock() - meter.started_at, 1),
        }

    def restream_status(self, restream: RestreamRecord) -> dict[str, Any]:
        state = "disabled" if not restream.active else "idle"
        return {"state": state, "since": None, "bitrate_kbps": 0, "bytes": 0, "restarts": 0,
                "last_error": None}

    def push_urls(self, stream: StreamRecord) -> dict[str, str | None]:
        host = self.settings.public_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        rtmp_port = self.ports.rtmp or self.settings.rtmp_port
        srt_port = self.ports.srt or self.settings.srt_port
        urls: dict[str, str | None] = {
            "push_url": f"rtmp://{host}:{rtmp_port}/in/{stream.id}?{stream.token}",
            "push_url_srt": f"srt://{host}:{srt_port}?streamid={stream.id}#{stream.token}",
            "push_url_rtmps": None,
        }
        if self.settings.rtmps_enabled:
            rtmps_port = self.ports.rtmps or self.settings.rtmps_port
            urls["push_url_rtmps"] = f"rtmps://{host}:{rtmps_port}/in/{stream.id}?{stream.token}"
        return urls

    # Definition changes ------------------------------------------------------------------------
    async def stream_changed(self, stream: StreamRecord) -> None:
        """A stream was updated: an inactive stream refuses publishers and stops its pushes."""
        if not stream.active:
            self.disconnect_publisher(stream.id)
        await self.reconcile()

    async def stream_deleted(self, stream_id: int) -> None:
        self.disconnect_publisher(stream_id)
        self._last_sessions.pop(stream_id, None)
        await self.reconcile()

    async def restreams_changed(self, stream_id: int) -> None:
        await self.reconcile()

    def disconnect_publisher(self, stream_id: int) -> None:
        session = self._live.get(stream_id)
        if session is not None and session.publisher is not None:
            session.publisher.disconnect(EndReason.KICKED)
            self._session_ended(stream_id, session, EndReason.KICKED)

    async def reconcile(self) -> None:
        """Bring running pushes in line with definitions and live state (pushes arrive with the hub)."""

    async def start(self) -> None:
        """Start the ingest listeners; on failure, whatever was started is closed again."""
        settings = self.settings
        rtmp_settings = RtmpServerSettings(host=settings.media_bind, port=settings.rtmp_port,
                                           takeover_idle_seconds=settings.takeover_idle_seconds)
        try:
            rtmp = RtmpServer(self, rtmp_settings)
            await rtmp.start()
            self._servers.append(rtmp)
            rtmps_port: int | None = None
            if settings.tls_cert_file is not None and settings.tls_key_file is not None:
                context = load_server_context(settings.tls_cert_file, settings.tls_key_file)
                rtmps = RtmpServer(self, replace(rtmp_settings, port=settings.rtmps_port), ssl_context=context)
                await rtmps.start()
                self._servers.append(rtmps)
                rtmps_port = rtmps.port
            self.ports = replace(self.ports, rtmp=rtmp.port, rtmps=rtmps_port)
            log.info("RTMP ingest on %s:%d%s", settings.media_bind, rtmp.port,
                     f", RTMPS on port {rtmps_port}" if rtmps_port else "")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Stop listening, end every publishing session, then stop the pushes. Idempotent."""
        servers, self._servers = self._servers, []
        for server in servers:
            await server.close()
        for stream_id in list(self._live):
            self.disconnect_publisher(stream_id)


class _SessionSink:
    """The sink one publishing connection writes into; forwards to the stream's hub."""

    def __init__(self, relay: Relay, stream_id: int, container: ContainerFormat, session: LiveSession) -> None:
        self._relay = relay
        self._stream_id = stream_id
        self._container = container
        self._session = session
        self._closed = False

    def write(self, packet: MediaPacket) -> None:
        if self._closed:
            return
        self._relay._count_ingest(self._stream_id, len(packet.payload))

    def update_info(self, info: StreamInfo) -> None:
        self._session = self._relay._update_info(self._stream_id, self._session, info)

    def close(self, reason: EndReason) -> None:
        if self._closed:
            return
        self._closed = True
        self._relay._session_ended(self._stream_id, self._session, reason)
