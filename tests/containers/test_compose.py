"""The project's own docker-compose.yml, brought up with podman-compose as a user would.

The relay answers on the published port; its data volume survives `down` and `up` (the definitions and
the generated key are still there); the monitoring profile's Prometheus scrapes /metrics with the key
it gets from the file secret. Nothing of the key reaches the relay's log.
"""

from __future__ import annotations

import importlib.util
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.containers.podman import Podman, Steps, build_prometheus_standin, run
from tests.support import ROOT, free_port, http, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

COMPOSE_FILE = ROOT / "docker-compose.yml"


class Compose:
    """podman-compose on the project's compose file, as its own project, with ports published on loopback."""

    def __init__(self, podman: Podman, secret_file: Path) -> None:
        self.podman = podman
        self.project = f"relaytest{os.getpid()}"
        self.http_port = free_port()
        self.prometheus_port = free_port()
        self.env = {
            **podman.env,
            "RELAY_API_KEY": "",  # the relay generates its key into its volume, as on a first `up`
            "RELAY_API_KEY_FILE": str(secret_file),
            "RELAY_PUBLISH_HTTP": f"127.0.0.1:{self.http_port}",
            "RELAY_PUBLISH_RTMP": f"127.0.0.1:{free_port()}",
            "RELAY_PUBLISH_RTMPS": f"127.0.0.1:{free_port()}",
            "RELAY_PUBLISH_SRT": f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}",
            "RELAY_PUBLISH_PROMETHEUS": f"127.0.0.1:{self.prometheus_port}",
        }
        self.last_targets: list[dict[str, Any]] = []

    def __call__(self, *args: str, timeout: float = 180.0) -> str:
        argv = [sys.executable, "-m", "podman_compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args]
        return run(argv, env=self.env, timeout=timeout, stderr_too=True)

    def api(self, method: str, path: str, key: str, body: Any = None) -> Any:
        result = http(method, f"http://127.0.0.1:{self.http_port}{path}", body, key=key, timeout=5)
        assert result.status in (200, 201), f"{method} {path}: {result.status} {result.body}"
        return result.body

    def wait_healthy(self, within: float = 30.0) -> None:
        def healthy() -> bool:
            try:
                return http("GET", f"http://127.0.0.1:{self.http_port}/healthz", key=None, timeout=2).status == 200
            except OSError:
                return False

        wait_until(healthy, timeout=within, every=0.2)

    def wait_scraped(self, within: float) -> list[dict[str, Any]]:
        """Prometheus's targets once the relay's has been scraped successfully; [] if not within `within`
        seconds (the last targets then go in the failure message of the caller's assertion)."""
        deadline = time.monotonic() + within
        targets: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            try:
                targets = self.prometheus("/api/v1/targets")["activeTargets"]
            except (OSError, AssertionError, ValueError):  # not up yet; starting, it answers in plain text
                targets = []
            if any(t["labels"]["job"] == "restream-relay" and t["health"] == "up" for t in targets):
                return targets
            time.sleep(1)
        self.last_targets = targets
        return []

    def prometheus(self, path: str) -> Any:
        result = http("GET", f"http://127.0.0.1:{self.prometheus_port}{path}", key=None, timeout=5)
        assert result.status == 200, f"prometheus {path}: {result.status} {result.body}"
        return result.body["data"]


def test_compose_keeps_the_data_and_prometheus_scrapes_with_the_secret(
    podman: Podman, relay_image: str, steps: Steps, tmp_path: Path
) -> None:
    if importlib.util.find_spec("podman_compose") is None:
        pytest.skip("podman-compose is not installed (it is in the `test` extra: pip install -e '.[test]')")
    if not Path("/usr/bin/prometheus").exists():
        pytest.skip("Debian's prometheus is not installed (`scripts/system-deps.sh test`, as root, installs it)")
    match = re.search(r"^\s*image:\s*(prom/prometheus:\S+)", COMPOSE_FILE.read_text(), re.MULTILINE)
    assert match, "the compose file's prometheus image"
    build_prometheus_standin(podman, f"docker.io/{match[1]}", tmp_path, steps)

    secret_dir = tmp_path / "secret"
    secret_dir.mkdir(mode=0o700)
    compose = Compose(podman, secret_dir / "relay-api-key")
    try:
        with steps.timed("scenario 2: compose up, down and up (the volume kept), definitions still there"):
            compose("up", "-d")
            compose.wait_healthy()
            key = compose("exec", "-T", "relay", "cat", "/data/admin-api-key").strip()
            assert key.startswith("1$"), "the generated key of client 1, in the volume"
            stream = compose.api("POST", "/streaming/streams", key, {"name": "kept-across-down-up"})

            compose("down")
            compose("up", "-d")
            compose.wait_healthy()
            kept = compose.api("GET", f"/streaming/streams/{stream['id']}", key)
            assert (kept["name"], kept["token"]) == ("kept-across-down-up", stream["token"])

        with steps.timed("scenario 2: the monitoring profile's Prometheus scrapes /metrics with the secret"):
            (secret_dir / "relay-api-key").write_text(key + "\n")
            (secret_dir / "relay-api-key").chmod(0o644)  # Prometheus runs as nobody; the directory is private
            compose("--profile", "monitoring", "up", "-d")

            started = time.monotonic()
            targets = compose.wait_scraped(within=60)
            if not targets:
                prometheus_log = compose("--profile", "monitoring", "logs", "prometheus")[-3000:]
                pytest.fail(f"no successful scrape within 60 s: {compose.last_targets}\n{prometheus_log}")
            query = quote('count({job="restream-relay", __name__=~"relay_.+"})')
            [result] = compose.prometheus(f"/api/v1/query?query={query}")["result"]
            assert int(result["value"][1]) > 0, "no relay series scraped"
            steps.notes.append(f"prometheus: first successful scrape {time.monotonic() - started:.0f} s after up")

        log = compose("logs", "relay")
        assert "restream-relay is running" in log
        assert key not in log and stream["token"] not in log, "a secret in the relay's log"
    finally:
        with steps.timed("scenario 2: compose down -v"):
            compose("--profile", "monitoring", "down", "-v", timeout=120)
