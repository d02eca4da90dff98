"""API keys and tenants: who may call, and that a client only ever sees its own objects."""

from __future__ import annotations

from api.errors import NOT_FOUND_MESSAGE
from api.server import Server
from tests.conftest import ApiClient

UNAUTHORIZED = {"errors": {"auth": ["invalid api key"]}}
NOT_FOUND = {"status": 404, "error": NOT_FOUND_MESSAGE}


async def test_missing_wrong_and_malformed_keys_are_401(api: ApiClient) -> None:
    for headers in (
        {},
        {"Authorization": "APIKey nope"},
        {"Authorization": "Bearer " + str(api.key)},
        {"Authorization": "APIKey"},
        {"Authorization": str(api.key)},
    ):
        status, body, _ = await api.as_key(None).call("GET", "/streaming/streams", headers=headers)
        assert (status, body) == (401, UNAUTHORIZED), headers


async def test_scheme_word_in_any_case_and_keys_with_dollar(api: ApiClient) -> None:
    assert api.key is not None and "$" in api.key
    for scheme in ("APIKey", "apikey", "APIKEY", "ApiKey"):
        status, _, _ = await api.as_key(None).call(
            "GET", "/streaming/streams", headers={"Authorization": f"{scheme} {api.key}"}
        )
        assert status == 200, scheme


async def test_revoked_key_is_401(service: Server, api: ApiClient) -> None:
    key, record = await service.store.create_api_key(5, "temp")
    assert (await api.as_key(key).call("GET", "/streaming/streams"))[0] == 200
    assert await service.store.revoke_api_key(str(record.id)) is not None
    assert (await api.as_key(key).call("GET", "/streaming/streams"))[1] == UNAUTHORIZED


async def test_client_b_cannot_touch_client_a(service: Server, api: ApiClient) -> None:
    key_b, _ = await service.store.create_api_key(2, "client B")
    b = api.as_key(key_b)
    _, stream_a, _ = await api.call("POST", "/streaming/streams", {"name": "A's"})
    _, restream_a, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": "rtmp://h/app/k", "stream_id": stream_a["id"]}}
    )
    _, stream_b, _ = await b.call("POST", "/streaming/streams", {"name": "B's"})
    assert stream_b["client_id"] == 2

    for path in (f"/streaming/streams/{stream_a['id']}", f"/streaming/restreams/{restream_a['id']}"):
        assert (await b.call("GET", path))[:2] == (404, NOT_FOUND)
        assert (await b.call("PATCH", path, {"name": "hijack", "active": False}))[:2] == (404, NOT_FOUND)
        assert (await b.call("DELETE", path))[:2] == (404, NOT_FOUND)
    assert [s["id"] for s in (await b.call("GET", "/streaming/streams"))[1]] == [stream_b["id"]]
    assert (await b.call("GET", "/streaming/restreams"))[1] == []

    # B cannot restream A's stream, nor move its own restream onto it.
    status, body, _ = await b.call(
        "POST", "/streaming/restreams", {"restream": {"uri": "rtmp://evil/app/k", "stream_id": stream_a["id"]}}
    )
    assert (status, body) == (422, {"errors": {"stream": ["does not belong to the same client "]}})
    _, restream_b, _ = await b.call(
        "POST", "/streaming/restreams", {"restream": {"uri": "rtmp://h/app/k", "stream_id": stream_b["id"]}}
    )
    status, body, _ = await b.call(
        "PATCH", f"/streaming/restreams/{restream_b['id']}", {"restream": {"stream_id": stream_a["id"]}}
    )
    assert (status, body) == (422, {"errors": {"stream": ["does not belong to the same client "]}})

    # A's objects are untouched.
    _, still_a, _ = await api.call("GET", f"/streaming/streams/{stream_a['id']}")
    assert still_a == stream_a
    _, still_ra, _ = await api.call("GET", f"/streaming/restreams/{restream_a['id']}")
    assert still_ra["name"] == restream_a["name"] and still_ra["active"] is True
