"""Definitions the store keeps. Live state (who is publishing, push status) is never stored here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GcoreSettings:
    """Gcore stream settings the relay keeps only to give them back as they were sent.

    None of them means anything here (no DVR, recording, HTML overlays, player, CDN or transcoding), but
    a Gcore client and Terraform read back what they wrote: a setting lost would be drift on every plan.
    The defaults are Gcore's, the values its Terraform provider plans with when a setting is left out.
    Those that would promise what the relay does not do (`auto_record`, `dvr_enabled` switched on) are
    refused by the API before they reach the store.
    """

    auto_record: bool = False
    dvr_enabled: bool = False
    dvr_duration: int = 3600
    """Seconds of DVR window (Gcore: 30 to 14400)."""
    record_type: str = "origin"
    html_overlay: bool = False
    projection: str = "regular"
    cdn_id: int | None = None
    broadcast_ids: tuple[int, ...] = ()
    quality_set_id: int | None = None
    hls_mpegts_endlist_tag: bool = True


@dataclass(frozen=True, slots=True)
class StreamRecord:
    """A source a client can publish to. `token` is the secret half of the stream key."""

    id: int
    client_id: int
    name: str
    active: bool
    token: str = field(repr=False)
    created_at: datetime
    client_user_id: int | None = None
    srt_passphrase: str | None = field(default=None, repr=False)
    srt_latency_ms: int | None = None
    """SRT receiver latency for this stream's publishers; None uses the relay's default."""
    client_entity_data: str | None = None
    """The client's own free text (Gcore: up to 4096 characters), kept and returned as sent."""
    gcore_settings: GcoreSettings = field(default_factory=GcoreSettings)
    pull: bool = False
    """The relay feeds the stream itself by pulling `uri` (relay/pull/); publishers are refused."""
    uri: str | None = field(default=None, repr=False)
    """Where a pulled stream's media comes from: space-separated alternatives, tried in turn. May hold
    secrets (a stream key, a password): never log it unmasked."""


@dataclass(frozen=True, slots=True)
class RestreamRecord:
    """A destination the stream is pushed to. `uri` may hold a stream key: never log it unmasked."""

    id: int
    client_id: int
    stream_id: int
    name: str
    active: bool
    uri: str = field(repr=False)
    created_at: datetime
    client_user_id: int | None = None
    no_audio: bool = False
    no_audio_mode: str = "drop"
    tls_verify: bool = True


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """An API key as stored: only its hash and a short public prefix to tell keys apart."""

    id: int
    client_id: int
    prefix: str
    label: str
    created_at: datetime
    revoked_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing and the total count across all pages."""

    items: list[T]
    total: int
