"""Several relay nodes on one PostgreSQL behind the balancers, as real processes: the `Cluster` of tests/cluster
and bench/failover.py.

`Cluster.start()` starts a PostgreSQL server of its own (a test restarts it), N `restream-relay serve`
subprocesses sharing its database (`RELAY_DATABASE_URL`, each its `RELAY_NODE_ID`, short leases), then
HAProxy (RTMP) and nginx `stream` (SRT) in front of them. A node can be killed (SIGKILL), frozen (SIGSTOP)
and thawed, stopped and started again on its ports. `lease(stream_id)` reads the lease table with psql,
as an operator would. `close()` stops everything and reaps the ffmpeg children a killed node left behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.ingest.tls import write_self_signed
from tests.support.balancers import Backend, HAProxy, NginxStream, why_no_haproxy, why_no_nginx_stream
from tests.support.net import free_port
from tests.support.postgres import PostgresServer, why_no_postgres
from tests.support.processes import children_of, pid_alive
from tests.support.relay_process import HttpResult, RelayProcess

LEASE_SECONDS = 3.0
"""The tests' lease: a dead owner's streams are free again within 3 s (the default is 10)."""
LEASE_RENEW_SECONDS = 0.5
LEASE_MARGIN_SECONDS = 1.0
"""A node that could not renew stops its streams this long before its lease can expire."""
DATABASE_RESYNC_SECONDS = 3.0


def why_no_cluster() -> str | None:
    """None when a cluster can run here (PostgreSQL, HAProxy, nginx's stream module, the relay's support for
    several nodes); otherwise the reason, for pytest.skip."""
    for reason in (why_no_postgres(), why_no_haproxy(), why_no_nginx_stream()):
        if reason is not None:
            return reason
    import importlib.util

    missing = [m for m in ("relay.store.postgres", "relay.cluster") if importlib.util.find_spec(m) is None]
    if missing:
        return f"this relay has no support for several nodes yet ({', '.join(missing)} missing: issue 12)"
    return None


@dataclass(frozen=True)
class Lease:
    """One row of the lease table, with the database's own verdict on whether it is still valid."""

    stream_id: int
    node_id: str
    epoch: int
    valid: bool


@dataclass
class Node:
    """One relay node: its id, its process (None while down) and whether it is frozen."""

    node_id: str
    relay: RelayProcess
    frozen: bool = False
    seen_children: dict[int, str] = field(default_factory=dict)

    @property
    def up(self) -> bool:
        return self.relay.process is not None

    def api(self, method: str, path: str, body: Any = None, **kw: Any) -> HttpResult:
        return self.relay.api(method, path, body, **kw)

    def note_children(self) -> None:
        if self.relay.process is not None:
            self.seen_children.update(children_of(self.relay.process.pid))

    @property
    def rtmp_url(self) -> str:
        return f"rtmp://127.0.0.1:{self.relay.rtmp_port}/live"


class Cluster:
    """PostgreSQL, `size` relay nodes (node-a, node-b, ...) and the balancers, under `root`."""

    def __init__(
        self,
        root: Path,
        size: int = 3,
        *,
        lease_seconds: float = LEASE_SECONDS,
        renew_seconds: float = LEASE_RENEW_SECONDS,
        env_extra: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.lease_seconds = lease_seconds
        self.renew_seconds = renew_seconds
        self.postgres = PostgresServer()
        self.database = "relay"
        self.env_extra = env_extra or {}
        self.nodes: list[Node] = []
        self.size = size
        self.haproxy: HAProxy | None = None
        self.nginx: NginxStream | None = None
        # The balancers' ports are chosen first: the nodes write them into push URLs, as in production.
        self.rtmp_port = free_port()
        self.rtmps_port = free_port()
        self.srt_port = free_port(socket.SOCK_DGRAM)
        self.tls_files: tuple[Path, Path] | None = None

    # -- life ---------------------------------------------------------------------------------------------
    def start(self) -> Cluster:
        try:
            # One certificate for every node: RTMPS passes through HAProxy, each node terminates TLS.
            self.tls_files = write_self_signed(self.root / "tls")
            self.postgres.start()
            self.postgres.create_database(self.database)
            for letter in string.ascii_lowercase[: self.size]:
                node_id = f"node-{letter}"
                relay = RelayProcess(self.root / node_id, env_extra=self._node_env(node_id))
                self.nodes.append(Node(node_id, relay))
            # The first node alone migrates the empty database; the others then start side by side.
            self.nodes[0].relay.start()
            for node in self.nodes[1:]:
                node.relay.start()
            rtmp_nodes = [Backend(n.node_id, n.relay.rtmp_port, n.relay.http_port) for n in self.nodes]
            rtmps_nodes = [Backend(n.node_id, n.relay.rtmps_port, n.relay.http_port) for n in self.nodes]
            self.haproxy = HAProxy(
                self.root / "haproxy", rtmp_nodes, rtmps_nodes, rtmp_port=self.rtmp_port, rtmps_port=self.rtmps_port
            ).start()
            srt_nodes = [Backend(n.node_id, n.relay.srt_port, n.relay.http_port) for n in self.nodes]
            self.nginx = NginxStream(self.root / "nginx", srt_nodes, srt_port=self.srt_port).start()
        except BaseException:
            self.close()
            raise
        return self

    def _node_env(self, node_id: str) -> dict[str, str]:
        assert self.tls_files is not None
        return {
            "RELAY_TLS_CERT": str(self.tls_files[0]),
            "RELAY_TLS_KEY": str(self.tls_files[1]),
            "RELAY_PUBLIC_RTMPS_PORT": str(self.rtmps_port),
            "RELAY_DATABASE_URL": self.postgres.dsn(self.database),
            "RELAY_NODE_ID": node_id,
            "RELAY_PUBLIC_RTMP_PORT": str(self.rtmp_port),
            "RELAY_PUBLIC_SRT_PORT": str(self.srt_port),
            "RELAY_LEASE_SECONDS": str(self.lease_seconds),
            "RELAY_LEASE_RENEW_SECONDS": str(self.renew_seconds),
            "RELAY_LEASE_MARGIN_SECONDS": str(LEASE_MARGIN_SECONDS),
            "RELAY_DATABASE_RESYNC_SECONDS": str(DATABASE_RESYNC_SECONDS),
            "RELAY_TAKEOVER_IDLE_SECONDS": "2",
            "RELAY_PUBLISHER_GRACE_SECONDS": "3",
            "RELAY_LOG_LEVEL": "INFO",
            **self.env_extra,
        }

    def close(self) -> None:
        for balancer in (self.haproxy, self.nginx):
            if balancer is not None:
                balancer.stop()
        for node in self.nodes:
            if node.frozen:
                self.thaw(node)
            node.note_children()
            node.relay.stop()
        self.postgres.cleanup()
        self._reap_orphans()

    def _reap_orphans(self) -> None:
        """Every ffmpeg a node started must be gone; a SIGKILLed node leaves its children to end on EOF."""
        orphans = [pid for node in self.nodes for pid in node.seen_children if pid_alive(pid)]
        for _ in range(50):
            orphans = [pid for pid in orphans if pid_alive(pid)]
            if not orphans:
                return
            time.sleep(0.1)
        for pid in orphans:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # -- nodes --------------------------------------------------------------------------------------------
    def node(self, node_id: str) -> Node:
        return next(n for n in self.nodes if n.node_id == node_id)

    def others(self, *node_ids: str) -> list[Node]:
        return [n for n in self.nodes if n.node_id not in node_ids]

    def kill(self, node: Node) -> None:
        """SIGKILL, as a crash or an OOM kill: no lease released, no push stopped by the node."""
        node.note_children()
        node.relay.kill()

    def restart(self, node: Node) -> None:
        """Start a stopped or killed node again on its ports."""
        if node.up:
            node.note_children()
            node.relay.stop()
        node.relay.start()

    def freeze(self, node: Node) -> None:
        """SIGSTOP the relay process (its ffmpeg children keep running, starved of input)."""
        assert node.relay.process is not None
        node.note_children()
        node.relay.process.send_signal(signal.SIGSTOP)
        node.frozen = True

    def thaw(self, node: Node) -> None:
        assert node.relay.process is not None
        node.relay.process.send_signal(signal.SIGCONT)
        node.frozen = False

    def wait_healthy(self, nodes: Sequence[Node] | None = None, within: float = 20.0) -> None:
        deadline = time.monotonic() + within
        for node in nodes or self.nodes:
            while node.api("GET", "/healthz", key=None, timeout=2).status != 200:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{node.node_id} not healthy within {within} s")
                time.sleep(0.1)

    # -- what users see -----------------------------------------------------------------------------------
    def direct(self, push_url: str, node: Node) -> str:
        """A push URL (naming the balancer, as every node writes it) sent to `node` itself instead."""
        if push_url.startswith("srt://"):
            return push_url.replace(f":{self.srt_port}?", f":{node.relay.srt_port}?", 1)
        if push_url.startswith("rtmps://"):
            return push_url.replace(f":{self.rtmps_port}/", f":{node.relay.rtmps_port}/", 1)
        return push_url.replace(f":{self.rtmp_port}/", f":{node.relay.rtmp_port}/", 1)

    def listening_backends(self, node: Node) -> list[int]:
        """PostgreSQL's backend pids of the node's connections that LISTEN (found by the node's client ports)."""
        assert node.relay.process is not None
        ports = client_ports(node.relay.process.pid, self.postgres.port)
        if not ports:
            return []
        rows = self.psql(
            "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' "
            f"AND client_port IN ({','.join(str(p) for p in ports)})"
        )
        return [int(pid) for pid in rows.split()]

    def terminate_backends(self, pids: Sequence[int]) -> None:
        """Kill connections from the server's side, as a network cut or a DBA would."""
        for pid in pids:
            self.psql(f"SELECT pg_terminate_backend({int(pid)})")

    def psql(self, sql: str) -> str:
        return self.postgres.psql(self.database, sql)

    def lease(self, stream_id: int) -> Lease | None:
        """The stream's row in the lease table, read with psql (valid: unexpired by the database's clock)."""
        row = self.psql(
            f"SELECT stream_id, node_id, epoch, expires_at > now() FROM leases WHERE stream_id = {int(stream_id)}"
        )
        if not row:
            return None
        stream, node_id, epoch, valid = row.split("|")
        return Lease(int(stream), node_id, int(epoch), valid == "t")

    def lease_rows(self, stream_id: int) -> int:
        return int(self.psql(f"SELECT count(*) FROM leases WHERE stream_id = {int(stream_id)}"))


def client_ports(pid: int, server_port: int) -> list[int]:
    """Local ports of the TCP connections process `pid` holds to 127.0.0.1:`server_port` (from /proc)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    ports: list[int] = []
    for line in Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if inode in inodes and int(remote.split(":")[1], 16) == server_port:
            ports.append(int(local.split(":")[1], 16))
    return ports
