"""The relay as a real `restream-relay serve` subprocess on free loopback ports, and a blocking HTTP helper."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.net import free_port

ROOT = Path(__file__).resolve().parents[2]
"""The checkout: the relay subprocess runs from here."""
ADMIN_KEY = "1$test-admin-key-0123456789abcdef"


@dataclass
class HttpResult:
    status: int
    body: Any
    headers: Mapping[str, str]


def http(
    method: str,
    url: str,
    body: Any = None,
    key: str | None = ADMIN_KEY,
    raw: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
) -> HttpResult:
    """One blocking HTTP request; JSON in and out; never raises on an HTTP error status."""
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if key is not None:
        request.add_header("Authorization", f"APIKey {key}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            payload = response.read()
            status, response_headers = response.status, dict(response.headers)
    except urllib.error.HTTPError as exc:
        payload, status, response_headers = exc.read(), exc.code, dict(exc.headers)
    return HttpResult(status, json.loads(payload) if payload else None, response_headers)


@dataclass
class RelayProcess:
    """`restream-relay serve` as a real subprocess on free loopback ports; stop() reaps it."""

    data_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ("serve",)
    """The command line after `restream-relay` (`python -m api`)."""
    http_port: int = 0
    rtmp_port: int = 0
    rtmps_port: int = 0
    srt_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    checkout: Path = ROOT
    """Whose relay runs (`python -m api` from there): this one, or another for a side-by-side comparison."""

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RELAY_")}
        env.update(
            {
                "RELAY_DATA_DIR": str(self.data_dir),
                "RELAY_BIND": "127.0.0.1",
                "RELAY_PUBLIC_HOST": "127.0.0.1",
                "RELAY_HTTP_PORT": str(self.http_port),
                "RELAY_RTMP_PORT": str(self.rtmp_port),
                "RELAY_RTMPS_PORT": str(self.rtmps_port),
                "RELAY_SRT_PORT": str(self.srt_port),
                "RELAY_API_KEY": ADMIN_KEY,
                "RELAY_LOG_LEVEL": "DEBUG",
            }
        )
        env.update(self.env_extra)
        return env

    def start(self, timeout: float = 20.0) -> RelayProcess:
        if not self.http_port:
            self.http_port = free_port()
            self.rtmp_port = free_port()
            self.rtmps_port = free_port()
            self.srt_port = free_port(socket.SOCK_DGRAM)
        self.log_path = self.data_dir.parent / f"{self.data_dir.name}-relay.log"
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "api", *self.args],
            cwd=self.checkout,
            env=self.env(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"relay exited with {self.process.returncode}: {self.log()}")
            try:
                if http("GET", f"{self.base_url}/healthz", key=None, timeout=1).status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"relay did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def kill(self) -> None:
        """SIGKILL: no cleanup at all, as a crash or an OOM kill would do."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self, timeout: float = 15.0) -> int | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=5)
        self.process = None
        return code

    def api(self, method: str, path: str, body: Any = None, key: str | None = ADMIN_KEY, **kw: Any) -> HttpResult:
        return http(method, self.base_url + path, body, key=key, **kw)
