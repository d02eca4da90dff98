"""The store interface. SQLite implements it today; PostgreSQL can follow behind the same methods.

Every method that changes a definition returns only after the change is durable (invariant 4).
Reads scoped by `client_id` return None for another client's objects, so callers answer 404 without
ever learning that the object exists.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from relay.store.changes import ChangeFeed
from relay.store.models import ApiKeyRecord, GcoreSettings, Page, RestreamRecord, StreamRecord

STREAM_FIELDS = frozenset(
    {"name", "active", "client_user_id", "srt_passphrase", "srt_latency_ms", "client_entity_data", "pull", "uri"}
)
GCORE_SETTINGS_FIELDS = frozenset(field.name for field in dataclasses.fields(GcoreSettings))
"""Stream fields kept together as `StreamRecord.gcore_settings` (see relay/store/models.py)."""
RESTREAM_FIELDS = frozenset(
    {"name", "active", "uri", "stream_id", "client_user_id", "no_audio", "no_audio_mode", "tls_verify"}
)


class StoreError(Exception):
    """The store could not do what was asked (not a missing object: those are None)."""


class AmbiguousKeyPrefix(StoreError):
    """A key prefix given to revoke matches several active keys; nothing was revoked."""

    def __init__(self, matches: int) -> None:
        super().__init__(f"{matches} active keys match that prefix")
        self.matches = matches


class StoreUnavailable(Exception):
    """The store cannot read or write right now (disk full, I/O error, locked too long); nothing of the
    request was kept. Not a `StoreError`: it says nothing about the request, and asking again later may
    work (the API answers 503)."""


class Store(abc.ABC):
    """Persistent definitions: clients' API keys, streams and restreams.

    Every stream and restream write is announced on `changes` once durable (see relay/store/changes.py).
    """

    def __init__(self) -> None:
        self.changes = ChangeFeed()

    # Streams ------------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_stream(self, client_id: int, fields: Mapping[str, Any]) -> StreamRecord: ...

    @abc.abstractmethod
    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None:
        """The stream; with `client_id`, only if that client owns it."""

    @abc.abstractmethod
    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None:
        """The same look-up for threads outside the event loop (the SRT listener callback)."""

    @abc.abstractmethod
    async def list_streams(self, client_id: int, offset: int, limit: int) -> Page[StreamRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def update_stream(
        self, stream_id: int, client_id: int, changes: Mapping[str, Any]
    ) -> StreamRecord | None: ...

    @abc.abstractmethod
    async def reset_stream_token(self, stream_id: int, client_id: int) -> StreamRecord | None:
        """Give the stream a new publish token (made as at creation); None if the client has no such stream.

        Announced as any update (`StreamChanged`, the old token in `before`): the engine disconnects
        every publisher that came in on the old one, and the secret registry learns the new one."""

    @abc.abstractmethod
    async def delete_stream(self, stream_id: int, client_id: int) -> bool:
        """Delete the stream and its restreams; False if the client has no such stream.

        One `StreamChanged` announces it; its restreams go with it without a change of their own."""

    @abc.abstractmethod
    async def all_streams(self) -> list[StreamRecord]:
        """Every stream of every client (the secrets the node must keep out of its logs, at start)."""

    # Restreams ----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_restream(self, client_id: int, fields: Mapping[str, Any]) -> RestreamRecord: ...

    @abc.abstractmethod
    async def get_restream(self, restream_id: int, client_id: int | None = None) -> RestreamRecord | None: ...

    @abc.abstractmethod
    async def list_restreams(self, client_id: int, offset: int, limit: int) -> Page[RestreamRecord]:
        """Newest first."""

    @abc.abstractmethod
    async def active_restreams(self, stream_id: int | None = None) -> list[RestreamRecord]:
        """Every active restream of every active stream, all clients (or of one stream): what should push
        when live."""

    @abc.abstractmethod
    async def restream_count(self, stream_id: int) -> int:
        """How many restreams (active or not) the stream has."""

    @abc.abstractmethod
    async def all_restreams(self) -> list[RestreamRecord]:
        """Every restream of every client, active or not."""

    @abc.abstractmethod
    async def update_restream(
        self, restream_id: int, client_id: int, changes: Mapping[str, Any]
    ) -> RestreamRecord | None: ...

    @abc.abstractmethod
    async def delete_restream(self, restream_id: int, client_id: int) -> bool: ...

    # API keys -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def create_api_key(self, client_id: int, label: str = "", key: str | None = None) -> tuple[str, ApiKeyRecord]:
        """Store a new key (generated unless given) and return it in clear, the only time it exists so.

        A given key that is already stored and active for the same client is returned as it is; one of
        another client, or one that was revoked, raises StoreError (a revoked key stays revoked)."""

    @abc.abstractmethod
    async def client_for_key(self, key: str) -> int | None:
        """The client a presented key belongs to, or None (unknown or revoked)."""

    @abc.abstractmethod
    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        """The record of a presented key, revoked or not (`revoked_at` says); None if unknown."""

    @abc.abstractmethod
    async def active_api_key_ids(self, key_ids: Collection[int]) -> set[int]:
        """Which of these keys are still active: how a long-lived request notices a revocation made by
        another process (`restream-relay keys revoke`), with one cheap query for many requests."""

    @abc.abstractmethod
    async def list_api_keys(self, client_id: int | None = None) -> list[ApiKeyRecord]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKeyRecord | None:
        """Revoke exactly one active key: by numeric id, or by a prefix of its listed prefix.

        Returns the revoked key, or None when no active key matches. A prefix matching several active
        keys (of one client or of several) raises `AmbiguousKeyPrefix` and revokes nothing: revoking is
        not undone, so a guess must never take a second key with it. Revocation is final: the same key
        can never be made active again (`create_api_key` refuses it).
        """

    # Lifecycle ----------------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        """False from a failed read or write (disk full, I/O error) until a write succeeds again."""
        return True

    async def check_health(self) -> bool:
        """`healthy`, after trying a small write when it is not (so that it recovers without a client's write)."""
        return self.healthy

    @abc.abstractmethod
    async def close(self) -> None: ...
