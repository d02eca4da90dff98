"""JSON at the edge: the API's bodies made from store records and the engine's typed snapshots.

The engine hands out dataclasses (relay/engine/status.py, relay/engine/events.py); only here do they
become the dictionaries Gcore's clients, the event feed and the dashboard read.
"""

from __future__ import annotations

from typing import Any

from api.schemas import iso
from relay.engine import Engine
from relay.engine.events import (
    EngineEvent,
    InputSwitched,
    RemoteRestreamChanged,
    RemoteStreamChanged,
    RestreamStateChanged,
    StreamInfoChanged,
    StreamLiveChanged,
)
from relay.engine.status import IngestStatus, RestreamStatus, StreamSnapshot
from relay.ingest.addresses import IngestAddresses
from relay.pull.runner import PullStatus
from relay.srt.caller import SendStats
from relay.store.models import GcoreSettings, RestreamRecord, StreamRecord


def ingest_status_body(status: IngestStatus) -> dict[str, Any]:
    """The extension `status` of a stream."""
    body: dict[str, Any] = {
        "state": status.state.value,
        "transport": status.transport.value if status.transport is not None else None,
        "video_codec": status.video_codec,
        "audio_codec": status.audio_codec,
        "bitrate_kbps": status.bitrate_kbps,
        "bytes_in": status.bytes_in,
        "bytes_in_total": status.bytes_in_total,
        "uptime_seconds": status.uptime_seconds,
    }
    link = status.srt
    if link is not None:
        body["srt"] = {
            "rtt_ms": link.rtt_ms,
            "recv_rate_mbps": link.recv_rate_mbps,
            "latency_ms": link.latency_ms,
            "packets_received": link.packets_received,
            "packets_lost": link.packets_lost,
            "packets_dropped": link.packets_dropped,
            "packets_retransmitted": link.packets_retransmitted,
            "encrypted": link.encrypted,
        }
    return body


def pull_status_body(status: PullStatus) -> dict[str, Any]:
    """The `pull` of a stream's extension `status` (the source and the error come masked)."""
    return {
        "state": status.state.value,
        "source": status.source,
        "source_index": status.source_index,
        "sources": status.sources,
        "since": iso(status.since),
        "attempts": status.attempts,
        "last_error": status.last_error,
        "next_retry_seconds": status.next_retry_seconds,
    }


def restream_status_body(status: RestreamStatus) -> dict[str, Any]:
    """The extension `status` of a restream (never a secret: errors and log lines come masked)."""
    return {
        "state": status.state.value,
        "since": iso(status.since),
        "uptime_seconds": status.uptime_seconds,
        "bitrate_kbps": status.bitrate_kbps,
        "bytes": status.bytes,
        "frames": status.frames,
        "restarts": status.restarts,
        "overflows": status.overflows,
        "acked_bitrate_kbps": status.acked_bitrate_kbps,
        "rtt_ms": status.rtt_ms,
        "retransmits": status.retransmits,
        "unacked_bytes": status.unacked_bytes,
        "send_window_bytes": status.send_window_bytes,
        "behind_live_seconds": status.behind_live_seconds,
        "last_error": status.last_error,
        "next_retry_seconds": status.next_retry_seconds,
        "log_tail": list(status.log_tail),
        "srt": srt_send_body(status.srt) if status.srt is not None else None,
    }


def srt_send_body(link: SendStats) -> dict[str, Any]:
    """An SRT destination's link, as libsrt measures it on the relay's caller (names as the ingest's `srt`)."""
    return {
        "rtt_ms": link.rtt_ms,
        "send_rate_kbps": link.send_rate_kbps,
        "bandwidth_mbps": link.bandwidth_mbps,
        "send_buffer_ms": link.send_buffer_ms,
        "latency_ms": link.latency_ms,
        "packets_sent": link.packets_sent,
        "packets_lost": link.packets_lost,
        "packets_retransmitted": link.packets_retransmitted,
        "packets_dropped": link.packets_dropped,
        "bytes_sent": link.bytes_sent,
        "encrypted": link.encrypted,
    }


LIVE_FIELDS = (
    "live",
    "backup_live",
    "input",
    "stream_source_type",
    "video_width",
    "video_height",
    "frame_rate",
    "status",
)
"""The keys of `live_fields`."""


def live_fields(snapshot: StreamSnapshot) -> dict[str, Any]:
    """What a stream shows of its live source, in the stream body and in the feed's stats."""
    info = snapshot.info
    return {
        "live": snapshot.live,
        "backup_live": snapshot.backup_live,
        "input": snapshot.input.value if snapshot.input is not None else None,
        "stream_source_type": snapshot.source_type.value if snapshot.source_type is not None else None,
        "video_width": info.video_width if info else None,
        "video_height": info.video_height if info else None,
        "frame_rate": info.frame_rate if info else None,
        "status": ingest_status_body(snapshot.status),
    }


def published_stream_fields(snapshot: StreamSnapshot) -> dict[str, Any]:
    """What a node shows of a stream it runs, as the stream body has it: what the owner publishes to the
    cluster (`stream_status.snapshot`) and every other node's API shows for it."""
    live = live_fields(snapshot)
    return {
        **live,
        "started_at_primary": iso(snapshot.started_at),
        "finished_at_primary": iso(snapshot.finished_at),
        "started_at_backup": iso(snapshot.started_at_backup),
        "finished_at_backup": iso(snapshot.finished_at_backup),
        "status": {**live["status"], "pull": pull_status_body(snapshot.pull) if snapshot.pull else None},
    }


def stream_view(engine: Engine, stream_id: int) -> dict[str, Any]:
    """The stream's live fields and `node_id`: this node's own while it runs the stream, else those its
    owner published while that owner's lease is valid, else this node's (offline, `node_id` null)."""
    snapshot = engine.stream_snapshot(stream_id)
    fields = published_stream_fields(snapshot)
    if snapshot.live:
        return {**fields, "node_id": engine.ownership.node_id}
    remote = engine.remote.stream(stream_id)
    if remote is not None and remote.live:
        return {**fields, **remote.fields, "live": True, "node_id": remote.node_id}
    return {**fields, "node_id": None}


def restream_view(engine: Engine, restream: RestreamRecord) -> tuple[bool, dict[str, Any], str | None]:
    """(live, status body, node_id) of a restream: this node's push, or the one its owner published."""
    if engine.is_live(restream.stream_id):
        return True, restream_status_body(engine.restream_status(restream)), engine.ownership.node_id
    remote = engine.remote.restream(restream.id)
    if remote is not None and remote.live and restream.active:
        return True, dict(remote.status), remote.node_id
    return False, restream_status_body(engine.restream_status(restream)), None


def stream_body(engine: Engine, addresses: IngestAddresses, stream: StreamRecord) -> dict[str, Any]:
    urls = addresses.push_urls(stream.id, stream.token)
    live = stream_view(engine, stream.id)
    return {
        "id": stream.id,
        "name": stream.name,
        "active": stream.active,
        "client_id": stream.client_id,
        "client_user_id": stream.client_user_id,
        "token": stream.token,
        "push_url": urls.rtmp,
        "push_url_srt": urls.srt,
        "push_url_rtmps": urls.rtmps,
        "backup_push_url": urls.backup_rtmp,
        "backup_push_url_srt": urls.backup_srt,
        "backup_push_url_rtmps": urls.backup_rtmps,
        "srt_passphrase": stream.srt_passphrase,
        "srt_latency_ms": stream.srt_latency_ms,
        "pull": stream.pull,
        "uri": stream.uri,
        "live": live["live"],
        "backup_live": live["backup_live"],
        "input": live["input"],
        "stream_source_type": live["stream_source_type"],
        "started_at_primary": live["started_at_primary"],
        "finished_at_primary": live["finished_at_primary"],
        "started_at_backup": live["started_at_backup"],
        "finished_at_backup": live["finished_at_backup"],
        "video_width": live["video_width"],
        "video_height": live["video_height"],
        "frame_rate": live["frame_rate"],
        "transcoded_qualities": [],
        "client_entity_data": stream.client_entity_data,
        **gcore_settings_body(stream.gcore_settings),
        "low_latency_enabled": True,  # Gcore: deprecated, always true (its Terraform provider reads it)
        "created_at": iso(stream.created_at),
        "status": live["status"],
        "node_id": live["node_id"],
    }


def gcore_settings_body(settings: GcoreSettings) -> dict[str, Any]:
    """The Gcore settings a stream keeps, as they were sent (or Gcore's defaults)."""
    return {
        "auto_record": settings.auto_record,
        "dvr_enabled": settings.dvr_enabled,
        "dvr_duration": settings.dvr_duration,
        "record_type": settings.record_type,
        "html_overlay": settings.html_overlay,
        "projection": settings.projection,
        "cdn_id": settings.cdn_id,
        "broadcast_ids": list(settings.broadcast_ids),
        "quality_set_id": settings.quality_set_id,
        "hls_mpegts_endlist_tag": settings.hls_mpegts_endlist_tag,
    }


def restream_body(engine: Engine, restream: RestreamRecord) -> dict[str, Any]:
    live, status, node_id = restream_view(engine, restream)
    return {
        "id": restream.id,
        "name": restream.name,
        "active": restream.active,
        "uri": restream.uri,
        "stream_id": restream.stream_id,
        "client_id": restream.client_id,
        "client_user_id": restream.client_user_id,
        "live": live,
        "no_audio": restream.no_audio,
        "no_audio_mode": restream.no_audio_mode,
        "source": "original",
        "quality_id": None,
        "playlist_id": None,
        "tls_verify": restream.tls_verify,
        "status": status,
        "node_id": node_id,
    }


def event_body(event: EngineEvent, node_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """An engine event as the feed sends it: its name and its JSON payload. `node_id` (this node's) goes
    into this node's `stream.live` and `restream.status`; another node's events carry their own."""
    if isinstance(event, StreamLiveChanged):
        payload: dict[str, Any] = {
            "client_id": event.client_id,
            "stream_id": event.stream_id,
            "live": event.live,
            "backup_live": event.backup_live,
            "state": event.state.value,
        }
        if event.reason:
            payload["reason"] = event.reason
        if node_id is not None:
            payload["node_id"] = node_id
        return "stream.live", payload
    if isinstance(event, StreamInfoChanged):
        return "stream.info", {
            "client_id": event.client_id,
            "stream_id": event.stream_id,
            "video_width": event.info.video_width,
            "video_height": event.info.video_height,
            "frame_rate": event.info.frame_rate,
        }
    if isinstance(event, InputSwitched):
        return "stream.input", {
            "client_id": event.client_id,
            "stream_id": event.stream_id,
            "input": event.to.value,
            "reason": event.reason,
            "restarted": event.restarted,
        }
    if isinstance(event, RemoteStreamChanged):
        fields = event.fields
        return "stream.live", {
            "client_id": event.client_id,
            "stream_id": event.stream_id,
            "live": event.live,
            "backup_live": bool(fields.get("backup_live")) and event.live,
            "state": fields.get("status", {}).get("state", "offline") if event.live else "offline",
            "node_id": event.node_id,
        }
    if isinstance(event, RemoteRestreamChanged):
        return "restream.status", {
            "client_id": event.client_id,
            "stream_id": event.stream_id,
            "restream_id": event.restream_id,
            "status": dict(event.status),
            "node_id": event.node_id,
        }
    assert isinstance(event, RestreamStateChanged)
    body: dict[str, Any] = {
        "client_id": event.client_id,
        "stream_id": event.stream_id,
        "restream_id": event.restream_id,
        "status": restream_status_body(event.status),
    }
    if node_id is not None:
        body["node_id"] = node_id
    return "restream.status", body
