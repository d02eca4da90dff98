"""`restream-relay db copy`: a SQLite database made by the SQLite store, copied into PostgreSQL with its
ids, read back through the PostgreSQL store exactly as SQLite gave it; a non-empty target refused
unless --force. The command runs in this process (`db_command`) on a real file and a real server."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import build_parser, db_command
from relay.config import Settings
from relay.store.base import StoreError
from relay.store.postgres import PostgresStore
from relay.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration

KEY = "copied-key-of-client-one-0123456789abcdef"


async def copy(data_dir: Path, *argv: str) -> int:
    args = build_parser().parse_args(["--data-dir", str(data_dir), "db", "copy", *argv])
    return await db_command(Settings(data_dir=data_dir), args)


async def test_a_sqlite_database_is_copied_with_its_ids_and_read_back_the_same(
    tmp_path: Path, postgres_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "old" / "relay.sqlite3"
    sqlite = SqliteStore(source)
    try:
        await sqlite.create_api_key(1, "operator", key=KEY)
        _, revoked = await sqlite.create_api_key(2, "gone")
        await sqlite.revoke_api_key(str(revoked.id))
        streams = [
            await sqlite.create_stream(1, {"name": "a", "srt_passphrase": "0123456789ab", "dvr_duration": 120}),
            await sqlite.create_stream(2, {"name": "b", "pull": True, "uri": "rtmp://src.example.com/live/k"}),
            await sqlite.create_stream(1, {"name": "deleted"}),
        ]
        await sqlite.create_restream(1, {"stream_id": streams[0].id, "uri": "rtmp://a.example.com/live/1"})
        await sqlite.create_restream(1, {"stream_id": streams[0].id, "uri": "srt://b.example.com:9", "active": False})
        await sqlite.delete_stream(streams[2].id, 1)  # its id must not come back in PostgreSQL either
        expected = (await sqlite.all_streams(), await sqlite.all_restreams(), await sqlite.list_api_keys())
    finally:
        await sqlite.close()

    assert await copy(tmp_path, "--from", str(source), "--to", postgres_dsn) == 0
    printed = capsys.readouterr().out
    assert "copied 2 API keys, 2 streams and 2 restreams" in printed

    store = await PostgresStore.open(postgres_dsn)
    try:
        assert (await store.all_streams(), await store.all_restreams(), await store.list_api_keys()) == expected
        assert await store.client_for_key(KEY) == 1
        new = await store.create_stream(1, {"name": "new"})
        assert new.id > streams[2].id
        restream = await store.create_restream(1, {"stream_id": new.id, "uri": "rtmp://c.example.com/live/3"})
        assert restream.id > max(r.id for r in expected[1])
        _, key = await store.create_api_key(3)
        assert key.id > revoked.id

        with pytest.raises(StoreError, match="already holds definitions"):
            await copy(tmp_path, "--from", str(source), "--to", postgres_dsn)
        assert await store.get_stream(new.id) == new  # nothing of the target was touched
    finally:
        await store.close()

    assert await copy(tmp_path, "--from", str(source), "--to", postgres_dsn, "--force") == 0
    store = await PostgresStore.open(postgres_dsn)
    try:
        assert (await store.all_streams(), await store.all_restreams(), await store.list_api_keys()) == expected
        assert (await store.create_stream(1, {"name": "after"})).id > new.id  # ids still never reused
    finally:
        await store.close()


async def test_a_missing_source_is_refused_and_not_created(tmp_path: Path, postgres_dsn: str) -> None:
    with pytest.raises(StoreError, match="no SQLite database"):
        await copy(tmp_path, "--from", str(tmp_path / "nothing.sqlite3"), "--to", postgres_dsn)
    assert not (tmp_path / "nothing.sqlite3").exists()
