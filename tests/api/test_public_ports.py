"""Push URLs behind a balancer: RELAY_PUBLIC_HOST and RELAY_PUBLIC_*_PORT name the balancer's address, not
the node's own ports (several nodes, each on its own ports, behind one address)."""

from __future__ import annotations

import pytest

from api.server import Server
from relay.config import from_environment
from tests.conftest import ApiClient


@pytest.fixture
def service_overrides() -> dict[str, object]:
    return {"public_host": "live.example.com", "public_rtmp_port": 1935, "public_srt_port": 5001}


async def test_push_urls_name_the_balancer_s_ports(service: Server, api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "behind a balancer"})
    assert status == 200 and isinstance(stream, dict)
    assert service.ports.rtmp != 1935  # the node itself listens elsewhere
    token = stream["token"]
    assert stream["push_url"] == f"rtmp://live.example.com:1935/in/{stream['id']}?{token}"
    assert stream["push_url_srt"] == f"srt://live.example.com:5001?streamid={stream['id']}#{token}"
    assert stream["push_url_rtmps"] is None  # no certificate, no RTMPS ingest: no URL that cannot work


def test_public_ports_default_to_the_bound_ones_and_are_checked() -> None:
    defaults = from_environment({})
    assert (defaults.public_rtmp_port, defaults.public_rtmps_port, defaults.public_srt_port) == (0, 0, 0)
    settings = from_environment({"RELAY_PUBLIC_RTMP_PORT": "1935", "RELAY_PUBLIC_RTMPS_PORT": "443"})
    assert (settings.public_rtmp_port, settings.public_rtmps_port) == (1935, 443)
    with pytest.raises(ValueError, match="RELAY_PUBLIC_SRT_PORT"):
        from_environment({"RELAY_PUBLIC_SRT_PORT": "70000"})
