"""The engine: decides who may publish, keeps live state, and keeps pushes in line with definitions.

It is the `PublishGate` behind every ingest server and the object the control API talks to. It owns
the live registry, one hub per live stream and the push supervisor (see ARCHITECTURE.md, data flow):

    ingest server --open_publish--> Relay --open_session--> Hub <--subscribe-- push (Supervisor)

Desired pushes are the active restreams of active streams, read from the store on every definition
change and every `reconcile_interval_seconds`; the supervisor starts those whose stream is live.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

import imageio_ffmpeg

from relay.config import Settings
from relay.hub.clock import LoopClock
from relay.hub.hub import (
    Hub,
    HubEvent,
    HubSettings,
    HubState,
    LiveEnded,
    LiveStarted,
    PublisherDropped,
    SourceChanged,
    SourceResumed,
)
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
from relay.ingest.srt_server import SrtAdmit, SrtPublisher, SrtServer, SrtSettings
from relay.ingest.tls import load_server_context
from relay.live import LiveSession
from relay.media.packets import MediaPacket
from relay.srt.streamid import InvalidStreamId, parse_streamid
from relay.stats import RateMeter
from relay.store.base import Store
from relay.store.models import RestreamRecord, StreamRecord
from relay.supervisor.settings import SupervisorSettings
from relay.supervisor.states import PushSpec, PushState, PushStatus
from relay.supervisor.supervisor import Supervisor

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


def _iso(wall_seconds: float | None) -> str | None:
    if wall_seconds is None:
        return None
    moment = datetime.fromtimestamp(wall_seconds, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class Relay:
    """Owns live state, the hubs, the supervisor and the ingest listeners; the API's view of media."""

    def __init__(self, settings: Settings, store: Store, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.ports = BoundPorts()
        self._live: dict[int, LiveSession] = {}
        self._last_sessions: dict[int, LiveSession] = {}
        self._listeners: list[Callable[[str, dict[str, Any]], None]] = []
        self._servers: list[RtmpServer] = []
        self._srt: SrtServer | None = None
        self._ingest_rates: dict[int, RateMeter] = {}
        self._ingest_totals: Counter[int] = Counter()
        """Bytes received per stream since start-up, across publishing sessions (for counters)."""
        self.refusals: Counter[tuple[str, str]] = Counter()
        """Publish attempts refused, by (transport, reason): for metrics."""
        self._hubs: dict[int, Hub] = {}
        self._hub_settings = HubSettings(grace_period_seconds=settings.publisher_grace_seconds)
        self.ffmpeg_path = settings.ffmpeg_path or imageio_ffmpeg.get_ffmpeg_exe()
        self.supervisor = Supervisor(SupervisorSettings(), self._hubs.get, self.ffmpeg_path, LoopClock(),
                                     self._on_push_status)
        self._specs: dict[int, PushSpec] = {}
        self._restream_clients: dict[int, int] = {}
        self._stream_clients: dict[int, int] = {}
        self._push_states: dict[int, PushState] = {}
        self._reconcile_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

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

    def check(self, streamid: str) -> SrtAdmit:
        """SrtAdmission: decide an SRT handshake on libsrt's thread, before it completes.

        Runs off the event loop, so it reads the store through its blocking reader and only reads
        live state; the loop decides again (takeover or refusal) when the gate is asked.
        """
        try:
            stream_id, token = self._stream_key(streamid, Transport.SRT)
            stream = self.store.get_stream_blocking(stream_id)
            self._check_stream(stream_id, stream, token)
            assert stream is not None
            self._silent_publisher(stream_id)  # refuses while a publisher is sending
        except PublishRefused as refused:
            self.refusals[(Transport.SRT.value, refused.reason.value)] += 1
            raise
        return SrtAdmit(stream_id=stream.id, passphrase=stream.srt_passphrase or None,
                        latency_ms=stream.srt_latency_ms)

    @staticmethod
    def _stream_key(stream_key: str, transport: Transport) -> tuple[int, str]:
        if transport is not Transport.SRT:
            return split_stream_key(stream_key)
        try:
            ident, token = parse_streamid(stream_key)
        except InvalidStreamId as exc:
            raise PublishRefused(RefusalReason.BAD_REQUEST, "malformed SRT streamid") from exc
        if not ident.isdigit() or len(ident) > 18:
            raise PublishRefused(RefusalReason.UNKNOWN_STREAM, "streamid does not name a stream")
        return int(ident), token

    @staticmethod
    def _check_stream(stream_id: int, stream: StreamRecord | None, token: str) -> None:
        if stream is None:
            raise PublishRefused(RefusalReason.UNKNOWN_STREAM, f"no stream {stream_id}")
        check_token(stream, token)
        if not stream.active:
            raise PublishRefused(RefusalReason.INACTIVE, f"stream {stream_id} is not active")

    async def _open_publish(self, request: PublishRequest) -> IngestSink:
        if self._closed:
            raise PublishRefused(RefusalReason.UNAVAILABLE, "relay is shutting down")
        stream_id, token = self._stream_key(request.stream_key, request.publisher.transport)
        stream = await self.store.get_stream(stream_id)
        self._check_stream(stream_id, stream, token)
        assert stream is not None
        self._take_over_or_refuse(stream_id)
        transport = request.publisher.transport
        source_type = SourceType.SRT if transport is Transport.SRT else SourceType.RTMP
        session = LiveSession(
            stream_id=stream_id,
            client_id=stream.client_id,
            source_type=source_type,
            started_at=datetime.now(UTC),
            publisher=request.publisher,
        )
        self._live[stream_id] = session
        self._stream_clients[stream_id] = stream.client_id
        self._ingest_rates[stream_id] = RateMeter(self.clock)
        hub = self._hubs.get(stream_id)
        if hub is None:
            hub = Hub(stream_id, self._hub_settings, LoopClock(), self._on_hub_event)
            self._hubs[stream_id] = hub
        log.info("stream %d live from %s via %s", stream_id, request.publisher.peer, transport.value)
        hub_sink = hub.open_session(request.container, source_type, transport)
        self._emit_live(stream_id)
        return _SessionSink(self, stream_id, session, hub_sink)

    def _silent_publisher(self, stream_id: int) -> LiveSession | None:
        """The one rule for a second publisher: refused while the current one sends; a current one silent
        for `takeover_idle_seconds` (a crashed encoder) is returned, to be replaced."""
        current = self._live.get(stream_id)
        if current is None or current.publisher is None:
            return None
        if current.publisher.idle_seconds() < self.settings.takeover_idle_seconds:
            raise PublishRefused(RefusalReason.ALREADY_LIVE, f"stream {stream_id} already has a publisher")
        return current

    def _take_over_or_refuse(self, stream_id: int) -> None:
        current = self._silent_publisher(stream_id)
        if current is None or current.publisher is None:
            return
        log.warning("stream %d: publisher silent for %.1f s, the newcomer takes over", stream_id,
                    current.publisher.idle_seconds())
        current.publisher.disconnect(EndReason.KICKED)
        # Not KICKED towards the hub: the newcomer's session replaces this one as a reconnect would.
        self._session_ended(stream_id, current, EndReason.DROP)

    def _session_ended(self, stream_id: int, session: LiveSession, reason: EndReason) -> None:
        if self._live.get(stream_id) is not session:
            return  # already replaced by a newer session
        del self._live[stream_id]
        self._ingest_rates.pop(stream_id, None)
        self._last_sessions[stream_id] = replace(session, publisher=None,
                                                 finished_at=datetime.now(UTC))
        log.info("stream %d publishing ended (%s)", stream_id, reason.value)
        self._emit_live(stream_id, reason.value)

    def _update_info(self, stream_id: int, session: LiveSession, info: StreamInfo) -> LiveSession:
        if self._live.get(stream_id) is session:
            session = session.with_info(info)
            self._live[stream_id] = session
            self._emit("stream.info", {"client_id": session.client_id, "stream_id": stream_id,
                                       "video_width": info.video_width, "video_height": info.video_height,
                                       "frame_rate": info.frame_rate})
        return session

    def _count_ingest(self, stream_id: int, size: int) -> None:
        self._ingest_totals[stream_id] += size
        meter = self._ingest_rates.get(stream_id)
        if meter is not None:
            meter.add(size)

    # Hub and push events ----------------------------------------------------------------------
    def _on_hub_event(self, event: HubEvent) -> None:
        stream_id = event.stream_id
        if isinstance(event, LiveStarted):
            self._sync_pushes()
        elif isinstance(event, LiveEnded):
            # The hub is idle with an empty GOP cache; dropping it guarantees no stale replay later.
            hub = self._hubs.get(stream_id)
            if hub is not None and hub.state is HubState.IDLE:
                del self._hubs[stream_id]
            log.info("stream %d: pushes end (%s)", stream_id, event.reason.value)
            self._sync_pushes()
            self._emit_live(stream_id, event.reason.value)
        elif isinstance(event, PublisherDropped):
            log.info("stream %d: holding destinations for %.0f s", stream_id, event.grace_period_seconds)
        elif isinstance(event, SourceResumed):
            log.info("stream %d: publisher back, destinations continue (offset %d ms)", stream_id,
                     event.timestamp_offset_ms)
        elif isinstance(event, SourceChanged):
            log.info("stream %d: publisher back with another configuration, pushes restart", stream_id)

    def _on_push_status(self, restream_id: int, status: PushStatus) -> None:
        previous = self._push_states.get(restream_id)
        self._push_states[restream_id] = status.state
        if previous is status.state:
            return  # progress ticks arrive every second; observers get state changes
        client_id = self._restream_clients.get(restream_id)
        if client_id is not None:
            self._emit("restream.status", {"client_id": client_id, "stream_id": status.stream_id,
                                           "restream_id": restream_id, "status": self._status_body(status)})

    def _emit_live(self, stream_id: int, reason: str | None = None) -> None:
        client_id = self._stream_clients.get(stream_id)
        if client_id is None:
            return
        payload: dict[str, Any] = {"client_id": client_id, "stream_id": stream_id,
                                   "live": self.is_live(stream_id), "state": self._stream_state(stream_id)}
        if reason:
            payload["reason"] = reason
        self._emit("stream.live", payload)

    # What the API asks -------------------------------------------------------------------------
    def live_session(self, stream_id: int) -> LiveSession | None:
        """The session now publishing, or else the last one since start-up (for its times and source)."""
        return self._live.get(stream_id) or self._last_sessions.get(stream_id)

    def live_count(self) -> int:
        return sum(1 for stream_id in set(self._live) | set(self._hubs) if self.is_live(stream_id))

    def is_live(self, stream_id: int) -> bool:
        """A publisher is connected, or one dropped and the destinations are held for its return."""
        hub = self._hubs.get(stream_id)
        return stream_id in self._live or (hub is not None and hub.live)

    def _stream_state(self, stream_id: int) -> str:
        if stream_id in self._live:
            return "live"
        return "reconnecting" if self.is_live(stream_id) else "offline"

    def stream_status(self, stream_id: int) -> dict[str, Any]:
        """Extension object on a stream: what the ingest sees of the source."""
        session = self._live.get(stream_id)
        meter = self._ingest_rates.get(stream_id)
        total = self._ingest_totals.get(stream_id, 0)
        if session is None or meter is None:
            return {"state": self._stream_state(stream_id), "transport": None, "video_codec": None,
                    "audio_codec": None, "bitrate_kbps": 0, "bytes_in": 0, "bytes_in_total": total,
                    "uptime_seconds": 0}
        body: dict[str, Any] = {
            "state": "live",
            "transport": session.publisher.transport.value if session.publisher else None,
            "video_codec": session.info.video_codec,
            "audio_codec": session.info.audio_codec,
            "bitrate_kbps": meter.bitrate_kbps(),
            "bytes_in": meter.total_bytes,
            "bytes_in_total": total,
            "uptime_seconds": round(self.clock() - meter.started_at, 1),
        }
        if isinstance(session.publisher, SrtPublisher):
            link = session.publisher.link_stats()
            if link is not None:
                body["srt"] = {
                    "rtt_ms": round(link.rtt_ms, 2), "recv_rate_mbps": round(link.recv_rate_mbps, 3),
                    "latency_ms": link.latency_ms, "packets_received": link.pkt_received_total,
                    "packets_lost": link.pkt_recv_loss_total, "packets_dropped": link.pkt_recv_drop_total,
                    "packets_retransmitted": link.pkt_recv_retrans_total,
                    "encrypted": session.publisher.encrypted,
                }
        return body

    def restream_status(self, restream: RestreamRecord) -> dict[str, Any]:
        """Extension object on a restream: its push's observed state (never secrets)."""
        status = self.supervisor.status(restream.id)
        body = self._status_body(status)
        if not restream.active or (restream.id not in self._specs and status.state is PushState.DISABLED):
            # Not supervised: switched off, or its stream is inactive. No push, so no "since" either.
            body.update(state="disabled" if not restream.active else "idle", since=None)
        return body

    def _status_body(self, status: PushStatus) -> dict[str, Any]:
        running = status.state is PushState.RUNNING
        return {
            "state": status.state.value,
            "since": _iso(status.since),
            "uptime_seconds": round(max(0.0, time.time() - status.since), 1) if running else 0,
            "bitrate_kbps": round(status.bitrate_kbps or 0) if running else 0,
            "bytes": status.bytes_out,
            "frames": status.frames,
            "restarts": status.restarts,
            "last_error": status.last_error,
            "next_retry_seconds": status.next_retry_seconds,
            "log_tail": list(status.log_tail),
        }

    def push_urls(self, stream: StreamRecord) -> dict[str, str | None]:
        host = self.settings.public_host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        rtmp_port = self.ports.rtmp or self.settings.rtmp_port
        srt_port = self.ports.srt if self._srt is not None and self._srt.enabled else None
        urls: dict[str, str | None] = {
            "push_url": f"rtmp://{host}:{rtmp_port}/in/{stream.id}?{stream.token}",
            # Null while SRT ingest is off (disabled, or libsrt missing): no URL that cannot work.
            "push_url_srt": f"srt://{host}:{srt_port}?streamid={stream.id}#{stream.token}" if srt_port else None,
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
            self.end_stream(stream.id)
        await self.reconcile()

    async def stream_deleted(self, stream_id: int) -> None:
        self.end_stream(stream_id)
        self._last_sessions.pop(stream_id, None)
        self._ingest_totals.pop(stream_id, None)
        await self.reconcile()

    async def restream_changed(self, before: RestreamRecord | None, after: RestreamRecord | None) -> None:
        """A restream was created, updated or deleted: only that push starts, stops or restarts."""
        await self.reconcile()
        if after is not None and after.active and (before is None or not before.active):
            self.supervisor.retry_now(after.id)  # switched on: no waiting out a backoff

    def end_stream(self, stream_id: int) -> None:
        """Disconnect the publisher and end the pushes at once (no grace: the stream is gone)."""
        session = self._live.get(stream_id)
        if session is not None and session.publisher is not None:
            session.publisher.disconnect(EndReason.KICKED)
            self._session_ended(stream_id, session, EndReason.KICKED)
        hub = self._hubs.get(stream_id)
        if hub is not None and hub.live:
            hub.close()

    async def reconcile(self) -> None:
        """Read what should push from the store and bring the supervisor in line with it."""
        async with self._reconcile_lock:
            records = await self.store.active_restreams()
            self._specs = {
                r.id: PushSpec(restream_id=r.id, stream_id=r.stream_id, uri=r.uri, no_audio=r.no_audio,
                               no_audio_mode=r.no_audio_mode, tls_verify=r.tls_verify)
                for r in records
            }
            self._restream_clients.update({r.id: r.client_id for r in records})
            self._sync_pushes()

    def _sync_pushes(self) -> None:
        if not self._closed:
            self.supervisor.reconcile(self._specs.values())

    async def _reconcile_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.reconcile_interval_seconds)
            try:
                await self.reconcile()
            except Exception:  # the store may be briefly locked by another process; next round retries
                log.exception("periodic reconcile failed")

    # Lifecycle ---------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the supervisor and the ingest listeners; on failure, what was started is closed."""
        settings = self.settings
        rtmp_settings = RtmpServerSettings(host=settings.media_bind, port=settings.rtmp_port,
                                           takeover_idle_seconds=settings.takeover_idle_seconds)
        try:
            await self.reconcile()
            self._spawn(self._reconcile_periodically())
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
            if settings.srt_enabled:
                srt = SrtServer(self, self, SrtSettings(
                    host=settings.media_bind, port=settings.srt_port, latency_ms=settings.srt_latency_ms,
                    max_connections=settings.srt_max_connections,
                    handshake_timeout_seconds=settings.srt_handshake_timeout_seconds))
                self._srt = srt
                if await srt.start():
                    self.ports = replace(self.ports, srt=srt.port)
            else:
                log.info("SRT ingest off (RELAY_SRT=off)")
        except BaseException:
            await self.close()
            raise

    def _spawn(self, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Stop listening, end every publishing session and hub, then stop every push. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        servers, self._servers = self._servers, []
        for server in servers:
            await server.close()
        srt, self._srt = self._srt, None
        if srt is not None:
            await srt.close()
        for stream_id in list(self._live):
            self.end_stream(stream_id)
        for hub in list(self._hubs.values()):
            hub.close()
        await self.supervisor.close()


class _SessionSink:
    """The sink one publishing connection writes into: counts, then hands media to the stream's hub."""

    def __init__(self, relay: Relay, stream_id: int, session: LiveSession, hub_sink: IngestSink) -> None:
        self._relay = relay
        self._stream_id = stream_id
        self._session = session
        self._hub_sink = hub_sink
        self._closed = False

    def write(self, packet: MediaPacket) -> None:
        if self._closed:
            return
        self._relay._count_ingest(self._stream_id, len(packet.payload))
        self._hub_sink.write(packet)

    def update_info(self, info: StreamInfo) -> None:
        self._session = self._relay._update_info(self._stream_id, self._session, info)
        self._hub_sink.update_info(info)

    def close(self, reason: EndReason) -> None:
        if self._closed:
            return
        self._closed = True
        self._hub_sink.close(reason)
        self._relay._session_ended(self._stream_id, self._session, reason)
