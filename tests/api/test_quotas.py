"""Per-client limits through the API: a refusal is Gcore's 422 naming the limit, and /metrics shows use."""

from __future__ import annotations

import pytest

from api.server import Server
from tests.conftest import ApiClient

LIMITED_CLIENT = 2


@pytest.fixture
def service_overrides() -> dict[str, object]:
    return {"max_streams_per_client": 3, "max_restreams_per_stream": 2, "client_limits": "2:streams=1"}


async def client_b(service: Server, api: ApiClient) -> ApiClient:
    key, _ = await service.store.create_api_key(LIMITED_CLIENT, "client B")
    return api.as_key(key)


async def test_streams_beyond_the_client_limit_are_refused(service: Server, api: ApiClient) -> None:
    for n in range(3):
        status, _, _ = await api.call("POST", "/streaming/streams", {"name": f"s{n}"})
        assert status == 200
    status, body, _ = await api.call("POST", "/streaming/streams", {"name": "one too many"})
    assert (status, body) == (422, {"errors": {"streams": ["limit reached: this client may have at most 3 streams"]}})
    _, _, headers = await api.call("GET", "/streaming/streams")
    assert headers["X-Total-Count"] == "3"  # nothing was created

    other = await client_b(service, api)  # its own override: one stream
    assert (await other.call("POST", "/streaming/streams", {"name": "b1"}))[0] == 200
    status, body, _ = await other.call("POST", "/streaming/streams", {"name": "b2"})
    assert status == 422 and "at most 1 streams" in body["errors"]["streams"][0]


async def test_restreams_beyond_the_stream_limit_are_refused_on_create_and_on_move(api: ApiClient) -> None:
    _, full, _ = await api.call("POST", "/streaming/streams", {"name": "full"})
    _, empty, _ = await api.call("POST", "/streaming/streams", {"name": "empty"})
    made = []
    for n in range(2):
        status, body, _ = await api.call(
            "POST", "/streaming/restreams", {"restream": {"stream_id": full["id"], "uri": f"rtmp://192.0.2.1/a/{n}"}}
        )
        assert status == 200
        made.append(body["id"])
    status, body, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"stream_id": full["id"], "uri": "rtmp://192.0.2.1/a/x"}}
    )
    assert (status, body) == (422, {"errors": {"restreams": ["limit reached: a stream may have at most 2 restreams"]}})

    _, moved, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"stream_id": empty["id"], "uri": "rtmp://192.0.2.1/b/0"}}
    )
    status, body, _ = await api.call(
        "PATCH", f"/streaming/restreams/{moved['id']}", {"restream": {"stream_id": full["id"]}}
    )
    assert status == 422 and body["errors"] == {"restreams": ["limit reached: a stream may have at most 2 restreams"]}
    status, _, _ = await api.call(
        "PATCH",
        f"/streaming/restreams/{made[0]}",  # staying on its stream is fine
        {"restream": {"stream_id": full["id"], "name": "renamed"}},
    )
    assert status == 200


async def test_metrics_show_use_against_the_limits(api: ApiClient) -> None:
    _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "s"})
    await api.call(
        "POST", "/streaming/restreams", {"restream": {"stream_id": stream["id"], "uri": "rtmp://192.0.2.1/a/0"}}
    )
    async with api.session.get(api.base_url + "/metrics", headers={"Authorization": f"APIKey {api.key}"}) as response:
        text = await response.text()
    for line in (
        'relay_client_limit{client_id="1",limit="streams"} 3.0',
        'relay_client_usage{client_id="1",limit="streams"} 1.0',
        'relay_client_limit{client_id="1",limit="restreams_per_stream"} 2.0',
        'relay_client_usage{client_id="1",limit="restreams_per_stream"} 1.0',
        'relay_client_usage{client_id="1",limit="pushes"} 0.0',
        "relay_pushes_limit 64.0",
        "relay_pushes_running 0.0",
        "relay_pushes_waiting 0.0",
    ):
        assert line in text
