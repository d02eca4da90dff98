"""The SQLite schema as versioned migrations, and how a connection to it is opened.

The version lives in `PRAGMA user_version`; each migration moves it by one, inside one transaction,
so several processes (a running relay and `restream-relay keys`) can open the same file safely.
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from relay.store.base import StoreError

# Each entry moves the schema from version N to N+1; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        prefix TEXT NOT NULL,
        label TEXT NOT NULL DEFAULT '',
        created_at TEXT NOT NULL,
        revoked_at TEXT
    );
    CREATE TABLE streams (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL,
        name TEXT NOT NULL,
        active INTEGER NOT NULL,
        token TEXT NOT NULL,
        client_user_id INTEGER,
        srt_passphrase TEXT,
        created_at TEXT NOT NULL
    );
    CREATE INDEX streams_by_client ON streams (client_id, id);
    CREATE TABLE restreams (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        client_id INTEGER NOT NULL,
        stream_id INTEGER NOT NULL REFERENCES streams (id) ON DELETE CASCADE,
        name TEXT NOT NULL,
        active INTEGER NOT NULL,
        uri TEXT NOT NULL,
        client_user_id INTEGER,
        no_audio INTEGER NOT NULL DEFAULT 0,
        no_audio_mode TEXT NOT NULL DEFAULT 'drop',
        tls_verify INTEGER NOT NULL DEFAULT 1,
        created_at TEXT NOT NULL
    );
    CREATE INDEX restreams_by_client ON restreams (client_id, id);
    CREATE INDEX restreams_by_stream ON restreams (stream_id);
    """,
    """
    ALTER TABLE streams ADD COLUMN srt_latency_ms INTEGER;
    """,
    # Gcore's client_entity_data, and its stream settings that the relay only keeps and gives back
    # (relay/store/models.py GcoreSettings) as one JSON object: no query ever looks into them, and
    # Gcore's next such setting needs no migration. '{}' reads as every setting at its default.
    """
    ALTER TABLE streams ADD COLUMN client_entity_data TEXT;
    ALTER TABLE streams ADD COLUMN gcore_settings TEXT NOT NULL DEFAULT '{}';
    """,
    """
    ALTER TABLE streams ADD COLUMN pull INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE streams ADD COLUMN uri TEXT;
    """,
]


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit), rows by name, foreign keys on."""
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date; returns the version reached. Safe to run from several processes."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(f"database schema {version} is newer than this relay ({len(MIGRATIONS)})")
        for number in range(version, len(MIGRATIONS)):
            for statement in MIGRATIONS[number].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {number + 1}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # a failed COMMIT may have ended it already; never hide the first error
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise
    return len(MIGRATIONS)


def open_writer(path: Path) -> sqlite3.Connection:
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
