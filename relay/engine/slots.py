"""Push slots: which wanted pushes of live streams may run now.

Two bounds hold at all times: the node's cap on running pushes and each client's own cap. A push that
holds a slot keeps it while its stream is live (retries included); nothing running is ever taken
away to make room. When a slot frees, it goes to the waiting push whose client runs the fewest pushes
(earliest waiter first among equals), so one busy client cannot starve the others of freed slots.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Waiting:
    """Why a push waits, and since when (wall-clock seconds)."""

    client_id: int
    since: float
    reason: str


class PushSlots:
    """Grants and frees push slots; every call is O(1) but for the grant after a release (O(waiting))."""

    def __init__(
        self, node_cap: int, client_cap: Callable[[int], int], *, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self._node_cap = node_cap
        self._client_cap = client_cap
        self._wall_clock = wall_clock
        self._holders: dict[int, int] = {}
        """restream id -> client id, for every push holding a slot."""
        self._per_client: Counter[int] = Counter()
        self._waiting: dict[int, Waiting] = {}
        """In the order they started waiting."""

    @property
    def node_cap(self) -> int:
        return self._node_cap

    def running(self, client_id: int | None = None) -> int:
        """Slots held, by one client or in all."""
        return len(self._holders) if client_id is None else self._per_client[client_id]

    def waiting_count(self) -> int:
        return len(self._waiting)

    def holds(self, restream_id: int) -> bool:
        return restream_id in self._holders

    def waiting(self, restream_id: int) -> Waiting | None:
        return self._waiting.get(restream_id)

    def want(self, restream_id: int, client_id: int) -> bool:
        """Ask for a slot; True when the push holds one (now or already), else it waits in line."""
        if restream_id in self._holders:
            return True
        blocker = self._blocker(client_id)
        if blocker is None:
            self._grant(restream_id, client_id)
            return True
        previous = self._waiting.get(restream_id)
        self._waiting[restream_id] = Waiting(client_id, previous.since if previous else self._wall_clock(), blocker)
        return False

    def release(self, restream_id: int) -> list[int]:
        """The push no longer needs a slot (not wanted, or its stream is not live); returns the restream
        ids that were granted the freed slot, which the caller now starts."""
        self._waiting.pop(restream_id, None)
        client_id = self._holders.pop(restream_id, None)
        if client_id is None:
            return []
        self._per_client[client_id] -= 1
        if not self._per_client[client_id]:
            del self._per_client[client_id]
        return self._grant_waiting()

    def _blocker(self, client_id: int) -> str | None:
        cap = self._client_cap(client_id)
        if self._per_client[client_id] >= cap:
            return f"waiting for a push slot: the client limit of {cap} running pushes is reached"
        if len(self._holders) >= self._node_cap:
            return f"waiting for a push slot: the node limit of {self._node_cap} running pushes is reached"
        return None

    def _grant(self, restream_id: int, client_id: int) -> None:
        self._waiting.pop(restream_id, None)
        self._holders[restream_id] = client_id
        self._per_client[client_id] += 1

    def _grant_waiting(self) -> list[int]:
        granted: list[int] = []
        while len(self._holders) < self._node_cap:
            eligible = [
                (self._per_client[w.client_id], order, rid)
                for order, (rid, w) in enumerate(self._waiting.items())
                if self._blocker(w.client_id) is None
            ]
            if not eligible:
                break
            _, _, restream_id = min(eligible)
            self._grant(restream_id, self._waiting[restream_id].client_id)
            granted.append(restream_id)
        return granted
