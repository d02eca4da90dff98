"""The hub: one per live stream, between an ingest sink and the pushes (see hub.py)."""

from relay.hub.clock import Clock, LoopClock, TimerHandle
from relay.hub.events import (
    HubEvent,
    HubSettings,
    HubState,
    InputSwitched,
    LiveEnded,
    LiveEndReason,
    LiveStarted,
    PublisherDropped,
    SourceChanged,
    SourceResumed,
    SwitchReason,
)
from relay.hub.gop_cache import GopCache
from relay.hub.hub import Hub
from relay.hub.subscriber import Chunk, EndCause, Subscriber, SubscriberLimits

__all__ = [
    "Chunk",
    "Clock",
    "EndCause",
    "GopCache",
    "Hub",
    "HubEvent",
    "HubSettings",
    "HubState",
    "InputSwitched",
    "LiveEndReason",
    "LiveEnded",
    "LiveStarted",
    "LoopClock",
    "PublisherDropped",
    "SourceChanged",
    "SourceResumed",
    "Subscriber",
    "SubscriberLimits",
    "SwitchReason",
    "TimerHandle",
]
