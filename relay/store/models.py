"""Definitions the store keeps. Live state (who is publishing, push status) is never stored here."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, TypeVar

T = TypeVar("T")


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
