"""Who may run a stream: the engine asks its `Ownership` before a stream goes live on this node.

One node alone (`LocalOwnership`, no database) owns every stream it is asked for. Several nodes on one
PostgreSQL (`relay.cluster.ownership.PostgresOwnership`) hold a lease per stream, timed by the
database's clock and guarded by a local deadline on this node's monotonic clock; a lease that cannot be
proved any more is *lost*, and the engine drops that stream's publishers and pushes at once.

`RemoteView` is what this node knows of streams and restreams that other nodes own (status rows they
publish); a single node has none.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from relay.ingest.gate import PublishRefused, RefusalReason

LostCallback = Callable[[int], None]
"""Called with a stream id whose lease this node lost (taken over, expired, or not provable in time)."""


class ClaimRefused(PublishRefused):
    """The stream's lease could not be had: another node owns it, or the database cannot say."""

    def __init__(self, reason: RefusalReason, message: str, owner: str | None = None) -> None:
        super().__init__(reason, message)
        self.owner = owner
        """The node that holds the lease, when known."""


class Ownership(Protocol):
    """The engine's view of stream ownership."""

    @property
    def node_id(self) -> str: ...

    @property
    def leased(self) -> bool:
        """Streams are held by leases that can lapse or be lost: `media` and `lapsed` are asked per packet and
        per write. False (one node, no database): their answers never change, and the engine asks neither."""

    def on_lost(self, callback: LostCallback) -> None:
        """Set the one callback told of each lost stream (the engine's)."""

    async def claim(self, stream_id: int, *, takeover_idle_seconds: float | None) -> None:
        """Take (or keep) the stream's lease; raises ClaimRefused. `takeover_idle_seconds`: a live lease
        of another node whose publisher sent no media for this long is taken over; None: only an expired
        one (pulls)."""

    def owns(self, stream_id: int) -> bool:
        """This node holds a lease on the stream that it can still prove (its local deadline not passed)."""

    def media(self, stream_id: int) -> bool:
        """The stream's publisher sent media (called per packet: cheap); returns `owns(stream_id)`."""

    def lapsed(self, stream_id: int) -> bool:
        """This node still holds the stream's lease but cannot prove it any more (its local deadline
        passed, and the loss is not handled yet): nothing of the stream may leave the node. Cheap: asked
        before every write to a push."""

    def release(self, stream_id: int) -> None:
        """Give the lease up (the stream ended here); done in the background."""

    def owned(self) -> frozenset[int]:
        """Every stream this node holds a lease on."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...


class LocalOwnership:
    """One node, no database: every claim is granted and nothing is ever lost."""

    leased = False

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id
        self._owned: set[int] = set()

    @property
    def node_id(self) -> str:
        return self._node_id

    def on_lost(self, callback: LostCallback) -> None:
        pass

    async def claim(self, stream_id: int, *, takeover_idle_seconds: float | None) -> None:
        self._owned.add(stream_id)

    def owns(self, stream_id: int) -> bool:
        return True

    def media(self, stream_id: int) -> bool:
        return True

    def lapsed(self, stream_id: int) -> bool:
        return False

    def release(self, stream_id: int) -> None:
        self._owned.discard(stream_id)

    def owned(self) -> frozenset[int]:
        return frozenset(self._owned)

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class RemoteStream:
    """A stream as its owning node last published it (the `stream_status` row)."""

    node_id: str
    live: bool
    """The owner said live and its lease is valid (a dead node's row is never live)."""
    fields: Mapping[str, Any]
    """The live fields as the owner's API shows them (`live_fields` and the session times)."""


@dataclass(frozen=True, slots=True)
class RemoteRestream:
    """A restream's push as its owning node last published it (the `restream_status` row)."""

    node_id: str
    live: bool
    """Its stream's lease on that node is valid."""
    status: Mapping[str, Any]
    """The `status` object as the owner's API shows it."""


class RemoteView(Protocol):
    """What this node knows of streams and restreams run by other nodes."""

    def stream(self, stream_id: int) -> RemoteStream | None: ...

    def restream(self, restream_id: int) -> RemoteRestream | None: ...


class NoRemote:
    """A single node: nothing runs elsewhere."""

    def stream(self, stream_id: int) -> RemoteStream | None:
        return None

    def restream(self, restream_id: int) -> RemoteRestream | None:
        return None
