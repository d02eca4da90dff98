"""The cluster samples are what the tests run: samples/cluster/haproxy.cfg and nginx-stream.conf are the
configurations tests/support/balancers.py writes (with the compose profile's names, ports and one-second
checks), HAProxy accepts the sample, and docker-compose.yml's `cluster` profile wires them as documented."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.balancers import HAPROXY, Backend, haproxy_config, nginx_stream_config

SAMPLES = ROOT / "samples" / "cluster"
NODES = ("node-a", "node-b", "node-c")
COMPOSE = [sys.executable, "-m", "podman_compose"]


def body(path: str) -> str:
    """A sample without its leading comment block."""
    lines = (SAMPLES / path).read_text().splitlines(keepends=True)
    return "".join(lines[next(i for i, line in enumerate(lines) if not line.startswith("#")) :])


def test_the_haproxy_sample_is_the_tested_configuration() -> None:
    rtmp = [Backend(n, 1935, 8080, host=n) for n in NODES]
    rtmps = [Backend(n, 1936, 8080, host=n) for n in NODES]
    expected = haproxy_config(
        rtmp_port=1935,
        rtmp_nodes=rtmp,
        rtmps_port=1936,
        rtmps_nodes=rtmps,
        check_interval_ms=1000,
        bind="*",
        balance="source",
    )
    assert body("haproxy.cfg") == expected + "\n"


def test_the_nginx_sample_is_the_tested_configuration() -> None:
    expected = nginx_stream_config(
        srt_port=5001,
        srt_nodes=[Backend(n, 5001, 8080, host=n) for n in NODES],
        pid_file="/run/nginx.pid",
        error_log="stderr",
        bind="0.0.0.0",
        user="www-data",
    )
    assert body("nginx-stream.conf") == expected


@pytest.mark.integration
def test_haproxy_accepts_the_sample() -> None:
    if HAPROXY is None:
        pytest.skip("HAProxy is not installed (Debian package haproxy; make test installs it)")
    checked = subprocess.run(
        [HAPROXY, "-c", "-f", str(SAMPLES / "haproxy.cfg")], capture_output=True, text=True, timeout=30
    )
    # The nodes' names resolve only inside the compose network: `init-addr libc,none` starts without them.
    assert checked.returncode == 0, checked.stderr


@pytest.mark.integration
def test_the_compose_cluster_profile() -> None:
    if importlib.util.find_spec("podman_compose") is None:
        pytest.skip("podman-compose is not installed (it is in the `test` extra: pip install -e '.[test]')")
    env = {"PATH": "/usr/bin:/bin:/usr/sbin:/sbin", "RELAY_API_KEY_FILE": "/dev/null", "RELAY_DB_PASSWORD": "pw"}
    done = subprocess.run(
        [*COMPOSE, "-f", str(ROOT / "docker-compose.yml"), "--profile", "cluster", "config"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    import yaml  # type: ignore[import-untyped]  # podman-compose's own dependency (no stubs installed)

    services = yaml.safe_load(done.stdout)["services"]
    cluster = {name for name, s in services.items() if "cluster" in s.get("profiles", [])}
    assert cluster == {"cluster-postgres", *NODES, "balancer-rtmp", "balancer-srt"}
    urls = {services[n]["environment"]["RELAY_DATABASE_URL"] for n in NODES}
    assert urls == {"postgresql://relay:pw@cluster-postgres:5432/relay"}, "one database for every node"
    assert [services[n]["environment"]["RELAY_NODE_ID"] for n in NODES] == list(NODES)
    # Every publisher reaches a node from a balancer's address: the per-address cap (16) would hold a node.
    assert all(int(services[n]["environment"]["RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS"]) >= 256 for n in NODES)
    assert sum(1 for n in NODES if services[n].get("ports")) == 1, "one node's API published, no ingest port"
    mounts = [v for name in ("balancer-rtmp", "balancer-srt") for v in services[name]["volumes"]]
    for mount in mounts:
        source = str(mount).split(":")[0]
        assert (ROOT / source).resolve().exists() or (ROOT / source.removeprefix("./")).exists(), mount
