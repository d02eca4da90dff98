"""A relay subprocess shared by the tests of one module (the SDK and schema tests only read and write
definitions, so they can share one; tests that kill or restart the relay make their own)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import RelayProcess


@pytest.fixture(scope="module")
def shared_relay(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RelayProcess]:
    process = RelayProcess(tmp_path_factory.mktemp("relay") / "data").start()
    try:
        yield process
    finally:
        process.stop()
