"""Through the real relay process: a tenant's destination whose host resolves to 127.0.0.1 at push time is
never connected to (a real listener there counts no accept), and its status says why without telling an
open port from a closed one; client 1 (the operator) pushing to the identical URI does connect and push."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.support import ROOT, RelayProcess, free_port, pattern_publisher, wait_until

pytestmark = pytest.mark.integration

REFUSED = "destination not allowed: the host name resolves to a loopback address"


@dataclass
class CountingForwarder:
    """A real TCP listener on 127.0.0.1 that counts the connections it accepts and relays each to `target`."""

    target: int
    port: int = 0
    accepts: int = 0
    _sock: socket.socket = field(default_factory=socket.socket)
    _threads: list[threading.Thread] = field(default_factory=list)
    _closing: threading.Event = field(default_factory=threading.Event)

    def start(self) -> CountingForwarder:
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._spawn(self._accept_loop)
        return self

    def _spawn(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepts += 1
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self._spawn(self._pipe, client, upstream)
            self._spawn(self._pipe, upstream, client)

    def _pipe(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._closing.set()
        self._sock.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def forwarder(relay_process: RelayProcess) -> Iterator[CountingForwarder]:
    proxy = CountingForwarder(relay_process.rtmp_port).start()
    try:
        yield proxy
    finally:
        proxy.close()


def tenant_key(relay: RelayProcess, client: int) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "api", "--data-dir", str(relay.data_dir), "keys", "create", "--client", str(client)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=True,
    )
    return created.stdout.strip().splitlines()[-1]


def restream_status(relay: RelayProcess, restream_id: int, key: str | None = None) -> dict[str, Any]:
    kw = {"key": key} if key else {}
    status: dict[str, Any] = relay.api("GET", f"/streaming/restreams/{restream_id}", **kw).body["status"]
    return status


def test_a_tenant_cannot_reach_loopback_by_name_but_the_operator_can(
    relay_process: RelayProcess, forwarder: CountingForwarder
) -> None:
    relay = relay_process
    key = tenant_key(relay, 2)
    # The destination: client 1's own "sink" stream on this relay, reached through the counting listener.
    sink = relay.api("POST", "/streaming/streams", {"name": "sink"}).body
    uri = f"rtmp://localhost:{forwarder.port}/in/{sink['id']}?{sink['token']}"
    closed = f"rtmp://localhost:{free_port()}/in/{sink['id']}?{sink['token']}"

    theirs = relay.api("POST", "/streaming/streams", {"name": "tenant"}, key=key).body
    to_open = relay.api("POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": theirs["id"]}}, key=key)
    to_closed = relay.api(
        "POST", "/streaming/restreams", {"restream": {"uri": closed, "stream_id": theirs["id"]}}, key=key
    )
    assert to_open.status == 200 and to_closed.status == 200  # a name: judged when a push resolves it
    refused = (to_open, to_closed)
    tenant_pub = pattern_publisher(theirs["push_url"], 60)
    operator_pub: subprocess.Popen[bytes] | None = None
    try:
        wait_until(lambda: all(restream_status(relay, r.body["id"], key)["state"] == "failed" for r in refused), 20)
        time.sleep(2)  # anything that would connect has had the time to
        assert forwarder.accepts == 0
        # Open port or closed, the tenant reads the same thing: nothing about reachability.
        assert restream_status(relay, to_open.body["id"], key)["last_error"] == REFUSED
        assert restream_status(relay, to_closed.body["id"], key)["last_error"] == REFUSED

        # Client 1, the operator, with the identical destination: connects and pushes.
        ours = relay.api("POST", "/streaming/streams", {"name": "operator"}).body
        restream = relay.api("POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": ours["id"]}}).body
        operator_pub = pattern_publisher(ours["push_url"], 60)
        wait_until(lambda: restream_status(relay, restream["id"])["state"] == "running", timeout=20)
        wait_until(lambda: relay.api("GET", f"/streaming/streams/{sink['id']}").body["live"], timeout=20)
        assert forwarder.accepts >= 1
        assert restream_status(relay, to_open.body["id"], key)["state"] == "failed"  # and the tenant still not
    finally:
        for pub in (tenant_pub, operator_pub):
            if pub is not None:
                pub.kill()
                pub.wait()
