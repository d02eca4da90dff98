"""What the engine tells its observers (the API's event feed, the dashboard): typed, one class a kind.

Each event names the client that owns the object, so that an observer can show it to that client only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from relay.engine.status import RestreamStatus, StreamState
from relay.ingest.gate import StreamInfo, StreamInput


@dataclass(frozen=True, slots=True)
class StreamLiveChanged:
    """A stream went live, started reconnecting, or ended."""

    client_id: int
    stream_id: int
    live: bool
    state: StreamState
    reason: str | None = None
    """Why publishing ended (an ingest end reason or a hub end reason), when it did."""
    backup_live: bool = False
    """A publisher is connected on the backup input (this event also tells when that changes)."""


@dataclass(frozen=True, slots=True)
class StreamInfoChanged:
    """The ingest learnt what the source looks like (size, frame rate, codecs)."""

    client_id: int
    stream_id: int
    info: StreamInfo


@dataclass(frozen=True, slots=True)
class RestreamStateChanged:
    """A push changed state (progress ticks are not events: they are read from snapshots)."""

    client_id: int
    stream_id: int | None
    restream_id: int
    status: RestreamStatus


@dataclass(frozen=True, slots=True)
class InputSwitched:
    """Another input of the stream feeds its destinations now."""

    client_id: int
    stream_id: int
    to: StreamInput
    reason: str
    """dropped, silent, preferred or returned (relay.hub.hub.SwitchReason)."""
    restarted: bool
    """The inputs' codecs differed: the pushes restarted instead of continuing."""


@dataclass(frozen=True, slots=True)
class RemoteStreamChanged:
    """Another node of the cluster published that one of its streams went live, ended or changed owner."""

    client_id: int
    stream_id: int
    node_id: str
    live: bool
    fields: Mapping[str, Any]
    """The stream's live fields as its owner's API shows them."""


@dataclass(frozen=True, slots=True)
class RemoteRestreamChanged:
    """Another node of the cluster published a new state of one of its pushes."""

    client_id: int
    stream_id: int
    restream_id: int
    node_id: str
    status: Mapping[str, Any]
    """The restream's `status` as its owner's API shows it."""


EngineEvent = (
    StreamLiveChanged
    | StreamInfoChanged
    | RestreamStateChanged
    | InputSwitched
    | RemoteStreamChanged
    | RemoteRestreamChanged
)
