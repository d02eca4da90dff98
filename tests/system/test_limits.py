"""Limits through the real relay process: set from the environment, refused in the documented shape, and
a push beyond the node's cap waits with a status that says so, until a slot frees."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import ROOT, RelayProcess, free_port, http, pattern_publisher, wait_until

pytestmark = pytest.mark.integration


def test_a_push_beyond_the_node_cap_waits_until_a_slot_frees(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data", env_extra={"RELAY_MAX_PUSHES": "1", "RELAY_CLIENT_LIMITS": "1:streams=1"})
    relay.start()
    publisher = None
    try:
        api = relay.base_url + "/streaming"
        stream = http("POST", f"{api}/streams", {"name": "show"}).body
        refused = http("POST", f"{api}/streams", {"name": "second"})
        assert (refused.status, refused.body) == (
            422,
            {"errors": {"streams": ["limit reached: this client may have at most 1 streams"]}},
        )
        dead = f"rtmp://127.0.0.1:{free_port()}/live/first"  # nobody listens: the push retries, holding its slot
        first = http("POST", f"{api}/restreams", {"restream": {"stream_id": stream["id"], "uri": dead}}).body
        second = http(
            "POST",
            f"{api}/restreams",
            {"restream": {"stream_id": stream["id"], "uri": f"rtmp://127.0.0.1:{free_port()}/live/second"}},
        ).body
        publisher = pattern_publisher(stream["push_url"], 60)

        def status_of(restream: dict[str, object]) -> dict[str, object]:
            body = http("GET", f"{api}/restreams/{restream['id']}").body
            assert isinstance(body, dict)
            status = body["status"]
            assert isinstance(status, dict)
            return status

        wait_until(lambda: status_of(second)["state"] == "waiting", 20)
        waiting = status_of(second)
        assert waiting["last_error"] == "waiting for a push slot: the node limit of 1 running pushes is reached"
        assert status_of(first)["state"] in ("starting", "retrying", "running")

        assert http("DELETE", f"{api}/restreams/{first['id']}").status == 204
        wait_until(lambda: status_of(second)["state"] in ("starting", "retrying", "running"), 20)
    finally:
        if publisher is not None:
            publisher.kill()
            publisher.wait()
        relay.stop()


def test_a_malformed_limit_stops_the_start_with_the_setting_named(tmp_path: Path) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "api", "--data-dir", str(tmp_path), "serve", "--client-limits", "2:cpus=4"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert "RELAY_CLIENT_LIMITS" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - started < 30
