"""A token reset through the real relay process: the live encoder on the old token is cut off at once,
the old token is refused on RTMP, RTMPS and SRT from the answer on, the new one is accepted."""

from __future__ import annotations

import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from relay.ingest.tls import write_self_signed
from tests.support import ADMIN_KEY, RelayProcess, ffmpeg_publish_argv, pattern_publisher, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_relay(tmp_path: Path) -> Iterator[RelayProcess]:
    relay = RelayProcess(tmp_path / "data")
    cert, key = write_self_signed(tmp_path / "tls")
    relay.env_extra = {"RELAY_TLS_CERT": str(cert), "RELAY_TLS_KEY": str(key)}
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


def bad_token_refusals(relay: RelayProcess) -> dict[str, int]:
    """relay_ingest_refusals_total{reason="bad_token"} by transport, as Prometheus would read it."""
    request = urllib.request.Request(f"{relay.base_url}/metrics", headers={"Authorization": f"APIKey {ADMIN_KEY}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    counts: dict[str, int] = {}
    for labels, value in re.findall(r"^relay_ingest_refusals_total\{([^}]*)\} (\S+)$", text, re.MULTILINE):
        pairs = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        if pairs.get("reason") == "bad_token":
            counts[pairs["transport"]] = int(float(value))
    return counts


def live(relay: RelayProcess, stream_id: int) -> bool:
    return bool(relay.api("GET", f"/streaming/streams/{stream_id}").body["live"])


def srt_url(push_url_srt: str) -> str:
    return push_url_srt.replace("#", "%23")  # as encoders are given it: '#' would end ffmpeg's URL


def finish(proc: subprocess.Popen[bytes], within: float) -> int:
    try:
        return proc.wait(timeout=within)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_reset_cuts_off_the_old_token_everywhere_and_the_new_one_publishes(
    tls_relay: RelayProcess, src_ts: Path
) -> None:
    stream = tls_relay.api("POST", "/streaming/streams", {"name": "leaked key"}).body
    encoder = pattern_publisher(stream["push_url"], 40)
    try:
        wait_until(lambda: live(tls_relay, stream["id"]))
        answered = tls_relay.api("POST", f"/streaming/streams/{stream['id']}/reset_push_token")
        assert answered.status == 200
        reset = answered.body
        started = time.monotonic()
        assert reset["token"] != stream["token"] and reset["live"] is False  # off before the answer
        finish(encoder, 15)
        assert time.monotonic() - started < 10  # cut off, not left to run its 40 s
    finally:
        if encoder.poll() is None:
            encoder.kill()
        encoder.wait()

    # The old token, on every ingest: refused as a wrong token (not as a busy stream).
    assert finish(pattern_publisher(stream["push_url"], 2), 20) != 0
    assert finish(pattern_publisher(stream["push_url_rtmps"], 2), 20) != 0
    old_srt = subprocess.Popen(ffmpeg_publish_argv(src_ts, srt_url(stream["push_url_srt"])), stdin=subprocess.DEVNULL)
    assert finish(old_srt, 20) != 0
    assert bad_token_refusals(tls_relay) == {"rtmp": 1, "rtmps": 1, "srt": 1}
    assert not live(tls_relay, stream["id"])

    # The new token publishes, over RTMP and over SRT.
    encoder = pattern_publisher(reset["push_url"], 3)
    try:
        wait_until(lambda: live(tls_relay, stream["id"]))
        assert finish(encoder, 20) == 0
    finally:
        if encoder.poll() is None:
            encoder.kill()
        encoder.wait()
    wait_until(lambda: not live(tls_relay, stream["id"]))
    new_srt = subprocess.Popen(ffmpeg_publish_argv(src_ts, srt_url(reset["push_url_srt"])), stdin=subprocess.DEVNULL)
    try:
        wait_until(lambda: live(tls_relay, stream["id"]))
        assert finish(new_srt, 20) == 0
    finally:
        if new_srt.poll() is None:
            new_srt.kill()
        new_srt.wait()
    log = tls_relay.log()
    assert stream["token"] not in log and reset["token"] not in log
