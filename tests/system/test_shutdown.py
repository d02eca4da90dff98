"""Stopping the relay (SIGTERM, as systemd or docker do) ends every push and leaves no child behind."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import imageio_ffmpeg
import pytest

from tests.support import RelayProcess, free_port
from tests.system.test_publishing_state import publisher, wait_for

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def children(pid: int) -> set[int]:
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.update(int(child) for child in text)
    return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose only once reaped; the relay must have reaped it.
    return Path(f"/proc/{pid}").exists()


@pytest.mark.integration
def test_sigterm_stops_every_push_and_reaps_ffmpeg(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data").start()
    receivers: list[subprocess.Popen[bytes]] = []
    pub: subprocess.Popen[bytes] | None = None
    try:
        stream = relay.api("POST", "/streaming/streams", {"name": "shutdown"}).body
        for n in range(2):
            port = free_port()
            receivers.append(subprocess.Popen(
                [FFMPEG, "-hide_banner", "-loglevel", "error", "-listen", "1", "-i",
                 f"rtmp://127.0.0.1:{port}/live/k{n}", "-c", "copy", "-f", "flv", str(tmp_path / f"out{n}.flv")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            relay.api("POST", "/streaming/restreams", {"restream": {
                "uri": f"rtmp://127.0.0.1:{port}/live/k{n}", "stream_id": stream["id"]}})
        pub = publisher(stream["push_url"], 60)
        wait_for(lambda: all(r["status"]["state"] == "running"
                             for r in relay.api("GET", "/streaming/restreams").body), timeout=20)
        assert relay.process is not None
        relay_pid = relay.process.pid
        pushes = children(relay_pid)
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
