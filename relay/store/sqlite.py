"""SQLite store: one file, WAL mode, versioned migrations, every write fsynced before it returns.

All statements run on one worker thread so that a slow disk never stalls the event loop (which also
carries the RTMP ingest). A second, read-only connection serves blocking look-ups from other threads.
Ids come from AUTOINCREMENT so a deleted stream's id is never handed out again.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import secrets
import sqlite3
import threading
from collections.abc import Callable, Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from relay.store.base import (
    GCORE_SETTINGS_FIELDS,
    RESTREAM_FIELDS,
    STREAM_FIELDS,
    AmbiguousKeyPrefix,
    Store,
    StoreError,
    StoreUnavailable,
)
from relay.store.changes import RestreamChanged, StreamChanged
from relay.store.migrations import connect, migrate
from relay.store.models import ApiKeyRecord, GcoreSettings, Page, RestreamRecord, StreamRecord
from relay.store.permissions import make_private

T = TypeVar("T")
log = logging.getLogger("relay.store")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _when(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def hash_key(key: str) -> str:
    # Keys are 256-bit random strings, so a plain SHA-256 is enough: no dictionary to defend against.
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def new_token() -> str:
    """A stream's publish token: unguessable and URL-safe (no '#', '?', ',' or '&')."""
    return secrets.token_urlsafe(24)


def _settings_json(settings: GcoreSettings) -> str:
    return json.dumps(dataclasses.asdict(settings), separators=(",", ":"))


def _settings(text: str) -> GcoreSettings:
    """The stored settings over the defaults: a key this relay does not know is left out, a missing one is
    the default (a row written before a setting existed)."""
    stored = json.loads(text or "{}")
    known = {name: value for name, value in stored.items() if name in GCORE_SETTINGS_FIELDS}
    if isinstance(known.get("broadcast_ids"), list):
        known["broadcast_ids"] = tuple(known["broadcast_ids"])
    return GcoreSettings(**known)


def _with_settings(settings: GcoreSettings, values: Mapping[str, Any]) -> GcoreSettings:
    changes = {name: value for name, value in values.items() if name in GCORE_SETTINGS_FIELDS}
    if "broadcast_ids" in changes:
        changes["broadcast_ids"] = tuple(changes["broadcast_ids"] or ())
    return dataclasses.replace(settings, **changes)


def _stream(row: sqlite3.Row) -> StreamRecord:
    return StreamRecord(
        id=row["id"],
        client_id=row["client_id"],
        name=row["name"],
        active=bool(row["active"]),
        token=row["token"],
        created_at=_when(row["created_at"]) or datetime.now(UTC),
        client_user_id=row["client_user_id"],
        srt_passphrase=row["srt_passphrase"],
        srt_latency_ms=row["srt_latency_ms"],
        client_entity_data=row["client_entity_data"],
        gcore_settings=_settings(row["gcore_settings"]),
        pull=bool(row["pull"]),
        uri=row["uri"],
    )


def _restream(row: sqlite3.Row) -> RestreamRecord:
    return RestreamRecord(
        id=row["id"],
        client_id=row["client_id"],
        stream_id=row["stream_id"],
        name=row["name"],
        active=bool(row["active"]),
        uri=row["uri"],
        created_at=_when(row["created_at"]) or datetime.now(UTC),
        client_user_id=row["client_user_id"],
        no_audio=bool(row["no_audio"]),
        no_audio_mode=row["no_audio_mode"],
        tls_verify=bool(row["tls_verify"]),
    )


def _key(row: sqlite3.Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        client_id=row["client_id"],
        prefix=row["prefix"],
        label=row["label"],
        created_at=_when(row["created_at"]) or datetime.now(UTC),
        revoked_at=_when(row["revoked_at"]),
    )


class SqliteStore(Store):
    """Definitions in one SQLite file; owns its connections and its worker thread."""

    def __init__(self, path: Path) -> None:
        """Open (or create) the database; raises StoreError, with a message fit for one log line, when
        the file is not a database, is corrupt, or has a schema newer than this relay."""
        super().__init__()
        make_private(path)
        self._path = path
        self._conn = _open_writer(path)
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
        values = {k: v for k, v in fields.items() if k in STREAM_FIELDS}
        settings = _with_settings(GcoreSettings(), fields)

        def work(conn: sqlite3.Connection) -> StreamRecord:
            def insert(c: sqlite3.Connection) -> StreamRecord:
                cur = c.execute(
                    "INSERT INTO streams (client_id, name, active, token, client_user_id, srt_passphrase,"
                    " srt_latency_ms, client_entity_data, gcore_settings, pull, uri, created_at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        client_id,
                        values.get("name", ""),
                        int(values.get("active", True)),
                        new_token(),
                        values.get("client_user_id"),
                        values.get("srt_passphrase"),
                        values.get("srt_latency_ms"),
                        values.get("client_entity_data"),
                        _settings_json(settings),
                        int(values.get("pull", False)),
                        values.get("uri"),
                        _now(),
                    ),
                )
                return _stream(c.execute("SELECT * FROM streams WHERE id = ?", (cur.lastrowid,)).fetchone())

            return self._write(conn, insert)

        stream = await self._run(work)
        await self.changes.publish(StreamChanged(stream.id, None, stream))
        return stream

    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None:
        def work(conn: sqlite3.Connection) -> StreamRecord | None:
            return _select_stream(conn, stream_id, client_id)

        return await self._run(work)

    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None:
        with self._reader_lock:
            return _select_stream(self._reader, stream_id, None)

    async def list_streams(self, client_id: int, offset: int, limit: int) -> Page[StreamRecord]:
        def work(conn: sqlite3.Connection) -> Page[StreamRecord]:
            rows = conn.execute(
                "SELECT * FROM streams WHERE client_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (client_id, limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM streams WHERE client_id = ?", (client_id,)).fetchone()[0]
            return Page([_stream(r) for r in rows], total)

        return await self._run(work)

    async def update_stream(self, stream_id: int, client_id: int, changes: Mapping[str, Any]) -> StreamRecord | None:
        values = {k: v for k, v in changes.items() if k in STREAM_FIELDS}
        settings_changed = not GCORE_SETTINGS_FIELDS.isdisjoint(changes)

        def columns(before: StreamRecord) -> dict[str, Any]:
            if not settings_changed:
                return values
            return {**values, "gcore_settings": _settings_json(_with_settings(before.gcore_settings, changes))}

        return await self._change_stream(stream_id, client_id, columns)

    async def reset_stream_token(self, stream_id: int, client_id: int) -> StreamRecord | None:
        return await self._change_stream(stream_id, client_id, lambda before: {"token": new_token()})

    async def _change_stream(
        self, stream_id: int, client_id: int, columns: Callable[[StreamRecord], Mapping[str, Any]]
    ) -> StreamRecord | None:
        """Write `columns(before)` to the client's stream in one transaction and announce the change."""

        def work(conn: sqlite3.Connection) -> tuple[StreamRecord, StreamRecord] | None:
            def update(c: sqlite3.Connection) -> tuple[StreamRecord, StreamRecord] | None:
                before = _select_stream(c, stream_id, client_id)
                if before is None:
                    return None
                _update_row(c, "streams", stream_id, columns(before))
                after = _select_stream(c, stream_id, client_id)
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
                before = _select_stream(c, stream_id, client_id)
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
            return [_stream(r) for r in conn.execute("SELECT * FROM streams ORDER BY id")]

        return await self._run(work)

    # Restreams ----------------------------------------------------------------------------
    async def create_restream(self, client_id: int, fields: Mapping[str, Any]) -> RestreamRecord:
        values = {k: v for k, v in fields.items() if k in RESTREAM_FIELDS}

        def work(conn: sqlite3.Connection) -> RestreamRecord:
            def insert(c: sqlite3.Connection) -> RestreamRecord:
                cur = c.execute(
                    "INSERT INTO restreams (client_id, stream_id, name, active, uri, client_user_id, no_audio,"
                    " no_audio_mode, tls_verify, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        client_id,
                        values["stream_id"],
                        values.get("name", ""),
                        int(values.get("active", True)),
                        values["uri"],
                        values.get("client_user_id"),
                        int(values.get("no_audio", False)),
                        values.get("no_audio_mode", "drop"),
                        int(values.get("tls_verify", True)),
                        _now(),
                    ),
                )
                row = c.execute("SELECT * FROM restreams WHERE id = ?", (cur.lastrowid,)).fetchone()
                return _restream(row)

            return self._write(conn, insert)

        try:
            restream = await self._run(work)
        except sqlite3.IntegrityError as exc:  # the stream vanished between validation and insert
            raise StoreError("stream does not exist") from exc
        await self.changes.publish(RestreamChanged(restream.id, None, restream))
        return restream

    async def get_restream(self, restream_id: int, client_id: int | None = None) -> RestreamRecord | None:
        def work(conn: sqlite3.Connection) -> RestreamRecord | None:
            return _select_restream(conn, restream_id, client_id)

        return await self._run(work)

    async def list_restreams(self, client_id: int, offset: int, limit: int) -> Page[RestreamRecord]:
        def work(conn: sqlite3.Connection) -> Page[RestreamRecord]:
            rows = conn.execute(
                "SELECT * FROM restreams WHERE client_id = ? ORDER BY id DESC LIMIT ? OFFSET ?",
                (client_id, limit, offset),
            ).fetchall()
            total = conn.execute("SELECT COUNT(*) FROM restreams WHERE client_id = ?", (client_id,)).fetchone()[0]
            return Page([_restream(r) for r in rows], total)

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
            return [_restream(r) for r in rows]

        return await self._run(work)

    async def restream_count(self, stream_id: int) -> int:
        def work(conn: sqlite3.Connection) -> int:
            count: int = conn.execute("SELECT COUNT(*) FROM restreams WHERE stream_id = ?", (stream_id,)).fetchone()[0]
            return count

        return await self._run(work)

    async def all_restreams(self) -> list[RestreamRecord]:
        def work(conn: sqlite3.Connection) -> list[RestreamRecord]:
            return [_restream(r) for r in conn.execute("SELECT * FROM restreams ORDER BY id")]

        return await self._run(work)

    async def update_restream(
        self, restream_id: int, client_id: int, changes: Mapping[str, Any]
    ) -> RestreamRecord | None:
        values = {k: v for k, v in changes.items() if k in RESTREAM_FIELDS}

        def work(conn: sqlite3.Connection) -> tuple[RestreamRecord, RestreamRecord] | None:
            def update(c: sqlite3.Connection) -> tuple[RestreamRecord, RestreamRecord] | None:
                before = _select_restream(c, restream_id, client_id)
                if before is None:
                    return None
                _update_row(c, "restreams", restream_id, values)
                after = _select_restream(c, restream_id, client_id)
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
                before = _select_restream(c, restream_id, client_id)
                if before is not None:
                    c.execute("DELETE FROM restreams WHERE id = ?", (restream_id,))
                return before

            return self._write(conn, delete)

        before = await self._run(work)
        if before is None:
            return False
        await self.changes.publish(RestreamChanged(restream_id, before, None))
        return True

    # API keys -----------------------------------------------------------------------------
    async def create_api_key(self, client_id: int, label: str = "", key: str | None = None) -> tuple[str, ApiKeyRecord]:
        clear = key or f"{client_id}${secrets.token_urlsafe(32)}"
        prefix = clear[: clear.index("$") + 7] if "$" in clear[:24] else clear[:6]

        def work(conn: sqlite3.Connection) -> ApiKeyRecord:
            def insert(c: sqlite3.Connection) -> ApiKeyRecord:
                existing = c.execute("SELECT * FROM api_keys WHERE key_hash = ?", (hash_key(clear),)).fetchone()
                if existing is not None:
                    if existing["client_id"] != client_id:
                        raise StoreError("that key already belongs to another client")
                    if existing["revoked_at"] is not None:
                        raise StoreError(f"that key was revoked (key {existing['id']}); a revoked key stays revoked")
                    return _key(existing)
                cur = c.execute(
                    "INSERT INTO api_keys (client_id, key_hash, prefix, label, created_at) VALUES (?, ?, ?, ?, ?)",
                    (client_id, hash_key(clear), prefix, label, _now()),
                )
                return _key(c.execute("SELECT * FROM api_keys WHERE id = ?", (cur.lastrowid,)).fetchone())

            return self._write(conn, insert)

        return clear, await self._run(work)

    async def client_for_key(self, key: str) -> int | None:
        digest = hash_key(key)

        def work(conn: sqlite3.Connection) -> int | None:
            row = conn.execute(
                "SELECT client_id FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
            return None if row is None else int(row[0])

        return await self._run(work)

    async def find_api_key(self, key: str) -> ApiKeyRecord | None:
        digest = hash_key(key)

        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            row = conn.execute("SELECT * FROM api_keys WHERE key_hash = ?", (digest,)).fetchone()
            return None if row is None else _key(row)

        return await self._run(work)

    async def active_api_key_ids(self, key_ids: Collection[int]) -> set[int]:
        wanted = sorted({int(key_id) for key_id in key_ids})
        if not wanted:
            return set()

        def work(conn: sqlite3.Connection) -> set[int]:
            # The primary key makes this one index probe per id; callers pass a bounded set (open feeds).
            marks = ", ".join("?" * len(wanted))
            rows = conn.execute(f"SELECT id FROM api_keys WHERE id IN ({marks}) AND revoked_at IS NULL", wanted)
            return {int(row[0]) for row in rows}

        return await self._run(work)

    async def list_api_keys(self, client_id: int | None = None) -> list[ApiKeyRecord]:
        def work(conn: sqlite3.Connection) -> list[ApiKeyRecord]:
            if client_id is None:
                rows = conn.execute("SELECT * FROM api_keys ORDER BY id")
            else:
                rows = conn.execute("SELECT * FROM api_keys WHERE client_id = ? ORDER BY id", (client_id,))
            return [_key(r) for r in rows]

        return await self._run(work)

    async def revoke_api_key(self, key_id_or_prefix: str) -> ApiKeyRecord | None:
        wanted = key_id_or_prefix.strip()
        if not wanted:
            return None

        def work(conn: sqlite3.Connection) -> ApiKeyRecord | None:
            def revoke(c: sqlite3.Connection) -> ApiKeyRecord | None:
                if wanted.isdigit():
                    rows = c.execute(
                        "SELECT * FROM api_keys WHERE id = ? AND revoked_at IS NULL", (int(wanted),)
                    ).fetchall()
                else:
                    # Compared in Python, not with LIKE: prefixes hold '$', '_' and '%' as plain characters.
                    active = c.execute("SELECT * FROM api_keys WHERE revoked_at IS NULL").fetchall()
                    rows = [row for row in active if str(row["prefix"]).startswith(wanted)]
                if len(rows) > 1:
                    raise AmbiguousKeyPrefix(len(rows))
                if not rows:
                    return None
                c.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (_now(), rows[0]["id"]))
                return _key(c.execute("SELECT * FROM api_keys WHERE id = ?", (rows[0]["id"],)).fetchone())

            return self._write(conn, revoke)

        return await self._run(work)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._worker, self._conn.close)
        self._worker.shutdown(wait=True)
        with self._reader_lock:
            self._reader.close()


def _open_writer(path: Path) -> sqlite3.Connection:
    """The writer connection in WAL mode, the file checked and its schema migrated; raises StoreError."""
    try:
        conn = connect(path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the database {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL: a definition acknowledged to a client survives power loss, not only a process crash.
        conn.execute("PRAGMA synchronous = FULL")
        # Corruption found now is one clear line at start, not a failed request at some later time.
        problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
        if problems != ["ok"]:
            raise StoreError(f"the database {path} is corrupt ({'; '.join(problems)}): restore it from a backup")
        migrate(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StoreError(
            f"the database {path} cannot be used ({exc}): restore it from a backup, or move it away to start empty"
        ) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _select_stream(conn: sqlite3.Connection, stream_id: int, client_id: int | None) -> StreamRecord | None:
    if client_id is None:
        row = conn.execute("SELECT * FROM streams WHERE id = ?", (stream_id,)).fetchone()
    else:
        row = conn.execute("SELECT * FROM streams WHERE id = ? AND client_id = ?", (stream_id, client_id)).fetchone()
    return None if row is None else _stream(row)


def _select_restream(conn: sqlite3.Connection, restream_id: int, client_id: int | None) -> RestreamRecord | None:
    if client_id is None:
        row = conn.execute("SELECT * FROM restreams WHERE id = ?", (restream_id,)).fetchone()
    else:
        row = conn.execute(
            "SELECT * FROM restreams WHERE id = ? AND client_id = ?", (restream_id, client_id)
        ).fetchone()
    return None if row is None else _restream(row)


def _update_row(conn: sqlite3.Connection, table: str, row_id: int, values: Mapping[str, Any]) -> None:
    if not values:
        return
    # Column names come from the STREAM_FIELDS/RESTREAM_FIELDS allow-lists (or the store's own: token,
    # gcore_settings), never from the request.
    assignments = ", ".join(f"{name} = ?" for name in values)
    params = [int(v) if isinstance(v, bool) else v for v in values.values()]
    conn.execute(f"UPDATE {table} SET {assignments} WHERE id = ?", (*params, row_id))
