"""Definitions survive a SIGKILL; `restream-relay keys` works while the server runs, and what it revokes
stays revoked: requests and open event feeds of that key end, a revoked RELAY_API_KEY stops the start."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from http.client import HTTPResponse
from pathlib import Path

import pytest

from tests.support import ADMIN_KEY, ROOT, RelayProcess

pytestmark = pytest.mark.integration


def test_definitions_survive_sigkill(tmp_path: Path) -> None:
    relay = RelayProcess(tmp_path / "data").start()
    try:
        streams = [relay.api("POST", "/streaming/streams", {"name": f"s{n}"}).body for n in range(3)]
        restreams = [
            relay.api(
                "POST",
                "/streaming/restreams",
                {
                    "restream": {
                        "name": f"r{n}",
                        "uri": f"rtmp://dest{n}.example.com/live/key{n}",
                        "stream_id": streams[n]["id"],
                        "active": n != 1,
                        "no_audio": n == 2,
                    }
                },
            ).body
            for n in range(3)
        ]
        patched = relay.api(
            "PATCH", f"/streaming/streams/{streams[0]['id']}", {"stream": {"srt_passphrase": "passphrase-0001"}}
        ).body
        assert relay.api("DELETE", f"/streaming/streams/{streams[2]['id']}").status == 204
        # Acknowledged above, so it must survive the harshest stop there is.
        relay.kill()
        relay.start()
        got_streams = relay.api("GET", "/streaming/streams").body
        got_restreams = relay.api("GET", "/streaming/restreams").body
    finally:
        relay.stop()
    assert [s["id"] for s in got_streams] == [streams[1]["id"], streams[0]["id"]]
    by_id = {s["id"]: s for s in got_streams}
    assert by_id[streams[0]["id"]]["token"] == streams[0]["token"]
    assert by_id[streams[0]["id"]]["srt_passphrase"] == patched["srt_passphrase"] == "passphrase-0001"
    assert all(s["live"] is False for s in got_streams)  # live state is never trusted from disk
    assert [r["id"] for r in got_restreams] == [restreams[1]["id"], restreams[0]["id"]]
    assert {r["id"]: (r["uri"], r["active"]) for r in got_restreams} == {
        restreams[0]["id"]: (restreams[0]["uri"], True),
        restreams[1]["id"]: (restreams[1]["uri"], False),
    }


def _keys(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api", "--data-dir", str(data_dir), "keys", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


def test_keys_cli_while_the_server_runs(relay_process: RelayProcess) -> None:
    data_dir = relay_process.data_dir
    created = _keys(data_dir, "create", "--client", "7", "--label", "ci")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    assert key.startswith("7$") and len(key) > 30
    assert key not in relay_process.log()

    answer = relay_process.api("POST", "/streaming/streams", {"name": "tenant 7"}, key=key)
    assert answer.status == 200 and answer.body["client_id"] == 7
    assert relay_process.api("GET", "/streaming/streams").body == [] or all(
        s["client_id"] == 1 for s in relay_process.api("GET", "/streaming/streams").body
    )

    listed = _keys(data_dir, "list", "--client", "7")
    assert listed.returncode == 0 and "client 7" in listed.stdout and key not in listed.stdout
    key_id = listed.stdout.split()[0]
    revoked = _keys(data_dir, "revoke", key_id)
    assert revoked.returncode == 0 and "revoked 1" in revoked.stdout
    assert relay_process.api("GET", "/streaming/streams", key=key).status == 401
    assert _keys(data_dir, "revoke", "999").returncode == 1


def _serve_until_exit(relay: RelayProcess, seconds: float = 20.0) -> subprocess.CompletedProcess[str]:
    """`restream-relay serve` with the relay's environment, expected to refuse to start (and so exit)."""
    return subprocess.run(
        [sys.executable, "-m", "api", "serve"],
        env=relay.env(),
        capture_output=True,
        text=True,
        timeout=seconds,
        cwd=ROOT,
    )


def _refusal(finished: subprocess.CompletedProcess[str], secret: str) -> str:
    """The one line of stderr that names RELAY_API_KEY; asserts there is no other and no traceback."""
    output = finished.stdout + finished.stderr
    assert secret not in output and "Traceback" not in output, output
    [line] = [line for line in finished.stderr.splitlines() if "RELAY_API_KEY" in line]
    return line


def test_a_revoked_relay_api_key_is_not_brought_back_by_a_restart(relay_process: RelayProcess) -> None:
    data_dir = relay_process.data_dir
    [admin_line] = [line for line in _keys(data_dir, "list").stdout.splitlines() if "RELAY_API_KEY" in line]
    assert _keys(data_dir, "revoke", admin_line.split()[0]).returncode == 0
    assert relay_process.api("GET", "/streaming/streams").status == 401  # the running relay sees it at once

    relay_process.stop()
    refused = _serve_until_exit(relay_process)
    assert refused.returncode == 2
    line = _refusal(refused, ADMIN_KEY)
    assert "revoked" in line and "set RELAY_API_KEY to a new key" in line
    assert "revoked" in _keys(data_dir, "list").stdout.splitlines()[0]


def test_a_short_relay_api_key_is_refused_at_start(tmp_path: Path) -> None:
    short_key = "1$only-twenty-chars!"
    relay = RelayProcess(tmp_path / "data", env_extra={"RELAY_API_KEY": short_key})
    refused = _serve_until_exit(relay)
    assert refused.returncode == 2
    assert "at least 32 characters" in _refusal(refused, short_key)


def _open_feed(relay: RelayProcess, key: str) -> HTTPResponse:
    """An open /streaming/events response, read up to its hello."""
    request = urllib.request.Request(
        relay.base_url + "/streaming/events",
        headers={"Authorization": f"APIKey {key}", "Accept": "text/event-stream"},
    )
    response: HTTPResponse = urllib.request.urlopen(request, timeout=10)
    assert response.readline() == b"event: hello\n"
    return response


def _read_until(feed: HTTPResponse, line: bytes | None, seconds: float) -> float | None:
    """Seconds until `line` came (None: until the feed ended); None if the deadline passed first.

    Stats every 2 s keep a feed talking, so the deadline is checked often without a read timeout."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        got = feed.readline()
        if got == (line or b""):
            return time.monotonic() - start
        if not got:
            return None
    return None


def test_revoking_a_key_ends_its_open_event_feeds(relay_process: RelayProcess) -> None:
    data_dir = relay_process.data_dir
    created = _keys(data_dir, "create", "--client", "7")
    key = created.stdout.strip().splitlines()[-1]
    key_id = created.stdout.split()[2]
    feeds = [_open_feed(relay_process, key), _open_feed(relay_process, key)]
    admin_feed = _open_feed(relay_process, ADMIN_KEY)
    try:
        assert _keys(data_dir, "revoke", key_id).returncode == 0
        for feed in feeds:
            ended_after = _read_until(feed, None, seconds=6.0)
            assert ended_after is not None and ended_after < 5.0, "the revoked key's feed is still open"
        assert relay_process.api("GET", "/streaming/streams", key=key).status == 401
        # Another client's feed goes on: its next stats snapshot still comes.
        assert _read_until(admin_feed, b"event: stats\n", seconds=5.0) is not None
        assert "API key " + key_id + " revoked" in relay_process.log() and key not in relay_process.log()
    finally:
        for feed in (*feeds, admin_feed):
            feed.close()
