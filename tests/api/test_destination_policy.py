"""The destination policy at the API: a tenant's URI that points at the relay's own host or networks is a
422 on `uri` naming the rule (never echoing the URI), on create and on PATCH; the operator's client is
not bound by it; the operator's lists widen and narrow it; accepted URIs are stored normalised."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from api.server import Server
from tests.conftest import ApiClient, service_settings

LOOPBACK = "destination not allowed: the host is a loopback address"

REFUSED = [
    ("rtmp://127.0.0.1:8080/live/key", LOOPBACK),  # the API itself
    ("rtmp://127.1:8080/live/key", LOOPBACK),
    ("rtmp://2130706433:8080/live/key", LOOPBACK),
    ("rtmp://0x7f000001/live/key", LOOPBACK),
    ("rtmp://[::1]:1935/live/key", LOOPBACK),
    ("rtmp://[::ffff:127.0.0.1]/live/key", LOOPBACK),
    ("rtmps://169.254.169.254:443/latest/meta-data", "destination not allowed: the host is a link-local address"),
    ("rtmp://0.0.0.0:1935/live/key", "destination not allowed: the host is the unspecified address"),
    ("srt://10.0.0.5:9000?mode=caller", "destination not allowed: the host is a private network address"),
    ("srt://192.168.1.10:9000", "destination not allowed: the host is a private network address"),
    ("rtmp://[fd00::5]/live/key", "destination not allowed: the host is a private network address"),
    ("rtmp://100.64.1.1/live/key", "destination not allowed: the host is a shared (carrier-grade NAT) address"),
    ("srt://239.1.1.1:9000", "destination not allowed: the host is a multicast address"),
    ("rtmp://240.0.0.1/live/key", "destination not allowed: the host is a reserved address"),
]


@pytest.fixture
async def tenant(service: Server, api: ApiClient) -> ApiClient:
    key, _ = await service.store.create_api_key(2, "a tenant")
    return api.as_key(key)


async def _stream(client: ApiClient) -> dict[str, Any]:
    status, stream, _ = await client.call("POST", "/streaming/streams", {"name": "src"})
    assert status == 200
    created: dict[str, Any] = stream
    return created


@pytest.mark.parametrize(("uri", "message"), REFUSED)
async def test_a_tenant_is_refused_on_create(tenant: ApiClient, uri: str, message: str) -> None:
    stream = await _stream(tenant)
    status, answer, _ = await tenant.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
    )
    assert (status, answer) == (422, {"errors": {"uri": [message]}})
    host = uri.split("://", 1)[1].split("/", 1)[0].split("?", 1)[0]
    assert host not in str(answer) and "key" not in str(answer)  # the rule is named, the URI never echoed
    assert (await tenant.call("GET", "/streaming/restreams"))[1] == []


@pytest.mark.parametrize(("uri", "message"), REFUSED[:6])
async def test_a_tenant_is_refused_on_patch(tenant: ApiClient, uri: str, message: str) -> None:
    stream = await _stream(tenant)
    _, created, _ = await tenant.call(
        "POST",
        "/streaming/restreams",
        {"restream": {"uri": "rtmp://a.rtmp.youtube.com/live2/k", "stream_id": stream["id"]}},
    )
    path = f"/streaming/restreams/{created['id']}"
    status, answer, _ = await tenant.call("PATCH", path, {"restream": {"uri": uri}})
    assert (status, answer) == (422, {"errors": {"uri": [message]}})
    assert (await tenant.call("GET", path))[1]["uri"] == "rtmp://a.rtmp.youtube.com/live2/k"


@pytest.mark.parametrize(("uri", "message"), REFUSED)
async def test_the_operators_client_may_use_them(api: ApiClient, uri: str, message: str) -> None:
    # Client 1 is the operator: the README's local testing (pushing to 127.0.0.1) keeps working.
    stream = await _stream(api)
    status, created, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
    )
    assert status == 200 and created["client_id"] == 1


@pytest.mark.parametrize(
    "uri",
    [
        "rtmp://a.rtmp.youtube.com/live2/xxxx",
        "rtmp://8.8.8.8/live/key",
        "rtmp://[2606:4700:4700::1111]/live/key",
        # A name is judged when a push resolves it (tests/system/test_destination_policy.py), not here:
        "rtmp://localhost:1935/live/key",
    ],
)
async def test_a_tenant_may_use_public_addresses_and_names(tenant: ApiClient, uri: str) -> None:
    stream = await _stream(tenant)
    status, created, _ = await tenant.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
    )
    assert status == 200 and created["uri"] == uri


async def test_accepted_uris_are_stored_normalised(tenant: ApiClient) -> None:
    stream = await _stream(tenant)
    status, created, _ = await tenant.call(
        "POST",
        "/streaming/restreams",
        {"restream": {"uri": "RTMP://A.RTMP.YouTube.com/live2/Key-AbC", "stream_id": stream["id"]}},
    )
    assert status == 200 and created["uri"] == "rtmp://a.rtmp.youtube.com/live2/Key-AbC"


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("latency=120000000", "srt option 'latency' must be from 0 to 60000000"),
        ("rcvbuf=2147483647", "srt option 'rcvbuf' must be from 32768 to 67108864"),
        ("passphrase=" + "x" * 80, "srt passphrase must be 10 to 79 characters"),
    ],
)
async def test_srt_options_out_of_range_name_the_option(tenant: ApiClient, query: str, message: str) -> None:
    stream = await _stream(tenant)
    status, answer, _ = await tenant.call(
        "POST", "/streaming/restreams", {"restream": {"uri": f"srt://8.8.8.8:9000?{query}", "stream_id": stream["id"]}}
    )
    assert (status, answer) == (422, {"errors": {"uri": [message]}})


@pytest.fixture
async def widened(tmp_path: Path) -> AsyncIterator[tuple[ApiClient, ApiClient]]:
    """A relay whose operator allows 10.0.0.0/8 to everyone and denies the metadata address to everyone."""
    server = Server(
        service_settings(tmp_path, destination_allow=("10.0.0.0/8", "media.lan"), destination_deny=("169.254.169.254",))
    )
    await server.start()
    try:
        key, _ = await server.store.create_api_key(2, "a tenant")
        async with aiohttp.ClientSession() as session:
            operator = ApiClient(session, f"http://127.0.0.1:{server.ports.http}", service_settings(tmp_path).api_key)
            yield operator, operator.as_key(key)
    finally:
        await server.close()


async def test_operator_lists_widen_and_narrow(widened: tuple[ApiClient, ApiClient]) -> None:
    operator, tenant = widened
    for client, uri, expected in [
        (tenant, "srt://10.1.2.3:9000", 200),
        (tenant, "srt://192.168.1.1:9000", 422),
        (operator, "rtmp://169.254.169.254/latest/x", 422),
        (tenant, "rtmp://169.254.169.254/latest/x", 422),
        (operator, "rtmp://127.0.0.1/live/x", 200),
    ]:
        stream = await _stream(client)
        status, answer, _ = await client.call(
            "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
        )
        assert status == expected, (uri, answer)
        if uri.startswith("rtmp://169"):
            assert answer == {
                "errors": {"uri": ["destination not allowed: the host is an address the operator denies"]}
            }
