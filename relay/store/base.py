"""The store interface. SQLite implements it today; PostgreSQL can follow behind the same methods.

Every method that changes a definition returns only after the change is durable (invariant 4).
Reads scoped by `client_id` return None for another client's objects, so callers answer 404 without
ever learning that the object exists.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any

from relay.store.changes import ChangeFeed
from relay.store.models import ApiKeyRecord, Page, RestreamRecord, StreamRecord

STREAM_FIELDS = frozenset({"name", "active", "client_user_id", "srt_passphrase", "srt_latency_ms"})
RESTREAM_FIELDS = frozenset(
    {"name", "active", "uri", "stream_id", "client_user_id", "no_audio", "no_audio_mode", "tls_verify"}
)


class StoreError(Exception):
    """The store could not do what was asked (not a missing object: those are None)."""


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
    async def active_restreams(self) -> list[RestreamRecord]:
        """Every active restream of every active stream, all clients: what should push when live."""

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
        """Store a new key (generated unless given) and return it in clear, the only time it exists so."""

    @abc.abstractmethod
    async def client_for_key(self, key: str) -> int | None:
        """The client a presented key belongs to, or None (unknown or revoked)."""

    @abc.abstractmethod
    async def list_api_keys(self, client_id: int | None = None) -> list[ApiKeyRecord]: ...

    @abc.abstractmethod
    async def revoke_api_key(self, key_id_or_prefix: str) -> int:
        """Revoke by numeric id or by prefix; returns how many keys were revoked."""

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
