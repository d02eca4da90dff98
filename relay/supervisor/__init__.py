"""The supervisor: one state machine per restream around its ffmpeg push (see supervisor.py)."""

from relay.supervisor.backoff import Backoff
from relay.supervisor.push_runner import PushRunner
from relay.supervisor.settings import SupervisorSettings
from relay.supervisor.states import Order, PushSpec, PushState, PushStatus
from relay.supervisor.supervisor import Supervisor

__all__ = [
    "Backoff",
    "Order",
    "PushRunner",
    "PushSpec",
    "PushState",
    "PushStatus",
    "Supervisor",
    "SupervisorSettings",
]
