"""Which pushes run: the wanted restreams, kept per stream, placed one by one on the supervisor.

A restream is wanted while it and its stream are active. A wanted push is handed to the supervisor
while its stream is not live (its runner idles) or while it holds a push slot; a push of a live stream
that gets no slot is held back and reported as waiting. Every change touches only the restreams it
concerns (one restream, or one stream's), so an API write costs O(change), not O(all restreams);
`replace_all` is the periodic full pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from relay.engine.slots import PushSlots, Waiting
from relay.store.models import RestreamRecord
from relay.supervisor.states import PushSpec
from relay.supervisor.supervisor import Supervisor


def spec_of(record: RestreamRecord) -> PushSpec:
    return PushSpec(
        restream_id=record.id,
        stream_id=record.stream_id,
        uri=record.uri,
        no_audio=record.no_audio,
        no_audio_mode=record.no_audio_mode,
        tls_verify=record.tls_verify,
        client_id=record.client_id,
    )


class PushPlan:
    """Owns the wanted specs, their index by stream and the slots; tells the supervisor what to run."""

    def __init__(
        self,
        supervisor: Supervisor,
        slots: PushSlots,
        is_live: Callable[[int], bool],
        on_waiting: Callable[[int, int, int, Waiting], None],
    ) -> None:
        self._supervisor = supervisor
        self.slots = slots
        self._is_live = is_live
        self._on_waiting = on_waiting
        """(client id, stream id, restream id, why): a push starts waiting for a slot."""
        self._specs: dict[int, PushSpec] = {}
        self._clients: dict[int, int] = {}
        self._by_stream: dict[int, set[int]] = {}

    def wanted(self, restream_id: int) -> bool:
        return restream_id in self._specs

    def of_stream(self, stream_id: int) -> list[int]:
        return sorted(self._by_stream.get(stream_id, ()))

    def client_of(self, restream_id: int) -> int | None:
        return self._clients.get(restream_id)

    def forget(self, restream_id: int) -> None:
        """A push no longer wanted has stopped: its client is not needed any more."""
        if restream_id not in self._specs:
            self._clients.pop(restream_id, None)

    def waiting(self, restream_id: int) -> Waiting | None:
        return self.slots.waiting(restream_id)

    def set(self, restream_id: int, record: RestreamRecord | None) -> None:
        """`record` is wanted now (None: not wanted any more); place that push alone."""
        old = self._specs.pop(restream_id, None)
        if old is not None:
            self._by_stream[old.stream_id].discard(restream_id)
            if not self._by_stream[old.stream_id]:
                del self._by_stream[old.stream_id]
        if record is not None:
            self._specs[restream_id] = spec_of(record)
            self._clients[restream_id] = record.client_id
            self._by_stream.setdefault(record.stream_id, set()).add(restream_id)
        self._place(restream_id)

    def drop_stream(self, stream_id: int) -> None:
        """The stream is inactive or gone: none of its pushes is wanted."""
        for restream_id in list(self._by_stream.get(stream_id, ())):
            self.set(restream_id, None)

    def place_stream(self, stream_id: int) -> None:
        """The stream went live or stopped being live: place each of its pushes."""
        for restream_id in sorted(self._by_stream.get(stream_id, ())):
            self._place(restream_id)

    def replace_all(self, records: Iterable[RestreamRecord]) -> None:
        """The full pass: exactly `records` are wanted."""
        wanted = {record.id: record for record in records}
        for restream_id in [rid for rid in self._specs if rid not in wanted]:
            self.set(restream_id, None)
        for restream_id, record in wanted.items():
            if self._specs.get(restream_id) != spec_of(record) or self._clients.get(restream_id) != record.client_id:
                self.set(restream_id, record)
            else:
                self._place(restream_id)

    def _place(self, restream_id: int) -> None:
        spec = self._specs.get(restream_id)
        if spec is None or not self._is_live(spec.stream_id):
            self._start_granted(self.slots.release(restream_id))
            self._supervisor.apply(restream_id, spec)
            return
        client_id = self._clients[restream_id]
        was_waiting = self.slots.waiting(restream_id) is not None
        if self.slots.want(restream_id, client_id):
            self._supervisor.apply(restream_id, spec)
            return
        self._supervisor.apply(restream_id, None)
        waiting = self.slots.waiting(restream_id)
        if waiting is not None and not was_waiting:
            self._on_waiting(client_id, spec.stream_id, restream_id, waiting)

    def _start_granted(self, granted: list[int]) -> None:
        for restream_id in granted:
            self._supervisor.apply(restream_id, self._specs[restream_id])
