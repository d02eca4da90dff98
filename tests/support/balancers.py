"""The L4 balancers in front of several relay nodes, as the tests run them: HAProxy (TCP: RTMP, RTMPS) and
nginx's `stream` module (UDP: SRT), Debian's binaries, configuration written into a temporary directory,
listening on free 127.0.0.1 ports, stopped (and reaped) by `stop()`.

The configurations are the samples' (samples/cluster/) with test timings: HAProxy asks each node's API for
/healthz every 250 ms and takes a node out after two failures, so a dead or frozen node leaves the rotation
within about a second, and `on-marked-down
shutdown-sessions` closes the connections still going to it (the publisher reconnects, elsewhere). A
connection refused by a dead node is sent to another one at once (`option redispatch`).

nginx open source has no active health check: a node whose SRT port is closed answers with ICMP port
unreachable, which nginx counts as a failure (`max_fails=1`) and the next datagram of that session goes to
the next node; a frozen node is not noticed (the SRT caller times out and reconnects, maybe to the same
node). `why_no_haproxy()` / `why_no_nginx_stream()` say why one cannot run here (a skip's reason).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import free_port

HAPROXY = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin")
NGINX_STREAM_MODULE = Path("/usr/lib/nginx/modules/ngx_stream_module.so")

HEALTH_CHECK = ("GET /healthz", r"^(200|503)$")
"""How HAProxy asks a node whether it lives: its API's /healthz, any answer. 503 (the node cannot write to
the database) keeps it in: during a PostgreSQL restart every node says 503, and taking them all out would
cut every publisher whose pushes are meant to ride the restart through. A frozen or dead node answers
nothing."""


def why_no_haproxy() -> str | None:
    if HAPROXY is None:
        return "HAProxy is not installed (Debian package haproxy; make test installs it)"
    return None


def why_no_nginx_stream() -> str | None:
    if NGINX is None:
        return "nginx is not installed (Debian packages nginx and libnginx-mod-stream; make test installs them)"
    if not NGINX_STREAM_MODULE.exists():
        return f"nginx's stream module is missing ({NGINX_STREAM_MODULE}: Debian package libnginx-mod-stream)"
    return None


@dataclass(frozen=True)
class Backend:
    """One node as a balancer sees it."""

    name: str
    port: int
    check_port: int
    """Where the node's API answers /healthz."""
    host: str = "127.0.0.1"


def haproxy_config(
    *,
    rtmp_port: int,
    rtmp_nodes: Sequence[Backend],
    rtmps_port: int | None = None,
    rtmps_nodes: Sequence[Backend] = (),
    check_interval_ms: int = 250,
    bind: str = "127.0.0.1",
    balance: str = "roundrobin",
) -> str:
    """HAProxy in TCP mode: RTMP (and RTMPS, passed through: each node terminates TLS) to the nodes.

    Health: `HEALTH_CHECK` on the node's API port (`check port`), two failures take a node out, one success
    puts it back. Client and server
    timeouts are long (a publisher may pause); the connect timeout is short (a node that does not accept
    within a second is tried no more for that connection). `balance source` (the samples') sends an encoder
    that reconnects back to the node that holds its stream while that node is up: another node would
    refuse it until the lease expires; `hash-type consistent` moves only a dead node's encoders."""
    request, status = HEALTH_CHECK
    lines = [
        "global",
        "    maxconn 4096",
        "",
        "defaults",
        "    mode tcp",
        "    option redispatch",
        "    retries 2",
        "    timeout connect 1s",
        f"    timeout check {check_interval_ms}ms",
        "    timeout client 60s",
        "    timeout server 60s",
        "",
    ]

    def section(name: str, port: int, nodes: Sequence[Backend]) -> list[str]:
        out = [
            f"frontend {name}_in",
            f"    bind {bind}:{port}",
            f"    default_backend {name}_nodes",
            "",
            f"backend {name}_nodes",
            f"    balance {balance}",
            *(["    hash-type consistent"] if balance == "source" else []),
            f"    option httpchk {request}",
            f"    http-check expect rstatus {status}",
            f"    default-server inter {check_interval_ms}ms fastinter {check_interval_ms}ms"
            f" downinter {check_interval_ms}ms fall 2 rise 1 on-marked-down shutdown-sessions init-addr libc,none",
        ]
        for node in nodes:
            out.append(f"    server {node.name} {node.host}:{node.port} check port {node.check_port}")
        return [*out, ""]

    lines += section("rtmp", rtmp_port, rtmp_nodes)
    if rtmps_port is not None and rtmps_nodes:
        lines += section("rtmps", rtmps_port, rtmps_nodes)
    return "\n".join(lines)


def nginx_stream_config(
    *,
    srt_port: int,
    srt_nodes: Sequence[Backend],
    pid_file: str,
    error_log: str,
    bind: str = "127.0.0.1",
    user: str | None = None,
) -> str:
    """nginx `stream` proxying SRT (UDP) to the nodes: one UDP session per caller address and port, kept
    while datagrams flow (`proxy_timeout`, above SRT's 1 s keepalives and 5 s peer idle timeout), every
    response of the node passed back (`proxy_responses` unset: SRT answers many datagrams per datagram)."""
    servers = "\n".join(f"        server {n.host}:{n.port} max_fails=1 fail_timeout=3s;" for n in srt_nodes)
    user_line = f"user {user};\n" if user else ""
    return f"""load_module {NGINX_STREAM_MODULE};
daemon off;
master_process on;
worker_processes 1;
pid {pid_file};
error_log {error_log} warn;
{user_line}
events {{
    worker_connections 1024;
}}

stream {{
    upstream srt_nodes {{
{servers}
    }}
    server {{
        listen {bind}:{srt_port} udp reuseport;
        proxy_pass srt_nodes;
        proxy_timeout 10s;
        proxy_next_upstream on;
        proxy_next_upstream_tries 3;
    }}
}}
"""


class _Daemon:
    """A balancer process in the foreground of its own session, its output in a log file."""

    def __init__(self, name: str, directory: Path) -> None:
        self.name = name
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.directory / f"{self.name}.log"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def _spawn(self, argv: list[str]) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def _wait_bound(self, port: int, udp: bool, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        table = ["/proc/net/udp"] if udp else ["/proc/net/tcp"]
        needle = f":{port:04X} "
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {self.log()[-2000:]}")
            for path in table:
                for line in Path(path).read_text().splitlines()[1:]:
                    fields = line.split()
                    if needle in fields[1] + " " and (udp or fields[3] == "0A"):
                        return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.name} did not bind port {port} within {within} s: {self.log()[-2000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


class HAProxy(_Daemon):
    """HAProxy in TCP mode in front of the nodes' RTMP (and RTMPS) ports; `rtmp_port`, `rtmps_port` its own."""

    def __init__(
        self,
        directory: Path,
        rtmp_nodes: Sequence[Backend],
        rtmps_nodes: Sequence[Backend] = (),
        *,
        check_interval_ms: int = 250,
        balance: str = "roundrobin",
        rtmp_port: int | None = None,
        rtmps_port: int | None = None,
    ) -> None:
        super().__init__("haproxy", directory)
        self.rtmp_port = rtmp_port or free_port()
        self.rtmps_port = (rtmps_port or free_port()) if rtmps_nodes else None
        self.config = haproxy_config(
            rtmp_port=self.rtmp_port,
            rtmp_nodes=rtmp_nodes,
            rtmps_port=self.rtmps_port,
            rtmps_nodes=rtmps_nodes,
            check_interval_ms=check_interval_ms,
            balance=balance,
        )

    def start(self) -> HAProxy:
        assert HAPROXY is not None, why_no_haproxy()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "haproxy.cfg"
        path.write_text(self.config)
        checked = subprocess.run([HAPROXY, "-c", "-q", "-f", str(path)], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise RuntimeError(f"haproxy refused its configuration: {checked.stderr or checked.stdout}")
        self._spawn([HAPROXY, "-db", "-f", str(path)])  # -db: foreground, no daemon
        self._wait_bound(self.rtmp_port, udp=False)
        return self


class NginxStream(_Daemon):
    """nginx's `stream` module in front of the nodes' SRT ports; `srt_port` is its own (UDP)."""

    def __init__(self, directory: Path, srt_nodes: Sequence[Backend], *, srt_port: int | None = None) -> None:
        super().__init__("nginx", directory)
        self.srt_port = srt_port or free_port(socket.SOCK_DGRAM)
        # As root, nginx's workers drop to `nobody` by default; say so, so a non-root run does not warn.
        user = "nobody nogroup" if os.geteuid() == 0 else None
        self.config = nginx_stream_config(
            srt_port=self.srt_port,
            srt_nodes=srt_nodes,
            pid_file=str(directory / "nginx.pid"),
            error_log=str(directory / "error.log"),
            user=user,
        )

    def start(self) -> NginxStream:
        assert NGINX is not None, why_no_nginx_stream()
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / "nginx-stream.conf"
        path.write_text(self.config)
        argv = [NGINX, "-p", str(self.directory), "-e", str(self.directory / "error.log"), "-c", str(path)]
        checked = subprocess.run([*argv, "-t", "-q"], capture_output=True, text=True, timeout=30)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused its configuration: {checked.stderr or checked.stdout}")
        self._spawn(argv)
        self._wait_bound(self.srt_port, udp=True)
        return self
