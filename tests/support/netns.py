"""Real impaired links for tests: a network namespace joined to the root namespace by a veth pair.

A destination (or a publisher) started inside the namespace is reached from the relay across a real
link, which a test can rate-limit (`tc tbf`) or cut (link down: a blackhole, packets vanish, nothing is
refused). Addresses come only from 10.200.0.0/16, one /30 per namespace (`.1` the root side, `.2` the
namespace side), and the namespace has no other route: nothing a test does here can reach any address
it did not make. Everything is removed on exit (deleting the namespace deletes its veth and qdiscs),
even when the test fails.

Needs root, iproute2 and network namespaces; `unavailable()` says why not, so that tests skip with the
reason. This kernel has veth and tbf but no netem: delay, loss and resets come from tests/support/impair.py.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.support.net import TCP_ESTABLISHED, TCP_LISTEN

SUBNET_PREFIX = "10.200"
"""Every address a namespace gets is 10.200.<k>.1 or 10.200.<k>.2 (k in 1..254), never anything else."""

IP_TIMEOUT_SECONDS = 10.0


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_SECONDS, check=check, stdin=subprocess.DEVNULL
    )


def _tc(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["tc", *args], capture_output=True, text=True, timeout=IP_TIMEOUT_SECONDS, check=check, stdin=subprocess.DEVNULL
    )


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can). Tries a real namespace, then removes it."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "tc"):
        if shutil.which(tool) is None:
            return f"`{tool}` (iproute2) is not installed"
    probe = f"rr-probe-{os.getpid()}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError, subprocess.TimeoutExpired) as exc:
        detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        return f"cannot create a network namespace: {detail}"
    try:
        veth = _ip("-n", probe, "link", "add", "rrpa", "type", "veth", "peer", "name", "rrpb", check=False)
        if veth.returncode != 0:
            return f"cannot create a veth pair: {veth.stderr.strip()}"
    finally:
        _ip("netns", "del", probe, check=False)
    return None


def _taken_subnets() -> set[int]:
    """The k of every 10.200.k.x already on an interface of the root namespace (another test's)."""
    taken: set[int] = set()
    for line in _ip("-o", "-4", "addr", "show").stdout.splitlines():
        for word in line.split():
            if word.startswith(SUBNET_PREFIX + "."):
                taken.add(int(word.split(".")[2]))
    return taken


@dataclass(frozen=True)
class Netns:
    """One namespace and its veth pair. `address` is the namespace's end, `host_address` the root's."""

    name: str
    host_if: str
    ns_if: str
    host_address: str
    address: str

    def argv(self, argv: list[str]) -> list[str]:
        """`argv` run inside the namespace (`ip netns exec` execs it: the pid is the program's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def rate_limit(self, kbit_per_second: int, *, burst_bytes: int = 16_000, latency_ms: int = 200) -> None:
        """`tc tbf` on both ends of the link, so each direction is held to the rate (excess queued up to
        `latency_ms`, then dropped: what a slow access link does)."""
        spec = ["tbf", "rate", f"{kbit_per_second}kbit", "burst", str(burst_bytes), "latency", f"{latency_ms}ms"]
        _tc("qdisc", "replace", "dev", self.host_if, "root", *spec)
        _ip("netns", "exec", self.name, "tc", "qdisc", "replace", "dev", self.ns_if, "root", *spec)

    def clear_rate_limit(self) -> None:
        _tc("qdisc", "del", "dev", self.host_if, "root", check=False)
        _ip("netns", "exec", self.name, "tc", "qdisc", "del", "dev", self.ns_if, "root", check=False)

    def link_down(self) -> None:
        """Cut the link at the namespace's end: the root side loses carrier and drops what it sends, the
        route stays (a blackhole, not a refusal: no RST, no ICMP, connects hang)."""
        _ip("-n", self.name, "link", "set", self.ns_if, "down")

    def link_up(self) -> None:
        _ip("-n", self.name, "link", "set", self.ns_if, "up")

    def qdisc(self) -> str:
        return _tc("qdisc", "show", "dev", self.host_if).stdout


def listening(pid: int, port: int, *, udp: bool) -> bool:
    """Whether `port` is bound (TCP: listening, or a connection accepted on it, as `wait_listening` says why) in
    the network namespace of process `pid`.

    Reads /proc/<pid>/net, which shows that process's namespace: no probe connection (a probe would use
    up an ffmpeg `-listen 1`)."""
    tables = ("udp", "udp6") if udp else ("tcp", "tcp6")
    needle = f":{port:04X}"
    for table in tables:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
                fields = line.split()
                if fields[1].endswith(needle) and (udp or fields[3] in (TCP_LISTEN, TCP_ESTABLISHED)):
                    return True
    return False


@contextlib.contextmanager
def namespace(label: str = "t") -> Iterator[Netns]:
    """A fresh namespace with a veth pair up on a free 10.200.k.0/30; removed on exit whatever happens."""
    taken = _taken_subnets()
    free = [k for k in range(1, 255) if k not in taken]
    if not free:
        raise RuntimeError("no free 10.200.k.0/30 left")
    k = random.choice(free)
    tag = f"{os.getpid() % 100000}{k}"
    ns = Netns(
        name=f"rr-{label}-{tag}",
        host_if=f"rrh{tag}"[:15],
        ns_if=f"rrn{tag}"[:15],
        host_address=f"{SUBNET_PREFIX}.{k}.1",
        address=f"{SUBNET_PREFIX}.{k}.2",
    )
    _ip("netns", "add", ns.name)
    try:
        _ip("link", "add", ns.host_if, "type", "veth", "peer", "name", ns.ns_if, "netns", ns.name)
        _ip("addr", "add", f"{ns.host_address}/30", "dev", ns.host_if)
        _ip("link", "set", ns.host_if, "up")
        _ip("-n", ns.name, "addr", "add", f"{ns.address}/30", "dev", ns.ns_if)
        _ip("-n", ns.name, "link", "set", ns.ns_if, "up")
        _ip("-n", ns.name, "link", "set", "lo", "up")
        yield ns
    finally:
        # The veth's root end goes with its peer; delete it too in case the move into the namespace failed.
        _ip("link", "del", ns.host_if, check=False)
        _ip("netns", "del", ns.name, check=False)
