"""Pulled streams at the API (Gcore's `pull` and `uri`): always in the body, validated strictly alternative by
alternative, held against the destination policy for tenants, Terraform's nulls taken as defaults.

Streams here are created inactive, so that the engine pulls nothing: what the pull does is tested with real
sources in tests/e2e/test_pull.py and with a fake ffmpeg in tests/engine/test_pulls.py."""

from __future__ import annotations

from typing import Any

import pytest

from api.server import Server
from relay.pull.sources import INVALID_SOURCE_SCHEME
from tests.conftest import ApiClient

PULL_NEEDS_URI = "can't be blank when pull is true"


async def _create(client: ApiClient, **fields: Any) -> tuple[int, Any]:
    status, body, _ = await client.call("POST", "/streaming/streams", {"name": "pulled", "active": False, **fields})
    return status, body


@pytest.fixture
async def tenant(service: Server, api: ApiClient) -> ApiClient:
    key, _ = await service.store.create_api_key(2, "a tenant")
    return api.as_key(key)


async def test_push_streams_show_pull_false_and_uri_null(api: ApiClient) -> None:
    status, stream = await _create(api)
    assert status == 200 and stream["pull"] is False and stream["uri"] is None
    assert stream["status"]["pull"] is None


async def test_a_pulled_stream_is_stored_normalised_and_survives_a_restart(service: Server, api: ApiClient) -> None:
    status, stream = await _create(
        api, pull=True, uri="RTMP://Main.Example.com/live/k   srt://backup.example.com:9000?streamid=k"
    )
    assert status == 200, stream
    assert stream["pull"] is True
    assert stream["uri"] == "rtmp://main.example.com/live/k srt://backup.example.com:9000?streamid=k"
    stored = await service.store.get_stream(stream["id"])
    assert stored is not None and stored.pull and stored.uri == stream["uri"]
    status, got, _ = await api.call("GET", f"/streaming/streams/{stream['id']}")
    assert got["pull"] is True and got["uri"] == stream["uri"]


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("file:///etc/passwd", INVALID_SOURCE_SCHEME),
        ("pipe:0", INVALID_SOURCE_SCHEME),
        ("concat:/a.ts|/b.ts", INVALID_SOURCE_SCHEME),
        ("data:video/mp2t;base64,R0lG", INVALID_SOURCE_SCHEME),
        ("subfile,,start,0,end,0,,:/etc/passwd", INVALID_SOURCE_SCHEME),
        ("-f lavfi", f"alternative 1: {INVALID_SOURCE_SCHEME}"),
        ("rtmp://a.example.com/live/secret-key -i", f"alternative 2: {INVALID_SOURCE_SCHEME}"),
        ("srt://a.example.com:9000?mode=listener", "srt sources support only mode=caller"),
        ("rtsp://cam.example.com/s?udp", "rtsp uri must not choose the transport (the relay pulls over tcp)"),
        (42, INVALID_SOURCE_SCHEME),
    ],
)
async def test_invalid_sources_are_422_on_uri_without_echo(api: ApiClient, uri: Any, message: str) -> None:
    status, body = await _create(api, pull=True, uri=uri)
    assert (status, body) == (422, {"errors": {"uri": [message]}})
    assert "secret-key" not in str(body) and "passwd" not in str(body)


async def test_pull_needs_a_uri_on_create_and_on_update(api: ApiClient) -> None:
    assert await _create(api, pull=True) == (422, {"errors": {"uri": [PULL_NEEDS_URI]}})
    status, stream = await _create(api)
    status, body, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"stream": {"pull": True}})
    assert (status, body) == (422, {"errors": {"uri": [PULL_NEEDS_URI]}})
    status, body, _ = await api.call(
        "PATCH", f"/streaming/streams/{stream['id']}", {"stream": {"pull": True, "uri": "https://e.example.com/i.m3u8"}}
    )
    assert status == 200 and body["pull"] is True and body["uri"] == "https://e.example.com/i.m3u8"
    status, body, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"stream": {"uri": None}})
    assert (status, body) == (422, {"errors": {"uri": [PULL_NEEDS_URI]}})


async def test_terraform_nulls_restore_the_defaults(api: ApiClient) -> None:
    status, stream = await _create(api, pull=True, uri="rtmp://a.example.com/live/k")
    status, body, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"pull": None, "uri": None})
    assert status == 200 and body["pull"] is False and body["uri"] is None


async def test_pull_must_be_a_boolean(api: ApiClient) -> None:
    status, body = await _create(api, pull="true", uri="rtmp://a.example.com/live/k")
    assert (status, body) == (422, {"errors": {"pull": ["must be a boolean"]}})


async def test_a_tenant_may_not_pull_from_inside_the_relays_networks(tenant: ApiClient) -> None:
    status, body = await _create(tenant, pull=True, uri="rtmp://127.0.0.1:1935/live/k")
    assert (status, body) == (422, {"errors": {"uri": ["source not allowed: the host is a loopback address"]}})
    status, body = await _create(tenant, pull=True, uri="rtmp://a.example.com/live/k http://169.254.169.254/latest")
    assert (status, body) == (
        422,
        {"errors": {"uri": ["alternative 2: source not allowed: the host is a link-local address"]}},
    )
    status, body = await _create(tenant, pull=True, uri="https://a.example.com/i.m3u8")
    assert status == 200, body


async def test_the_operator_may_pull_from_anywhere(api: ApiClient) -> None:
    status, body = await _create(api, pull=True, uri="rtmp://127.0.0.1:1935/live/k")
    assert status == 200, body
