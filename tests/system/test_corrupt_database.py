"""A relay started on a file that is not a usable database says so in one line and exits with 1."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support import RelayProcess

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(
    "content",
    [b"garbage, not SQLite\n" * 400, b"SQLite format 3\x00" + b"\xff" * 4080],
    ids=["not a database", "a broken header"],
)
def test_a_corrupt_database_is_one_error_line_and_exit_code_1(tmp_path: Path, content: bytes) -> None:
    relay = RelayProcess(tmp_path / "data")
    relay.data_dir.mkdir(mode=0o700)
    (relay.data_dir / "relay.sqlite3").write_bytes(content)
    with pytest.raises(RuntimeError, match="relay exited with 1"):
        relay.start()
    log = relay.log()
    assert "Traceback" not in log, log
    [line] = [line for line in log.splitlines() if " ERROR " in line]
    assert f"cannot start: the database {relay.data_dir / 'relay.sqlite3'} cannot be used" in line
    assert "restore it from a backup" in line
