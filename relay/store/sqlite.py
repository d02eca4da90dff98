"""SQLite store: one file, WAL mode, versioned migrations, every write fsynced before it returns.

All statements run on one worker thread so that a slow disk never stalls the event loop (which also
carries the RTMP ingest). A second, read-only connection serves blocking look-ups from other threads.
Ids come from AUTOINCREMENT so a deleted stream's id is never handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from relay.store import api_keys
from relay.store.base import (
    RESTREAM_FIELDS,
    Store,
    StoreError,
    StoreUnavailable,
)
from relay.store.changes import RestreamChanged, StreamChanged
from relay.store.migrations import connect, open_writer
from relay.store.models import ApiKeyRecord, Page, RestreamRecord, StreamRecord
from relay.store.permissions import make_private
from relay.store.rows import (
    hash_key,
    insert_row,
    new_restream_columns,
    new_stream_columns,
    new_token,
    now,
    restream_of,
    select_restream,
    select_stream,
    stream_of,
    stream_update,
    update_row,
)

T = TypeVar("T")
log = logging.getLogger("relay.store")


class SqliteStore(Store):
    """Definitions in one SQLite file; owns its connections and its worker thread."""

    reads_from_any_loop = True
    """Reads go through the store's own worker thread (`_run`) or the reader's lock: any event loop may
    call them (the API's, api/loops.py); writes stay on the loop whose change feed subscribers act."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the database; raises StoreError, with a message fit for one log line, when
        the file is not a database, is corrupt, or has a schema newer than this relay."""
        super().__init__()
        make_private(path)
        self._path = path
        self._conn = open_writer(path)
        try:
            self._reader = connect(path, readonly=True)
        except sqlite3.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open the database {path}: {exc}") from exc
        self._reader_lock = threading.Lock()
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relay-store")
        self._closed = False
        self._healthy = True

    @property
    def path(self) -> Path:
        return self._path

    @property
    def healthy(self) -> bool:
        return self._healthy

    async def check_health(self) -> bool:
        if self._healthy or self._closed:
            return self._healthy

        def probe(conn: sqlite3.Connection) -> None:
            # Creating a table takes a new page, as a real write would; dropping it leaves the schema as it was.
            def statements(c: sqlite3.Connection) -> None:
                c.execute("CREATE TABLE _health_probe (x)")
                c.execute("DROP TABLE _health_probe")

            self._write(conn, statements)

        with contextlib.suppress(StoreUnavailable):
            await self._run(probe)
        return self._healthy

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise StoreError("store is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._worker, work, self._conn)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise  # the request's (a stream that vanished) or our bug, not the disk's
        except sqlite3.DatabaseError as exc:
            # Disk full, I/O error, read-only, corrupt page, locked too long: nothing of this call was kept.
            if self._healthy:
                log.error("the database cannot be used (%s): writes fail until it can", exc)
            self._healthy = False
            raise StoreUnavailable(str(exc)) from exc

    def _write(self, conn: sqlite3.Connection, statements: Callable[[sqlite3.Connection], T]) -> T:
        """Run `statements` in one transaction; durable when it returns, rolled back when it raises."""
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # left over from a rollback that failed too (the disk was gone)
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = statements(conn)
            conn.execute("COMMIT")
        except BaseException:
            # A failed COMMIT (disk full, I/O error, a deferred constraint) can leave the transaction open,
            # and every later BEGIN would then fail: end it. Nothing of it was acknowledged.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        if not self._healthy:
            log.warning("the database accepts writes again")
            self._healthy = True
        return result

    # Streams ------------------------------------------------------------------------------
    async def create_stream(self, client_id: int, fields: Mapping[str, Any]) -> StreamRecord:
        columns = {**new_stream_columns(client_id, fields), "created_at": now()}

        def work(conn: sqlite3.Connection) -> StreamRecord:
            def insert(c: sqlite3.Connection) -> StreamRecord:
                row_id = insert_row(c, "streams", columns)
                return stream_of(c.execute("SELECT * FROM streams WHERE id = ?", (row_id,)).fetchone())

            return self._write(conn, insert)

        stream = await self._run(work)
        await self.changes.publish(StreamChanged(stream.id, None, stream))
        return stream

    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None:
        def work(conn: sqlite3.Connection) -> StreamRecord | None:
            return select_stream(conn, stream_id, client_id)

        return await self._run(work)

    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None:
        with self._reader_lock:
            return select_stream(self._reader, stream_id, None)

    async def list_streams(self, client_id: int, offset: int, limit: int) -> Page[StreamRecord]:
        def work(conn: sqlite3.Connection) -> Page[StreamRecord]:
            rows = conn.execute(
                "SELECT * FROM streams WHERE client_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (client_id, limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM streams WHERE client_id = ?", (client_id,)).fetchone()[0]
            return Page([stream_of(r) for r in rows], total)

        return await self._run(work)

    async def update_stream(self, stream_id: int, client_id: int, changes: Mapping[str, Any]) -> StreamRecord | None:
        return await self._change_stream(stream_id, client_id, stream_update(changes))

    async def reset_stream_token(self, stream_id: int, client_id: int) -> StreamRecord | None:
        return await self._change_stream(stream_id, client_id, lambda before: {"token": new_token()})

    async def _change_stream(
        self, stream_id: int, client_id: int, columns: Callable[[StreamRecord], Mapping[str, Any]]
    ) -> StreamRecord | None:
        """Write `columns(before)` to the client's stream in one transaction and announce the change."""

        def work(conn: sqlite3.Connection) -> tuple[StreamRecord, StreamRecord] | None:
            def update(c: sqlite3.Connection) -> tuple[StreamRecord, StreamRecord] | None:
                before = select_stream(c, stream_id, client_id)
                if before is None:
                    return None
                update_row(c, "streams", stream_id, columns(before))
                after = select_stream(c, stream_id, client_id)
                assert after is not None
                return before, after

            return self._write(conn, update)

        result = await self._run(work)
        if result is None:
            return None
        await self.changes.publish(StreamChanged(stream_id, *result))
        return result[1]

    async def delete_stream(self, stream_id: int, client_id: int) -> bool:
        def work(conn: sqlite3.Connection) -> StreamRecord | None:
            def delete(c: sqlite3.Connection) -> StreamRecord | None:
                before = select_stream(c, stream_id, client_id)
                if before is not None:
                    c.execute("DELETE FROM restreams WHERE stream_id = ? AND client_id = ?", (stream_id, client_id))
                    c.execute("DELETE FROM streams WHERE id = ? AND client_id = ?", (stream_id, client_id))
                return before

            return self._write(conn, delete)

        before = await self._run(work)
        if before is None:
            return False
        await self.changes.publish(StreamChanged(stream_id, before, None))
        return True

    async def all_streams(self) -> list[StreamRecord]:
        def work(conn: sqlite3.Connection) -> list[StreamRecord]:
            return [stream_of(r) for r in conn.execute("SELECT * FROM streams ORDER BY id")]

        return await self._run(work)

    # Restreams ----------------------------------------------------------------------------
    async def create_restream(self, client_id: int, fields: Mapping[str, Any]) -> RestreamRecord:
        columns = {**new_restream_columns(client_id, fields), "created_at": now()}

        def work(conn: sqlite3.Connection) -> RestreamRecord:
            def insert(c: sqlite3.Connection) -> RestreamRecord:
                row_id = insert_row(c, "restreams", columns)
                return restream_of(c.execute("SELECT * FROM restreams WHERE id = ?", (row_id,)).fetchone())

            return self._write(conn, insert)

        try:
            restream = await self._run(work)
        except sqlite3.IntegrityError as exc:  # the stream vanished between validation and insert
            raise StoreError("stream does not exist") from exc
        await self.changes.publish(RestreamChanged(restream.id, None, restream))
        return restream

    async def get_restream(self, restream_id: int, client_id: int | None = None) -> RestreamRecord | None:
        def work(conn: sqlite3.Connection) -> RestreamRecord | None:
            return select_restream(conn, restream_id, client_id)

        return await self._run(work)

    async def list_restreams(self, client_id: int, offset: int, limit: int) -> Page[RestreamRecord]:
        def work(conn: sqlite3.Connection) -> Page[RestreamRecord]:
            rows = conn.execute(
                "SELECT * FROM restreams WHERE client_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (client_id, limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM restreams WHERE client_id = ?", (client_id,)).fetchone()[0]
            return Page([restream_of(r) for r in rows], total)

        return await self._run(work)

    async def active_restreams(self, stream_id: int | None = None) -> list[RestreamRecord]:
        def work(conn: sqlite3.Connection) -> list[RestreamRecord]:
            query = (
                "SELECT r.* FROM restreams r JOIN streams s ON s.id = r.stream_id WHERE r.active = 1 AND s.active = 1"
            )
            if stream_id is None:
                rows = conn.execute(query + " ORDER BY r.id")
            else:
                rows = conn.execute(query + " AND s.id = ? ORDER BY r.id", (stream_id,))
            return [restream_of(r) for r in rows]

        return await self._run(work)

    async def restream_count(self, stream_id: int) -> int:
        def work(conn: sqlite3.Connection) -> int:
            count: int = conn.execute("SELECT COUNT(*) FROM restreams WHERE stream_id = ?", (stream_id,)).fetchone()[0]
            return count

        return await self._run(work)

    async def all_restreams(self) -> list[RestreamRecord]:
        def work(conn: sqlite3.Connection) -> list[RestreamRecord]:
            return [restream_of(r) for r in conn.execute("SELECT * FROM restreams ORDER BY id")]

        return await self._run(work)

    async def update_restream(
        self, restream_id: int, client_id: int, changes: Mapping[str, Any]
    ) -> RestreamRecord | None:
        values = {k: v for k, v in changes.items() if k in RESTREAM_FIELDS}

        def work(conn: sqlite3.Connection) -> tuple[RestreamRecord, RestreamRecord] | None:
            def update(c: sqlite3.Connection) -> tuple[RestreamRecord, RestreamRecord] | None:
                before = select_restream(c, restream_id, client_id)
                if before is None:
                    return None
                update_row(c, "restreams", restream_id, values)
                after = select_restream(c, restream_id, client_id)
                assert after is not None
                return before, after

            return self._write(conn, update)

        try:
            result = await self._run(work)
        except sqlite3.IntegrityError as exc:
            raise StoreError("stream does not exist") from exc
        if result is None:
            return None
        await self.changes.publish(RestreamChanged(restream_id, *result))
        return result[1]

    async def delete_restream(self, restream_id: int, client_id: int) -> bool:
        def work(conn: sqlite3.Connection) -> RestreamRecord | None:
            def delete(c: sqlite3.Connection) -> RestreamRecord | None:
                before = select_restream(c, restream_id, client_id)
                if before is not None:
                    c.execute("DELETE FROM restreams WHERE id = ?", (restream_id,))
                return before

            return self._write(conn, delete)

        before = await self._run(work)
        if before is None:
            return False
        await self.changes.publish(RestreamChanged(restream_id, before, None))
        return True

    # API keys (the SQL is in relay/store/api_keys.py) ----------------------------------------
    async def create_api_key(self, client_id: int, label: str = "", key: str | None = None) -> tuple[str, ApiKeyRecord]:
        clear = key or api_keys.new_key(client_id)
        prefix = api_keys.public_prefix(clear)
        record = await self._run(
            lambda conn: self._write(conn, lambda c: api_keys.insert(c, client_id, clear, prefix, label))
        )
        return clear, record

    async def client_for_key(self, key: str) -> int | None:
        digest = hash_key(key)
        return await self._run(lambda conn: api_keys.client_of(conn, digest))

    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)
        return await self._run(lambda conn: api_keys.find(conn, digest))

    async def active_api_key_ids(self, key_ids: Collection[int]) -> set[int]:
        wanted = sorted({int(key_id) for key_id in key_ids})
        return await self._run(lambda conn: api_keys.active_ids(conn, wanted)) if wanted else set()

    async def list_api_keys(self, client_id: int | None = None) -> list[ApiKeyRecord]:
        return await self._run(lambda conn: api_keys.listed(conn, client_id))

    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKeyRecord | None:
        wanted = key_id_or_prefix.strip()
        if not wanted:
            return None
        return await self._run(lambda conn: self._write(conn, lambda c: api_keys.revoke(c, wanted)))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._conn.close)
        self._worker.shutdown(wait=True)
        with self._reader_lock:
            self._reader.close()
