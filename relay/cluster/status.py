"""Status everywhere: owners publish their streams' and restreams' status; every node reads the others'.

`StatusPublisher` follows the engine's events: a stream or restream that changed is marked, and the
marks are written together a moment later (coalesced), with one NOTIFY on `relay_status` naming them.
At every renewal period every owned stream and its pushes are written again (their figures move). A
row is written with the lease's epoch and only replaces a row of the same node or an older epoch, so
an old owner never overwrites the new one's.

`ClusterView` keeps the other nodes' rows in memory (read whole at start, after a lost listener and
every `refresh_seconds`; the rows a NOTIFY names at once). A row counts as live only while its
node's lease with the same epoch is valid, as the database saw it when read, counted down on this
node's monotonic clock: a dead node's streams stop being live when its leases expire, with no writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import asyncpg

from relay.cluster.listen import DATABASE_ERRORS, listen_forever
from relay.engine.events import (
    EngineEvent,
    InputSwitched,
    RemoteRestreamChanged,
    RemoteStreamChanged,
    RestreamStateChanged,
    StreamInfoChanged,
    StreamLiveChanged,
)
from relay.engine.ownership import RemoteRestream, RemoteStream
from relay.engine.status import RestreamStatus, StreamSnapshot

log = logging.getLogger("relay.cluster.status")

STATUS_CHANNEL = "relay_status"
RemoteEvent = RemoteStreamChanged | RemoteRestreamChanged
_NOTIFY_MAX_IDS = 500  # a NOTIFY payload holds 8000 bytes; more than this says "everything"

_UPSERT_STREAM = """
INSERT INTO stream_status AS s (stream_id, node_id, epoch, client_id, live, snapshot, updated_at)
SELECT row.stream_id, $2, row.epoch, row.client_id, row.live, row.snapshot::jsonb, now()
FROM unnest($1::bigint[], $3::bigint[], $4::bigint[], $5::boolean[], $6::text[])
    AS row(stream_id, epoch, client_id, live, snapshot)
ON CONFLICT (stream_id) DO UPDATE SET node_id = EXCLUDED.node_id, epoch = EXCLUDED.epoch,
    client_id = EXCLUDED.client_id, live = EXCLUDED.live, snapshot = EXCLUDED.snapshot, updated_at = now()
WHERE s.node_id = EXCLUDED.node_id OR s.epoch < EXCLUDED.epoch
"""
_UPSERT_RESTREAM = """
INSERT INTO restream_status AS r (restream_id, stream_id, node_id, epoch, client_id, status, updated_at)
SELECT row.restream_id, row.stream_id, $3, row.epoch, row.client_id, row.status::jsonb, now()
FROM unnest($1::bigint[], $2::bigint[], $4::bigint[], $5::bigint[], $6::text[])
    AS row(restream_id, stream_id, epoch, client_id, status)
ON CONFLICT (restream_id) DO UPDATE SET stream_id = EXCLUDED.stream_id, node_id = EXCLUDED.node_id,
    epoch = EXCLUDED.epoch, client_id = EXCLUDED.client_id, status = EXCLUDED.status, updated_at = now()
WHERE r.node_id = EXCLUDED.node_id OR r.epoch < EXCLUDED.epoch
"""
_NOT_LIVE = "UPDATE stream_status SET live = false, updated_at = now() WHERE stream_id = $1 AND node_id = $2"

_READ_STREAMS = """
SELECT s.stream_id, s.node_id, s.client_id, s.live, s.snapshot::text AS snapshot,
       extract(epoch FROM l.expires_at - now())::float8 AS valid_seconds
FROM stream_status s
LEFT JOIN leases l ON l.stream_id = s.stream_id AND l.node_id = s.node_id AND l.epoch = s.epoch
WHERE s.node_id <> $1 {only}
"""
_READ_RESTREAMS = """
SELECT r.restream_id, r.stream_id, r.node_id, r.client_id, r.status::text AS status,
       extract(epoch FROM l.expires_at - now())::float8 AS valid_seconds
FROM restream_status r
LEFT JOIN leases l ON l.stream_id = r.stream_id AND l.node_id = r.node_id AND l.epoch = r.epoch
WHERE r.node_id <> $1 {only}
"""


def columns(rows: list[tuple[Any, ...]], node_index: int) -> list[Any]:
    """Rows to the statement's arguments: one array per column (one statement for all the rows), except
    the node's id at `node_index`, the same in every row, passed once."""
    arrays: list[Any] = [list(column) for column in zip(*rows, strict=True)]
    arrays[node_index] = rows[0][node_index]
    return arrays


class StatusSource(Protocol):
    """What the publisher reads of the engine (kept narrow for tests)."""

    def stream_snapshot(self, stream_id: int) -> StreamSnapshot: ...

    def push_status(self, restream_id: int) -> RestreamStatus | None: ...

    def restreams_of(self, stream_id: int) -> list[int]: ...

    def client_of(self, stream_id: int) -> int | None: ...

    def client_of_restream(self, restream_id: int) -> int | None: ...

    def subscribe(self, listener: Callable[[EngineEvent], None]) -> Callable[[], None]: ...


class Epochs(Protocol):
    def owned(self) -> frozenset[int]: ...

    def epoch(self, stream_id: int) -> int | None: ...


class StatusPublisher:
    """Writes this node's `stream_status` and `restream_status` rows; owns its flush task."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        node_id: str,
        engine: StatusSource,
        leases: Epochs,
        stream_fields: Callable[[StreamSnapshot], Mapping[str, Any]],
        restream_fields: Callable[[RestreamStatus], Mapping[str, Any]],
        *,
        period_seconds: float = 2.0,
        coalesce_seconds: float = 0.2,
    ) -> None:
        self._pool = pool
        self._node_id = node_id
        self._engine = engine
        self._leases = leases
        self._stream_fields = stream_fields
        self._restream_fields = restream_fields
        self._period_seconds = period_seconds
        self._coalesce_seconds = coalesce_seconds
        self._streams: set[int] = set()
        self._restreams: dict[int, int] = {}
        """Restream id -> stream id, marked for the next write."""
        self._marked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self.writes = 0
        self._written: dict[tuple[str, int], tuple[Any, ...]] = {}
        """The last row written per ("stream"|"restream", id): an unchanged row is not written again
        (an idle or failed push, a stream whose figures did not move)."""

    def _on_event(self, event: EngineEvent) -> None:
        if isinstance(event, StreamLiveChanged | StreamInfoChanged | InputSwitched):
            self._streams.add(event.stream_id)
        elif isinstance(event, RestreamStateChanged) and event.stream_id is not None:
            self._restreams[event.restream_id] = event.stream_id
        else:
            return
        self._marked.set()

    def start(self) -> None:
        self._unsubscribe = self._engine.subscribe(self._on_event)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="status-publisher")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_full = loop.time()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, next_full - loop.time())):
                    await self._marked.wait()
            await asyncio.sleep(self._coalesce_seconds)
            self._marked.clear()
            full = loop.time() >= next_full
            if full:
                next_full = loop.time() + self._period_seconds
            try:
                await self.flush(full=full)
            except DATABASE_ERRORS as exc:  # the next period writes everything again
                log.info("status not published (%s)", type(exc).__name__)
            except Exception:  # nothing but cancellation ends this loop: other nodes would read stale status
                log.exception("status not published")

    async def flush(self, *, full: bool = False) -> None:
        """Write the marked rows (every owned stream's and push's too when `full`), then NOTIFY them."""
        owned = self._leases.owned()
        streams, self._streams = self._streams | (set(owned) if full else set()), set()
        restreams, self._restreams = dict(self._restreams), {}
        if full:
            for stream_id in owned:
                restreams.update(dict.fromkeys(self._engine.restreams_of(stream_id), stream_id))
        stream_rows: list[tuple[Any, ...]] = []
        gone: list[int] = []
        for stream_id in streams:
            epoch, client_id = self._leases.epoch(stream_id), self._engine.client_of(stream_id)
            if epoch is None or client_id is None:
                gone.append(stream_id)
                continue
            snapshot = self._engine.stream_snapshot(stream_id)
            fields = json.dumps(self._stream_fields(snapshot))
            row: tuple[Any, ...] = (stream_id, self._node_id, epoch, client_id, snapshot.live, fields)
            if self._written.get(("stream", stream_id)) != row:
                stream_rows.append(row)
        restream_rows: list[tuple[Any, ...]] = []
        for restream_id, stream_id in restreams.items():
            epoch, client_id = self._leases.epoch(stream_id), self._engine.client_of_restream(restream_id)
            status = self._engine.push_status(restream_id)
            if epoch is None or status is None or client_id is None:
                continue
            body = json.dumps(self._restream_fields(status))
            push_row: tuple[Any, ...] = (restream_id, stream_id, self._node_id, epoch, client_id, body)
            if self._written.get(("restream", restream_id)) != push_row:
                restream_rows.append(push_row)
        if not (stream_rows or restream_rows or gone):
            return
        async with self._pool.acquire(timeout=self._period_seconds) as connection:
            async with connection.transaction():
                if stream_rows:
                    await connection.execute(_UPSERT_STREAM, *columns(stream_rows, 1))
                if restream_rows:
                    await connection.execute(_UPSERT_RESTREAM, *columns(restream_rows, 2))
                for stream_id in gone:
                    await connection.execute(_NOT_LIVE, stream_id, self._node_id)
                named = sorted({r[0] for r in stream_rows} | set(gone)), [r[0] for r in restream_rows]
                ids: dict[str, Any] = {"streams": named[0], "restreams": named[1]}
                if len(named[0]) + len(named[1]) > _NOTIFY_MAX_IDS:
                    ids = {"all": True}
                await connection.execute(
                    "SELECT pg_notify($1, $2)", STATUS_CHANNEL, json.dumps({"node_id": self._node_id, **ids})
                )
        self.writes += 1
        for stream_id in gone:
            self._written.pop(("stream", stream_id), None)
        self._written.update({("stream", row[0]): row for row in stream_rows})
        self._written.update({("restream", row[0]): row for row in restream_rows})

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(*DATABASE_ERRORS):  # say "not live" for what this node held
            async with asyncio.timeout(self._period_seconds):
                async with self._pool.acquire() as connection:
                    await connection.execute(
                        "UPDATE stream_status SET live = false, updated_at = now() WHERE node_id = $1", self._node_id
                    )


@dataclass(frozen=True, slots=True)
class _Row:
    node_id: str
    client_id: int
    live: bool
    valid_until: float | None
    """Monotonic time until which the row's lease was valid when read; None: no such lease."""
    data: Mapping[str, Any]
    stream_id: int


class ClusterView:
    """`RemoteView` over the other nodes' rows; owns its listener and refresh task."""

    def __init__(
        self,
        dsn: str,
        pool: asyncpg.Pool,
        node_id: str,
        *,
        refresh_seconds: float = 5.0,
        on_change: Callable[[RemoteEvent], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._dsn = dsn
        self._pool = pool
        self._node_id = node_id
        self._refresh_seconds = refresh_seconds
        self._on_change = on_change
        """Told of each remote stream whose liveness or owner changed and each remote push whose state
        changed, as engine events (this node's event feed)."""
        self._seen: dict[tuple[str, int], tuple[object, ...]] = {}
        self._clock = clock
        self._streams: dict[int, _Row] = {}
        self._restreams: dict[int, _Row] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._pending: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=1000)

    def on_events(self, callback: Callable[[RemoteEvent], None]) -> None:
        """Where the remote changes go (the engine's observers, through `Engine.emit_remote`)."""
        self._on_change = callback

    # RemoteView -----------------------------------------------------------------------------
    def _live(self, row: _Row) -> bool:
        return row.live and row.valid_until is not None and self._clock() < row.valid_until

    def stream(self, stream_id: int) -> RemoteStream | None:
        row = self._streams.get(stream_id)
        return RemoteStream(row.node_id, self._live(row), row.data) if row is not None else None

    def restream(self, restream_id: int) -> RemoteRestream | None:
        row = self._restreams.get(restream_id)
        if row is None:
            return None
        stream = self._streams.get(row.stream_id)
        live = stream is not None and stream.node_id == row.node_id and self._live(stream)
        return RemoteRestream(row.node_id, live, row.data)

    # Reading --------------------------------------------------------------------------------
    async def refresh(self, streams: list[int] | None = None, restreams: list[int] | None = None) -> None:
        """Read the rows named (all of them when both are None)."""
        everything = streams is None and restreams is None
        async with self._pool.acquire(timeout=self._refresh_seconds) as connection:
            if everything or streams:
                only = "" if everything else "AND s.stream_id = ANY($2::bigint[])"
                args: list[Any] = [self._node_id] if everything else [self._node_id, streams]
                rows = await connection.fetch(_READ_STREAMS.format(only=only), *args)
                now = self._clock()
                fresh = {
                    row["stream_id"]: _Row(
                        row["node_id"],
                        row["client_id"],
                        row["live"],
                        now + row["valid_seconds"] if row["valid_seconds"] is not None else None,
                        json.loads(row["snapshot"]),
                        row["stream_id"],
                    )
                    for row in rows
                }
                if everything:
                    self._streams = fresh
                else:
                    for stream_id in streams or ():
                        self._streams.pop(stream_id, None)
                    self._streams.update(fresh)
            if everything or restreams:
                only = "" if everything else "AND r.restream_id = ANY($2::bigint[])"
                args = [self._node_id] if everything else [self._node_id, restreams]
                rows = await connection.fetch(_READ_RESTREAMS.format(only=only), *args)
                fresh = {
                    row["restream_id"]: _Row(
                        row["node_id"], row["client_id"], True, None, json.loads(row["status"]), row["stream_id"]
                    )
                    for row in rows
                }
                if everything:
                    self._restreams = fresh
                else:
                    for restream_id in restreams or ():
                        self._restreams.pop(restream_id, None)
                    self._restreams.update(fresh)

    def _tell(self, *, emit: bool = True) -> None:
        """Events for what changed since last told: a stream's liveness or owner, a push's state."""
        events: list[RemoteEvent] = []
        for stream_id, row in self._streams.items():
            live = self._live(row)
            key = (live, row.node_id)
            if self._seen.get(("stream", stream_id)) != key:
                self._seen[("stream", stream_id)] = key
                events.append(RemoteStreamChanged(row.client_id, stream_id, row.node_id, live, row.data))
        for restream_id, row in self._restreams.items():
            remote = self.restream(restream_id)
            if remote is None or not remote.live:
                continue
            state = (row.node_id, row.data.get("state"))
            if self._seen.get(("restream", restream_id)) != state:
                self._seen[("restream", restream_id)] = state
                events.append(RemoteRestreamChanged(row.client_id, row.stream_id, restream_id, row.node_id, row.data))
        for kind, number in list(self._seen):  # rows gone (streams deleted): forget them
            if number not in (self._streams if kind == "stream" else self._restreams):
                del self._seen[(kind, number)]
        if emit and self._on_change is not None:
            for event in events:
                self._on_change(event)

    def _on_notify(self, connection: object, pid: int, channel: str, payload: object) -> None:
        try:
            told = json.loads(str(payload))
        except ValueError:
            return
        if isinstance(told, dict) and told.get("node_id") != self._node_id:
            with contextlib.suppress(asyncio.QueueFull):  # the periodic refresh catches up
                self._pending.put_nowait(told)

    async def start(self) -> None:
        with contextlib.suppress(*DATABASE_ERRORS):
            await self.refresh()
            self._tell(emit=False)  # what is already live elsewhere is state, not news
        for coroutine, name in ((self._listen_forever(), "status-listener"), (self._apply_forever(), "status-apply")):
            task = asyncio.get_running_loop().create_task(coroutine, name=name)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _apply_forever(self) -> None:
        while True:
            told: dict[str, Any] = {"all": True}
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._refresh_seconds):
                    told = await self._pending.get()
            try:
                if told.get("all"):
                    await self.refresh()
                    self._tell()
                    continue
                streams = [int(i) for i in told.get("streams", [])]
                restreams = [int(i) for i in told.get("restreams", [])]
                await self.refresh(streams, restreams)
                self._tell()
            except DATABASE_ERRORS as exc:
                log.info("remote status not read (%s)", type(exc).__name__)
                continue
            except (TypeError, ValueError):
                continue
            except Exception:  # this loop never ends but by cancellation: the next refresh reads it all
                log.exception("remote status not read")

    async def _listen_forever(self) -> None:
        await listen_forever(
            self._dsn,
            STATUS_CHANNEL,
            self._on_notify,
            timeout_seconds=self._refresh_seconds,
            pause_seconds=1.0,
            on_listening=self._catch_up,
        )

    def _catch_up(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._pending.put_nowait({"all": True})  # what was missed while not listening

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
