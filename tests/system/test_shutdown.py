"""Stopping the relay (SIGTERM, as systemd or docker do) ends every push and leaves no child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.support import RelayProcess, children_of, free_port, listener_argv, pattern_publisher, wait_until

pytestmark = pytest.mark.integration


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose only once reaped; the relay must have reaped it.
    return Path(f"/proc/{pid}").exists()


def test_sigterm_stops_every_push_and_reaps_ffmpeg(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data").start()
    receivers: list[subprocess.Popen[bytes]] = []
    pub: subprocess.Popen[bytes] | None = None
    try:
        stream = relay.api("POST", "/streaming/streams", {"name": "shutdown"}).body
        for n in range(2):
            port = free_port()
            receivers.append(
                subprocess.Popen(
                    listener_argv(f"rtmp://127.0.0.1:{port}/live/k{n}", tmp_path / f"out{n}.flv", "flv"),
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
            relay.api(
                "POST",
                "/streaming/restreams",
                {"restream": {"uri": f"rtmp://127.0.0.1:{port}/live/k{n}", "stream_id": stream["id"]}},
            )
        pub = pattern_publisher(stream["push_url"], 60)
        wait_until(
            lambda: all(r["status"]["state"] == "running" for r in relay.api("GET", "/streaming/restreams").body),
            timeout=20,
        )
        assert relay.process is not None
        relay_pid = relay.process.pid
        pushes = set(children_of(relay_pid))
        assert len(pushes) == 2  # one ffmpeg per destination, children of the relay

        relay.process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = relay.process.wait(timeout=20)
        relay.process = None
        assert code == 0 and time.monotonic() - started < 12
        assert not [pid for pid in pushes if alive(pid)]
        # The destinations saw a proper end of stream, not a hang: their listeners finish by themselves.
        for receiver in receivers:
            assert receiver.wait(timeout=15) == 0
    finally:
        relay.stop()
        for proc in [*receivers, *([pub] if pub else [])]:
            proc.kill()
            proc.wait()
