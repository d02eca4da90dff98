"""`restream-relay keys revoke`: exactly one key, by id or by a prefix that names one key only.

The command runs in this process (its `keys_command`) on a real SQLite file; the subprocess path is
covered in tests/system/test_restart_and_keys.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api.cli import build_parser, keys_command
from relay.config import Settings
from relay.store.sqlite import SqliteStore

KEY_A = "shared-prefix-key-of-client-one-000000"
KEY_B = "shared-prefix-key-of-client-two-000000"


async def keys(data_dir: Path, *argv: str) -> int:
    args = build_parser().parse_args(["--data-dir", str(data_dir), "keys", *argv])
    return await keys_command(Settings(data_dir=data_dir), args)


async def active_clients(data_dir: Path) -> list[int]:
    store = SqliteStore(Settings(data_dir=data_dir).database_path)
    try:
        return [record.client_id for record in await store.list_api_keys() if record.revoked_at is None]
    finally:
        await store.close()


async def test_an_ambiguous_prefix_is_refused_and_revokes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteStore(Settings(data_dir=tmp_path).database_path)
    await store.create_api_key(1, key=KEY_A)
    await store.create_api_key(2, key=KEY_B)
    await store.close()

    assert await keys(tmp_path, "revoke", "shared…") == 1  # as `keys list` prints it
    err = capsys.readouterr().err
    assert "matches 2 active keys" in err and "nothing was revoked" in err
    assert await active_clients(tmp_path) == [1, 2]


async def test_a_prefix_naming_one_key_revokes_that_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert await keys(tmp_path, "create", "--client", "7") == 0
    key_7 = capsys.readouterr().out.strip().splitlines()[-1]
    assert await keys(tmp_path, "create", "--client", "8") == 0
    capsys.readouterr()

    assert await keys(tmp_path, "revoke", key_7[:4]) == 0
    assert "revoked 1 key" in capsys.readouterr().out and await active_clients(tmp_path) == [8]

    # Revoking again, an unknown id, or a whole key pasted by mistake: refused, and nothing echoed.
    for wanted in (key_7[:4], "999", key_7):
        assert await keys(tmp_path, "revoke", wanted) == 1
        out = capsys.readouterr()
        assert "no active key" in out.err and key_7 not in out.err + out.out
    assert await active_clients(tmp_path) == [8]
