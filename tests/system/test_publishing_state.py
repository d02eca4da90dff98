"""What the API shows while real encoders publish: live, source fields, refusals, deletion."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from relay.ingest.tls import write_self_signed
from tests.support import RelayProcess, free_port, pattern_publisher, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def tls_relay(tmp_path: Path) -> Any:
    relay = RelayProcess(tmp_path / "data")
    cert, key = write_self_signed(tmp_path / "tls")
    relay.env_extra = {"RELAY_TLS_CERT": str(cert), "RELAY_TLS_KEY": str(key), "RELAY_TAKEOVER_IDLE_SECONDS": "2"}
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.parametrize("scheme", ["rtmp", "rtmps"])
def test_stream_goes_live_and_back(tls_relay: RelayProcess, scheme: str) -> None:
    stream = tls_relay.api("POST", "/streaming/streams", {"name": "show"}).body
    restream = tls_relay.api(
        "POST",
        "/streaming/restreams",
        {"restream": {"uri": "rtmp://127.0.0.1:9/live/never", "stream_id": stream["id"], "active": False}},
    ).body
    url = stream["push_url"] if scheme == "rtmp" else stream["push_url_rtmps"]
    proc = pattern_publisher(url, 3)
    try:
        wait_until(lambda: tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"])
        live = tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body
        assert live["stream_source_type"] == "rtmp" and live["started_at_primary"]
        wait_until(lambda: tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["video_width"] == 320)
        live = tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body
        assert (live["video_width"], live["video_height"], live["frame_rate"]) == (320, 240, 25)
        assert live["status"]["transport"] == scheme
        assert tls_relay.api("GET", f"/streaming/restreams/{restream['id']}").body["live"] is True
        assert proc.wait(timeout=20) == 0
        wait_until(lambda: not tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"])
        assert tls_relay.api("GET", f"/streaming/restreams/{restream['id']}").body["live"] is False
    finally:
        proc.kill()
        proc.wait()
    assert stream["token"] not in tls_relay.log()


def test_refusals_wrong_token_inactive_and_second_publisher(tls_relay: RelayProcess) -> None:
    stream = tls_relay.api("POST", "/streaming/streams", {"name": "guarded"}).body
    wrong = stream["push_url"].replace(stream["token"], "not-the-token")
    assert pattern_publisher(wrong, 2).wait(timeout=20) != 0
    assert tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"] is False

    first = pattern_publisher(stream["push_url"], 30)
    try:
        wait_until(lambda: tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"])
        second = pattern_publisher(stream["push_url"], 2)
        assert second.wait(timeout=20) != 0  # refused: the first one is sending
        assert first.poll() is None  # and not disturbed
        # Deactivating the stream disconnects its publisher and refuses new ones.
        tls_relay.api("PATCH", f"/streaming/streams/{stream['id']}", {"stream": {"active": False}})
        started = time.monotonic()
        first.wait(timeout=20)
        assert time.monotonic() - started < 10  # cut off, not left to run its 30 s
        wait_until(lambda: not tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"])
        assert pattern_publisher(stream["push_url"], 2).wait(timeout=20) != 0
    finally:
        first.kill()
        first.wait()


def test_deleting_a_live_stream_disconnects_the_publisher(tls_relay: RelayProcess) -> None:
    stream = tls_relay.api("POST", "/streaming/streams", {"name": "doomed"}).body
    proc = pattern_publisher(stream["push_url"], 20)
    try:
        wait_until(lambda: tls_relay.api("GET", f"/streaming/streams/{stream['id']}").body["live"])
        assert tls_relay.api("DELETE", f"/streaming/streams/{stream['id']}").status == 204
        started = time.monotonic()
        proc.wait(timeout=15)
        assert time.monotonic() - started < 10  # cut off, not left to run its 20 s
    finally:
        proc.kill()
        proc.wait()


def test_a_failing_destination_explains_itself_without_its_key(tls_relay: RelayProcess) -> None:
    stream = tls_relay.api("POST", "/streaming/streams", {"name": "failing"}).body
    dead_port = free_port()  # nothing listens there
    secret = "live_8812_DestinationKeyX"
    restream = tls_relay.api(
        "POST",
        "/streaming/restreams",
        {"restream": {"uri": f"rtmp://127.0.0.1:{dead_port}/app/{secret}", "stream_id": stream["id"]}},
    ).body
    proc = pattern_publisher(stream["push_url"], 15)
    try:

        def failed_once() -> bool:
            status = tls_relay.api("GET", f"/streaming/restreams/{restream['id']}").body["status"]
            return bool(status["last_error"]) and status["state"] in ("retrying", "failed", "starting")

        wait_until(failed_once, timeout=15)
        status = tls_relay.api("GET", f"/streaming/restreams/{restream['id']}").body["status"]
        assert status["log_tail"] and all(isinstance(line, str) for line in status["log_tail"])
        assert secret not in repr(status) and "***" in " ".join(status["log_tail"] + [status["last_error"]])
    finally:
        proc.kill()
        proc.wait()
    assert secret not in tls_relay.log()
