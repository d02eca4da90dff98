"""Schema-driven fuzzing: schemathesis generates requests from /openapi.json against a real relay and
finds no server error and no response that breaks the published schema."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ADMIN_KEY, RelayProcess

pytestmark = pytest.mark.integration

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_schema_conformance",
        "response_headers_conformance",
    ]
)


def test_schemathesis_finds_no_500_and_no_schema_break(shared_relay: RelayProcess, tmp_path: Path) -> None:
    binary = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if binary is None:
        pytest.skip("schemathesis is not installed in this environment")
    result = subprocess.run(
        [
            binary,
            "run",
            f"{shared_relay.base_url}/openapi.json",
            "-H",
            f"Authorization: APIKey {ADMIN_KEY}",
            "--checks",
            CHECKS,
            "--max-examples",
            "40",
            "--seed",
            "20261125",
            "--request-timeout",
            "10",
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    # The relay itself logged no unhandled error while being fuzzed.
    assert "unhandled error" not in shared_relay.log()
    assert "Internal Server Error" not in result.stdout
