"""The one error of every state table in the relay: the RTMP session, the hub and the push.

Each state machine keeps its legal changes in one table and checks every change against it. A change
the table does not allow is a bug of ours (a peer's bad move is a protocol error, told apart where the
peer can cause it), so all three raise the same `IllegalTransition`, which names the machine.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import TypeVar

S = TypeVar("S", bound=Enum)


class IllegalTransition(RuntimeError):
    """A state machine was asked for a change its table does not allow: a bug, never a peer's fault."""

    def __init__(self, machine: str, old: Enum, new: Enum | str) -> None:
        self.machine = machine
        self.old = old
        self.new = new
        target = new.value if isinstance(new, Enum) else new
        super().__init__(f"{machine}: illegal transition {old.value} -> {target}")


def check_transition(table: Mapping[S, frozenset[S]], machine: str, old: S, new: S) -> None:
    """Raise `IllegalTransition` unless `table` allows `old -> new` (staying put only where it lists it)."""
    if new not in table[old]:
        raise IllegalTransition(machine, old, new)
