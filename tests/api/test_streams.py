"""Streams resource: the fields, forms and errors of API.md, through real HTTP."""

from __future__ import annotations

from typing import Any

from api.errors import NOT_FOUND_MESSAGE
from tests.conftest import ApiClient

NOT_FOUND = {"status": 404, "error": NOT_FOUND_MESSAGE}


async def test_create_flat_and_wrapped_get_list_update_delete(api: ApiClient) -> None:
    status, flat, _ = await api.call("POST", "/streaming/streams", {"name": "flat"})
    assert status == 200
    status, wrapped, _ = await api.call("POST", "/streaming/streams", {"stream": {"name": "wrapped", "active": False}})
    assert status == 200
    assert isinstance(flat, dict) and isinstance(wrapped, dict)
    assert flat["name"] == "flat" and flat["active"] is True  # our default (Gcore's is false)
    assert wrapped["active"] is False
    assert flat["client_id"] == 1 and flat["live"] is False and flat["stream_source_type"] is None
    token = flat["token"]
    assert len(token) >= 30 and token.replace("-", "").replace("_", "").isalnum()
    assert flat["push_url"].endswith(f"/in/{flat['id']}?{token}") and flat["push_url"].startswith("rtmp://")
    assert flat["push_url_srt"].startswith("srt://") and flat["push_url_srt"].endswith(
        f"?streamid={flat['id']}#{token}"
    )
    assert flat["srt_passphrase"] is None and flat["created_at"].endswith("Z")

    status, got, _ = await api.call("GET", f"/streaming/streams/{flat['id']}")
    assert status == 200 and got == flat

    status, listed, headers = await api.call("GET", "/streaming/streams")
    assert status == 200 and isinstance(listed, list)
    assert [s["name"] for s in listed] == ["wrapped", "flat"]  # newest first
    assert headers["X-Total-Count"] == "2" and "Link" not in headers

    # PATCH changes only what is sent, and never requires name (Gcore's tutorial sends active alone).
    status, patched, _ = await api.call("PATCH", f"/streaming/streams/{wrapped['id']}", {"stream": {"active": True}})
    assert status == 200 and patched["active"] is True and patched["name"] == "wrapped"
    status, patched, _ = await api.call(
        "PATCH", f"/streaming/streams/{wrapped['id']}", {"name": "renamed", "srt_passphrase": "0123456789abc"}
    )
    assert status == 200 and patched["name"] == "renamed" and patched["srt_passphrase"] == "0123456789abc"
    assert patched["token"] == wrapped["token"]
    status, patched, _ = await api.call(
        "PATCH", f"/streaming/streams/{wrapped['id']}", {"stream": {"srt_passphrase": None}}
    )
    assert status == 200 and patched["srt_passphrase"] is None

    status, body, _ = await api.call("DELETE", f"/streaming/streams/{flat['id']}")
    assert status == 204 and body is None
    status, body, _ = await api.call("GET", f"/streaming/streams/{flat['id']}")
    assert status == 404 and body == NOT_FOUND


async def test_pagination_25_per_page_with_headers(api: ApiClient) -> None:
    for n in range(27):
        assert (await api.call("POST", "/streaming/streams", {"name": f"s{n}"}))[0] == 200
    status, first, headers = await api.call("GET", "/streaming/streams")
    assert status == 200 and len(first) == 25 and first[0]["name"] == "s26"
    assert headers["X-Total-Count"] == "27"
    assert headers["Link"] == '</streaming/streams?page=2>; rel="next"'
    status, second, headers = await api.call("GET", "/streaming/streams?page=2")
    assert [s["name"] for s in second] == ["s1", "s0"] and "Link" not in headers
    status, third, _ = await api.call("GET", "/streaming/streams?page=3")
    assert status == 200 and third == []
    for bad in ("0", "-1", "abc", "1.5", ""):
        status, body, _ = await api.call("GET", f"/streaming/streams?page={bad}")
        assert status == 422 and body == {"errors": {"page": ["must be a positive integer"]}}


async def test_validation_errors_use_gcore_shape(api: ApiClient) -> None:
    cases: list[tuple[Any, dict[str, list[str]]]] = [
        ({}, {"name": ["can't be blank"]}),
        ({"name": ""}, {"name": ["can't be blank"]}),
        ({"name": "   "}, {"name": ["can't be blank"]}),
        ({"stream": {"active": True}}, {"name": ["can't be blank"]}),
        ({"name": 5}, {"name": ["must be a string"]}),
        ({"name": "x" * 256}, {"name": ["is too long (maximum is 255 characters)"]}),
        ({"name": "a", "active": "true"}, {"active": ["must be a boolean"]}),
        ({"name": "a", "client_user_id": "7"}, {"client_user_id": ["must be an integer"]}),
        ({"name": "a", "client_user_id": 2**64}, {"client_user_id": ["is out of range"]}),
        ({"name": "a", "srt_passphrase": "short"}, {"srt_passphrase": ["must be 10 to 79 characters"]}),
        # libsrt's limit is 79: an 80-character passphrase would be refused at every SRT handshake.
        ({"name": "a", "srt_passphrase": "p" * 80}, {"srt_passphrase": ["must be 10 to 79 characters"]}),
        (
            {"name": "a", "srt_passphrase": "has a space in it"},
            {"srt_passphrase": ["must be printable ASCII without whitespace"]},
        ),
        ({"stream": "nope"}, {"stream": ["must be an object"]}),
    ]
    for body, errors in cases:
        status, answer, _ = await api.call("POST", "/streaming/streams", body)
        assert (status, answer) == (422, {"errors": errors}), body
    status, answer, _ = await api.call("GET", "/streaming/streams")
    assert answer == []  # nothing was created by any of them


async def test_bad_json_is_400_generic_shape(api: ApiClient) -> None:
    for raw in (b"{", b"not json", b"[1, 2]", b'"text"', b'{"name": NaN}'):
        status, body, _ = await api.call("POST", "/streaming/streams", raw=raw)
        assert status == 400 and set(body) == {"status", "error"} and body["status"] == 400, raw
    status, body, _ = await api.call("POST", "/streaming/streams", raw=b'{"name": "' + b"x" * 70000 + b'"}')
    assert status == 413 and body["status"] == 413


async def test_patch_name_rules(api: ApiClient) -> None:
    _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "keep"})
    for body in ({"name": ""}, {"stream": {"name": None}}):
        status, answer, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", body)
        assert (status, answer) == (422, {"errors": {"name": ["can't be blank"]}})
    _, again, _ = await api.call("GET", f"/streaming/streams/{stream['id']}")
    assert again["name"] == "keep"


async def test_unknown_ids_and_gcore_fields(api: ApiClient) -> None:
    for path in ("/streaming/streams/999", "/streaming/streams/abc", "/streaming/streams/99999999999999999999999"):
        for method in ("GET", "PATCH", "DELETE"):
            status, body, _ = await api.call(method, path, {"name": "x"} if method == "PATCH" else None)
            assert (status, body) == (404, NOT_FOUND), (method, path)
    # Fields the relay does not know are ignored (Gcore's read-only ones, newer ones); Gcore's settings
    # are kept as sent (tests/api/test_gcore_fields.py).
    status, body, _ = await api.call(
        "POST", "/streaming/streams", {"name": "dvr", "transcoding_speed": 1.0, "cdn_id": 3, "auto_record": False}
    )
    assert status == 200 and "transcoding_speed" not in body and body["cdn_id"] == 3


async def test_healthz_and_openapi_need_no_key(api: ApiClient) -> None:
    anonymous = api.as_key(None)
    status, body, _ = await anonymous.call("GET", "/healthz")
    assert status == 200 and body["status"] == "ok"
    status, spec, _ = await anonymous.call("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.")
    assert {
        "/streaming/streams",
        "/streaming/streams/{id}",
        "/streaming/restreams",
        "/streaming/restreams/{id}",
    } <= set(spec["paths"])


async def test_srt_latency_extension_field(api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "srt", "srt_latency_ms": 500})
    assert status == 200 and stream["srt_latency_ms"] == 500
    for bad in (5, 10**6, "500", 1.5):
        status, body, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"srt_latency_ms": bad})
        assert status == 422 and set(body["errors"]) == {"srt_latency_ms"}, bad
    status, cleared, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"srt_latency_ms": None})
    assert status == 200 and cleared["srt_latency_ms"] is None and cleared["name"] == "srt"
