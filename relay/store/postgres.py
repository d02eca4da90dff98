"""PostgreSQL store: the definitions shared by several relay nodes, with change notification.

asyncpg, not psycopg 3: it is asyncio-native (no thread per call, the loop also carries the ingest),
speaks the binary protocol (records come back typed: booleans, `timestamptz`), has its own connection
pool, and hands LISTEN/NOTIFY to a plain callback on a connection of ours (`add_listener`), with a
termination callback that says at once when that connection is lost.

Writes: each runs in one transaction that also sends `pg_notify('relay_definitions', {kind, id,
origin})`, so a notification exists if and only if the write committed. The writer announces its own
change on `changes` after the commit, as SQLite does.

Other nodes' writes: one dedicated connection LISTENs (`Follower`). A notification from another origin
(this store instance's id) is turned into `StreamChanged`/`RestreamChanged` on the local feed: `after`
is read from the database, `before` comes from a node-local cache of every definition (id -> record,
loaded at start, kept by local writes and remote changes), so a remote change carries what a local one
does. When the listening connection is lost, the follower reconnects with backoff and, once LISTENing
again, diffs the whole tables against the cache and publishes every difference; the same diff runs
every `resync_seconds` as a safety net (a write made without NOTIFY, a missed message).

Losing PostgreSQL: a read or write raises `StoreUnavailable` (the API answers 503), `healthy` goes
False until a statement succeeds again (`check_health` tries one). The database URL may carry a
password: it is never logged (`database_label`). asyncpg's pool, which reconnects its idle connection with
backoff while the database is away, says so in one line instead of a traceback each try (`_OneLine`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import urlsplit

import asyncpg

from relay.store import api_keys
from relay.store.base import (
    RESTREAM_FIELDS,
    Store,
    StoreError,
    StoreUnavailable,
)
from relay.store.changes import Change, RestreamChanged, StreamChanged
from relay.store.models import ApiKeyRecord, Page, RestreamRecord, StreamRecord
from relay.store.pg_migrations import migrate
from relay.store.rows import (
    hash_key,
    key_of,
    new_restream_columns,
    new_stream_columns,
    new_token,
    now_utc,
    restream_of,
    stream_of,
    stream_update,
)

T = TypeVar("T")
R = TypeVar("R")
if TYPE_CHECKING:
    Conn: TypeAlias = asyncpg.pool.PoolConnectionProxy[asyncpg.Record]
log = logging.getLogger("relay.store")


class _OneLine(logging.Filter):
    """A record with an exception becomes one line, the exception's type and text after the message: asyncpg's
    pool logs "Failed to restore the pool connection floor" with a traceback at every try (1 s, 2 s, ... up to
    60 s apart) for as long as the database is away, which the store already says in one line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_POOL_LOG = logging.getLogger("asyncpg.pool")
if not any(isinstance(f, _OneLine) for f in _POOL_LOG.filters):
    _POOL_LOG.addFilter(_OneLine())

CHANNEL = "relay_definitions"
STATEMENT_TIMEOUT_SECONDS = 10.0
CONNECT_TIMEOUT_SECONDS = 5.0
BLOCKING_READ_TIMEOUT_SECONDS = 2.0
RECONNECT_FIRST_DELAY_SECONDS = 0.1
RECONNECT_MAX_DELAY_SECONDS = 5.0
WRITE_ATTEMPTS = 3
INBOX_MESSAGES = 10_000
"""Notifications waiting to be applied; beyond it they are dropped and one full resync replaces them."""

UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # the server left mid-conversation (below)
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, the server is going away
    asyncpg.exceptions.InsufficientResourcesError,  # disk full, too many connections
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby, or the primary demoted
)
"""What says the database cannot be used now, not that the request was wrong.

asyncpg raises `InternalClientError` ("cannot switch to state 12; another operation (2) is in progress")
for a statement sent on a connection whose server said goodbye (the FATAL of a shutdown, read while
the connection was idle) but whose close has not been read yet: seen when PostgreSQL restarts under load."""
CANNOT_OPEN: tuple[type[BaseException], ...] = (*UNAVAILABLE, asyncpg.PostgresError)


class DatabaseUnreachable(StoreError):
    """The database could not be reached or cannot take connections yet (not a refusal: worth another try)."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def database_label(url: str) -> str:
    """The URL without user or password, for logs: `postgresql://host:port/db`."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@dataclass(frozen=True, slots=True)
class Notice:
    """One definition written by some store instance, as NOTIFY carries it."""

    kind: str
    """`stream`, `restream`, or `resync` (many rows changed at once: diff everything)."""
    id: int
    origin: str

    def payload(self) -> str:
        return json.dumps({"kind": self.kind, "id": self.id, "origin": self.origin}, separators=(",", ":"))

    @staticmethod
    def parse(payload: str) -> Notice | None:
        try:
            data = json.loads(payload)
            return Notice(str(data["kind"]), int(data.get("id", 0)), str(data.get("origin", "")))
        except (ValueError, KeyError, TypeError):
            return None


def _update_sql(table: str, values: Mapping[str, Any]) -> tuple[str, list[Any]]:
    # Column names come from the STREAM_FIELDS/RESTREAM_FIELDS allow-lists (or the store's own: token,
    # gcore_settings), never from the request.
    names = list(values)
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
    return f"UPDATE {table} SET {assignments} WHERE id = $1 RETURNING *", [values[name] for name in names]


class PostgresStore(Store):
    """Definitions in PostgreSQL; owns its pool, its listening connection and the follower's tasks.

    Made with `await PostgresStore.open(url)`: the pool connected, the schema migrated, the cache
    loaded and the follower LISTENing before it returns."""

    def __init__(self, url: str, *, resync_seconds: float = 30.0, pool_size: int = 10) -> None:
        super().__init__()
        self._url = url
        self.label = database_label(url)
        self._resync_seconds = resync_seconds
        self._pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self.origin = uuid.uuid4().hex[:16]
        """This store instance's id in notifications: its own are skipped when they come back."""
        self._streams: dict[int, StreamRecord] = {}
        self._restreams: dict[int, RestreamRecord] = {}
        self._cache_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._healthy = True
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._follower: Follower | None = None

    @classmethod
    async def open(cls, url: str, *, resync_seconds: float = 30.0, pool_size: int = 10) -> PostgresStore:
        """Connect, migrate, load the cache and start following; raises StoreError (one log line)."""
        store = cls(url, resync_seconds=resync_seconds, pool_size=pool_size)
        try:
            await store._start()
        except BaseException:
            await store.close()
            raise
        return store

    async def _start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        try:
            self._pool = await asyncpg.create_pool(
                self._url,
                min_size=1,
                max_size=self._pool_size,
                timeout=CONNECT_TIMEOUT_SECONDS,
                command_timeout=STATEMENT_TIMEOUT_SECONDS,
            )
            async with self._pool.acquire() as conn:
                await migrate(conn)
        except StoreError:
            raise
        except UNAVAILABLE as exc:
            raise DatabaseUnreachable(f"cannot reach the database {self.label}: {_one_line(exc)}") from exc
        except CANNOT_OPEN as exc:
            raise StoreError(f"cannot open the database {self.label}: {exc}") from exc
        async with self._cache_lock:
            streams, restreams = await self._read_all()
            self._streams = {s.id: s for s in streams}
            self._restreams = {r.id: r for r in restreams}
        self._follower = Follower(self, self._url, self._resync_seconds)
        await self._follower.start()

    # Running statements -------------------------------------------------------------------
    @property
    def healthy(self) -> bool:
        return self._healthy

    async def check_health(self) -> bool:
        if self._healthy or self._closed:
            return self._healthy
        # txid_current() assigns a transaction id: a write as far as the server is concerned (a standby,
        # a read-only or a full server refuses it), with nothing to undo.
        with contextlib.suppress(StoreUnavailable):
            await self._run(lambda conn: conn.fetchval("SELECT txid_current()"))
        return self._healthy

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        if self._closed or self._pool is None:
            raise StoreError("store is closed")
        try:
            async with self._pool.acquire(timeout=CONNECT_TIMEOUT_SECONDS) as conn:
                yield conn
        except UNAVAILABLE as exc:
            if self._healthy:
                log.error("the database %s cannot be used (%s): reads and writes fail until it can", self.label, exc)
            self._healthy = False
            raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
        if not self._healthy:
            log.warning("the database %s answers again", self.label)
            self._healthy = True

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        async with self._connection() as conn:
            return await work(conn)

    async def _write(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """Run `work` in one transaction; durable when it returns, rolled back when it raises.

        A transaction the server rolled back to break a deadlock (two nodes deleting a stream and moving
        one of its restreams at once) is run again: nothing of it was kept."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                async with self._connection() as conn, conn.transaction():
                    return await work(conn)
            except asyncpg.exceptions.TransactionRollbackError as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise StoreUnavailable(f"the database rolled the write back {attempt} times ({exc})") from exc
        raise AssertionError("unreachable")

    async def _write_change(self, work: Callable[[Conn], Awaitable[T]], change_of: Callable[[T], Change | None]) -> T:
        """`_write`, then the change announced: no other node's change is applied to the cache between the
        commit and this one, and changes are published in the order they reached the cache."""
        async with self._changing() as announce:
            result = await self._write(work)
            change = change_of(result)
            if change is not None:
                announce(change)
        return result

    @contextlib.asynccontextmanager
    async def _changing(self) -> AsyncIterator[Callable[[Change], None]]:
        """Hold the cache while the body finds changes (`announce(change)`); then keep them in the cache and
        publish them, the publishing lock taken before the cache is let go (so publishing keeps the order)."""
        changes: list[Change] = []
        async with self._cache_lock:
            yield changes.append
            for change in changes:
                self._remember(change)
            if not changes:
                return
            await self._publish_lock.acquire()
        try:
            for change in changes:
                await self.changes.publish(change)
        finally:
            self._publish_lock.release()

    async def _notify(self, conn: Conn, kind: str, row_id: int) -> None:
        """Tell the other nodes, in the writing transaction: sent at its commit, never without it."""
        await conn.execute("SELECT pg_notify($1, $2)", CHANNEL, Notice(kind, row_id, self.origin).payload())

    def _remember(self, change: Change) -> None:
        if isinstance(change, StreamChanged):
            if change.after is None:
                self._streams.pop(change.stream_id, None)
                for restream_id in [r.id for r in self._restreams.values() if r.stream_id == change.stream_id]:
                    del self._restreams[restream_id]
            else:
                self._streams[change.stream_id] = change.after
        elif change.after is None:
            self._restreams.pop(change.restream_id, None)
        else:
            self._restreams[change.restream_id] = change.after

    # Streams ------------------------------------------------------------------------------
    async def create_stream(self, client_id: int, fields: Mapping[str, Any]) -> StreamRecord:
        columns = {**new_stream_columns(client_id, fields), "created_at": now_utc()}

        async def insert(conn: Conn) -> StreamRecord:
            stream = stream_of(await _insert(conn, "streams", columns))
            await self._notify(conn, "stream", stream.id)
            return stream

        return await self._write_change(insert, lambda stream: StreamChanged(stream.id, None, stream))

    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None:
        return await self._run(lambda conn: _select_stream(conn, stream_id, client_id))

    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None:
        """From the cache (every stream is in it); a miss asks the database on the loop, bounded in time.

        On the loop's own thread a miss is a miss: waiting there for the loop would never end."""
        cached = self._streams.get(stream_id)
        if cached is not None or self._loop is None or threading.get_ident() == self._loop_thread:
            return cached
        future = asyncio.run_coroutine_threadsafe(self.get_stream(stream_id), self._loop)
        try:
            return future.result(BLOCKING_READ_TIMEOUT_SECONDS)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable("the database did not answer in time") from None

    async def list_streams(self, client_id: int, offset: int, limit: int) -> Page[StreamRecord]:
        return await self._run(lambda conn: _page(conn, "streams", stream_of, client_id, offset, limit))

    async def update_stream(self, stream_id: int, client_id: int, changes: Mapping[str, Any]) -> StreamRecord | None:
        return await self._change_stream(stream_id, client_id, stream_update(changes))

    async def reset_stream_token(self, stream_id: int, client_id: int) -> StreamRecord | None:
        return await self._change_stream(stream_id, client_id, lambda before: {"token": new_token()})

    async def _change_stream(
        self, stream_id: int, client_id: int, columns: Callable[[StreamRecord], Mapping[str, Any]]
    ) -> StreamRecord | None:
        """Write `columns(before)` to the client's stream in one transaction and announce the change."""

        async def update(conn: Conn) -> tuple[StreamRecord, StreamRecord] | None:
            before = await _select_stream(conn, stream_id, client_id, lock=True)
            if before is None:
                return None
            values = columns(before)
            if not values:
                return before, before
            sql, params = _update_sql("streams", values)
            after = stream_of(await _one(conn, sql, stream_id, *params))
            await self._notify(conn, "stream", stream_id)
            return before, after

        result = await self._write_change(update, lambda r: None if r is None else StreamChanged(stream_id, *r))
        return None if result is None else result[1]

    async def delete_stream(self, stream_id: int, client_id: int) -> bool:
        async def delete(conn: Conn) -> StreamRecord | None:
            before = await _select_stream(conn, stream_id, client_id, lock=True)
            if before is not None:
                await conn.execute(
                    "DELETE FROM restreams WHERE stream_id = $1 AND client_id = $2", stream_id, client_id
                )
                await conn.execute("DELETE FROM streams WHERE id = $1 AND client_id = $2", stream_id, client_id)
                await self._notify(conn, "stream", stream_id)
            return before

        before = await self._write_change(delete, lambda b: None if b is None else StreamChanged(stream_id, b, None))
        return before is not None

    async def all_streams(self) -> list[StreamRecord]:
        return await self._run(_all_streams)

    # Restreams ----------------------------------------------------------------------------
    async def create_restream(self, client_id: int, fields: Mapping[str, Any]) -> RestreamRecord:
        columns = {**new_restream_columns(client_id, fields), "created_at": now_utc()}

        async def insert(conn: Conn) -> RestreamRecord:
            restream = restream_of(await _insert(conn, "restreams", columns))
            await self._notify(conn, "restream", restream.id)
            return restream

        try:
            return await self._write_change(insert, lambda r: RestreamChanged(r.id, None, r))
        except asyncpg.ForeignKeyViolationError as exc:  # the stream vanished between validation and insert
            raise StoreError("stream does not exist") from exc

    async def get_restream(self, restream_id: int, client_id: int | None = None) -> RestreamRecord | None:
        return await self._run(lambda conn: _select_restream(conn, restream_id, client_id))

    async def list_restreams(self, client_id: int, offset: int, limit: int) -> Page[RestreamRecord]:
        return await self._run(lambda conn: _page(conn, "restreams", restream_of, client_id, offset, limit))

    async def active_restreams(self, stream_id: int | None = None) -> list[RestreamRecord]:
        query = "SELECT r.* FROM restreams r JOIN streams s ON s.id = r.stream_id WHERE r.active AND s.active"

        async def work(conn: Conn) -> list[RestreamRecord]:
            if stream_id is None:
                rows = await conn.fetch(query + " ORDER BY r.id")
            else:
                rows = await conn.fetch(query + " AND s.id = $1 ORDER BY r.id", stream_id)
            return [restream_of(r) for r in rows]

        return await self._run(work)

    async def restream_count(self, stream_id: int) -> int:
        count = await self._run(
            lambda conn: conn.fetchval("SELECT COUNT(*) FROM restreams WHERE stream_id = $1", stream_id)
        )
        return int(count)

    async def all_restreams(self) -> list[RestreamRecord]:
        return await self._run(_all_restreams)

    async def update_restream(
        self, restream_id: int, client_id: int, changes: Mapping[str, Any]
    ) -> RestreamRecord | None:
        values = {k: v for k, v in changes.items() if k in RESTREAM_FIELDS}

        async def update(conn: Conn) -> tuple[RestreamRecord, RestreamRecord] | None:
            before = await _select_restream(conn, restream_id, client_id, lock=True)
            if before is None:
                return None
            if not values:
                return before, before
            sql, params = _update_sql("restreams", values)
            after = restream_of(await _one(conn, sql, restream_id, *params))
            await self._notify(conn, "restream", restream_id)
            return before, after

        try:
            result = await self._write_change(update, lambda r: None if r is None else RestreamChanged(restream_id, *r))
        except asyncpg.ForeignKeyViolationError as exc:
            raise StoreError("stream does not exist") from exc
        return None if result is None else result[1]

    async def delete_restream(self, restream_id: int, client_id: int) -> bool:
        async def delete(conn: Conn) -> RestreamRecord | None:
            before = await _select_restream(conn, restream_id, client_id, lock=True)
            if before is not None:
                await conn.execute("DELETE FROM restreams WHERE id = $1", restream_id)
                await self._notify(conn, "restream", restream_id)
            return before

        before = await self._write_change(
            delete, lambda b: None if b is None else RestreamChanged(restream_id, b, None)
        )
        return before is not None

    # API keys (the rules are in relay/store/api_keys.py) --------------------------------------
    async def create_api_key(self, client_id: int, label: str = "", key: str | None = None) -> tuple[str, ApiKeyRecord]:
        clear = key or api_keys.new_key(client_id)
        prefix = api_keys.public_prefix(clear)
        digest = hash_key(clear)

        async def insert(conn: Conn) -> ApiKeyRecord:
            row = await conn.fetchrow(
                "INSERT INTO api_keys (client_id, key_hash, prefix, label, created_at) VALUES ($1, $2, $3, $4, $5)"
                " ON CONFLICT (key_hash) DO NOTHING RETURNING *",
                client_id,
                digest,
                prefix,
                label,
                now_utc(),
            )
            if row is not None:
                return key_of(row)
            existing = await _one(conn, "SELECT * FROM api_keys WHERE key_hash = $1", digest)
            return api_keys.reuse(existing, client_id)

        return clear, await self._write(insert)

    async def client_for_key(self, key: str) -> int | None:
        digest = hash_key(key)
        client = await self._run(
            lambda conn: conn.fetchval(
                "SELECT client_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL", digest
            )
        )
        return None if client is None else int(client)

    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        row = await self._run(lambda conn: conn.fetchrow("SELECT * FROM api_keys WHERE key_hash = $1", digest))
        return None if row is None else key_of(row)

    async def active_api_key_ids(self, key_ids: Collection[int]) -> set[int]:
        wanted = sorted({int(key_id) for key_id in key_ids})
        if not wanted:
            return set()
        rows = await self._run(
            lambda conn: conn.fetch(
                "SELECT id FROM api_keys WHERE id = ANY($1::bigint[]) AND revoked_at IS NULL", wanted
            )
        )
        return {int(row["id"]) for row in rows}

    async def list_api_keys(self, client_id: int | None = None) -> list[ApiKeyRecord]:
        async def work(conn: Conn) -> list[asyncpg.Record]:
            if client_id is None:
                return await conn.fetch("SELECT * FROM api_keys ORDER BY id")
            return await conn.fetch("SELECT * FROM api_keys WHERE client_id = $1 ORDER BY id", client_id)

        return [key_of(row) for row in await self._run(work)]

    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKeyRecord | None:
        wanted = key_id_or_prefix.strip()
        if not wanted:
            return None

        async def revoke(conn: Conn) -> ApiKeyRecord | None:
            # Locked: two revocations at once (two nodes, or the CLI) see each other's result.
            active = await conn.fetch("SELECT * FROM api_keys WHERE revoked_at IS NULL FOR UPDATE")
            row = api_keys.one_to_revoke(active, wanted)
            if row is None:
                return None
            revoked = await _one(
                conn, "UPDATE api_keys SET revoked_at = $2 WHERE id = $1 RETURNING *", row["id"], now_utc()
            )
            return key_of(revoked)

        return await self._write(revoke)

    # Other nodes' writes --------------------------------------------------------------------
    async def apply_notice(self, notice: Notice) -> None:
        """Turn another node's write into a change on the local feed (`before` from the cache)."""
        if notice.origin == self.origin:
            return
        if notice.kind == "resync":
            await self.resync()
            return
        async with self._changing() as announce:
            if notice.kind == "stream":
                stream = await self.get_stream(notice.id)
                if stream != self._streams.get(notice.id):
                    announce(StreamChanged(notice.id, self._streams.get(notice.id), stream))
            elif notice.kind == "restream":
                restream = await self.get_restream(notice.id)
                if restream != self._restreams.get(notice.id):
                    announce(RestreamChanged(notice.id, self._restreams.get(notice.id), restream))

    async def resync(self) -> int:
        """Diff both tables against the cache and publish every difference; returns how many there were.

        Streams created or changed first, then restreams, then streams deleted (their restreams go with
        them without a change of their own, as a local delete announces it)."""
        async with self._changing() as announce:
            streams, restreams = await self._read_all()
            now_streams = {s.id: s for s in streams}
            now_restreams = {r.id: r for r in restreams}
            changes: list[Change] = []
            gone: list[Change] = []
            for stream_id in sorted(self._streams.keys() | now_streams.keys()):
                before, after = self._streams.get(stream_id), now_streams.get(stream_id)
                if before != after:
                    (gone if after is None else changes).append(StreamChanged(stream_id, before, after))
            for restream_id in sorted(self._restreams.keys() | now_restreams.keys()):
                old, new = self._restreams.get(restream_id), now_restreams.get(restream_id)
                if old != new and not (new is None and old is not None and old.stream_id not in now_streams):
                    changes.append(RestreamChanged(restream_id, old, new))
            self._streams, self._restreams = now_streams, now_restreams
            changes.extend(gone)
            for change in changes:
                announce(change)  # kept in the cache again: the same records, nothing lost
            if changes:
                log.info("resynchronised with the database: %d definitions changed elsewhere", len(changes))
        return len(changes)

    async def _read_all(self) -> tuple[list[StreamRecord], list[RestreamRecord]]:
        async def work(conn: Conn) -> tuple[list[StreamRecord], list[RestreamRecord]]:
            # One snapshot: a restream is never read without the stream it belongs to.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _all_streams(conn), await _all_restreams(conn)

        return await self._run(work)

    @property
    def listening_pid(self) -> int | None:
        """The server process of the listening connection (None while it is being re-made)."""
        return None if self._follower is None else self._follower.pid

    # Lifecycle ------------------------------------------------------------------------------
    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._follower is not None:
            await self._follower.close()
        if self._pool is not None:
            with contextlib.suppress(*UNAVAILABLE):
                await asyncio.wait_for(self._pool.close(), timeout=CONNECT_TIMEOUT_SECONDS)
            self._pool.terminate()


class Follower:
    """The LISTENing connection and the tasks that apply what it hears; owned by the store.

    `_follow` connects, LISTENs, resyncs, then waits for the connection's loss (reconnect with backoff,
    resync again) or for the safety-net period (check the connection, resync). `_apply` takes the
    notifications from a bounded inbox, in order; an overflow drops them and asks for one resync."""

    def __init__(self, store: PostgresStore, url: str, resync_seconds: float) -> None:
        self._store = store
        self._url = url
        self._resync_seconds = resync_seconds
        self._inbox: asyncio.Queue[Notice] = asyncio.Queue(INBOX_MESSAGES)
        self._overflowed = False
        self._conn: asyncpg.Connection | None = None
        self._lost = asyncio.Event()
        self._ready = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.pid: int | None = None
        self._was_lost = False

    async def start(self) -> None:
        """Start the tasks and wait (bounded) until the first LISTEN is in place."""
        self._tasks = [
            asyncio.create_task(self._follow(), name="relay-store-follow"),
            asyncio.create_task(self._apply(), name="relay-store-apply"),
        ]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), timeout=CONNECT_TIMEOUT_SECONDS)

    def _on_notification(self, conn: object, pid: int, channel: str, payload: object) -> None:
        notice = Notice.parse(str(payload))
        if notice is None or notice.origin == self._store.origin:
            return
        try:
            self._inbox.put_nowait(notice)
        except asyncio.QueueFull:
            self._overflowed = True  # the next resync (asked for below) covers what was dropped
            self._lost.set()

    def _on_termination(self, conn: object) -> None:
        self._lost.set()

    async def _apply(self) -> None:
        while True:
            notice = await self._inbox.get()
            try:
                await self._store.apply_notice(notice)
            except (StoreUnavailable, StoreError) as exc:
                # The database went away under us: the resync after the reconnect covers this change.
                log.warning("a change from another node could not be read now (%s); the next resync will", exc)
            except Exception:
                log.exception("applying a change from another node failed")

    async def _follow(self) -> None:
        delay = RECONNECT_FIRST_DELAY_SECONDS
        while True:
            try:
                await self._listen()
                delay = RECONNECT_FIRST_DELAY_SECONDS
                await self._watch()
            except Exception as exc:  # whatever it was, the connection is re-made: the follower never dies
                if self.pid is not None or delay == RECONNECT_FIRST_DELAY_SECONDS:
                    log.warning("lost the change notifications of %s (%s): reconnecting", self._store.label, exc)
                    self._was_lost = True
            finally:
                await self._drop_connection()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_DELAY_SECONDS)

    async def _listen(self) -> None:
        self._lost.clear()
        conn = self._conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_SECONDS)
        conn.add_termination_listener(self._on_termination)
        await conn.add_listener(CHANNEL, self._on_notification)
        self.pid = conn.get_server_pid()
        if self._was_lost:
            log.warning("following the change notifications of %s again; resynchronising", self._store.label)
            self._was_lost = False
        # After LISTEN, so that nothing committed from now on is missed; what came before, the diff finds.
        self._overflowed = False
        await self._store.resync()
        self._ready.set()

    async def _watch(self) -> None:
        """Return normally never: raise when the connection is lost, resync every period meanwhile."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._lost.wait(), timeout=self._resync_seconds)
            if self._lost.is_set() and not self._overflowed:
                raise ConnectionError("the listening connection was closed")
            self._lost.clear()
            self._overflowed = False
            assert self._conn is not None
            await self._conn.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_SECONDS)  # a dead link shows here
            await self._store.resync()

    async def _drop_connection(self) -> None:
        conn, self._conn, self.pid = self._conn, None, None
        if conn is not None and not conn.is_closed():
            conn.terminate()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._drop_connection()


async def _select(
    conn: Conn, table: str, row_id: int, client_id: int | None, *, lock: bool = False
) -> asyncpg.Record | None:
    """The row by id; with `client_id`, only that client's; `lock`: held until the transaction ends."""
    suffix = " FOR UPDATE" if lock else ""
    if client_id is None:
        return await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1{suffix}", row_id)
    return await conn.fetchrow(f"SELECT * FROM {table} WHERE id = $1 AND client_id = $2{suffix}", row_id, client_id)


async def _select_stream(
    conn: Conn, stream_id: int, client_id: int | None, *, lock: bool = False
) -> StreamRecord | None:
    row = await _select(conn, "streams", stream_id, client_id, lock=lock)
    return None if row is None else stream_of(row)


async def _select_restream(
    conn: Conn, restream_id: int, client_id: int | None, *, lock: bool = False
) -> RestreamRecord | None:
    row = await _select(conn, "restreams", restream_id, client_id, lock=lock)
    return None if row is None else restream_of(row)


async def _insert(conn: Conn, table: str, values: Mapping[str, Any]) -> asyncpg.Record:
    """Insert one row (column names are the store's own) and return it as stored."""
    names = ", ".join(values)
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    return await _one(conn, f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING *", *values.values())


async def _all_streams(conn: Conn) -> list[StreamRecord]:
    return [stream_of(r) for r in await conn.fetch("SELECT * FROM streams ORDER BY id")]


async def _all_restreams(conn: Conn) -> list[RestreamRecord]:
    return [restream_of(r) for r in await conn.fetch("SELECT * FROM restreams ORDER BY id")]


async def _one(conn: Conn, sql: str, *args: Any) -> asyncpg.Record:
    """The row a statement must return (an INSERT ... RETURNING, a row locked in this transaction)."""
    row = await conn.fetchrow(sql, *args)
    if row is None:
        raise StoreError("the database returned no row where one was expected")
    return row


async def _page(
    conn: Conn, table: str, record_of: Callable[[asyncpg.Record], R], client_id: int, offset: int, limit: int
) -> Page[R]:
    """A client's rows of `table`, newest first, and how many it has in all."""
    rows = await conn.fetch(
        f"SELECT * FROM {table} WHERE client_id = $1 ORDER BY id DESC LIMIT $2 OFFSET $3", client_id, limit, offset
    )
    total = await conn.fetchval(f"SELECT COUNT(*) FROM {table} WHERE client_id = $1", client_id)
    return Page([record_of(r) for r in rows], int(total))
