"""Restreams resource: fields, the documented 422 messages, strict URI parsing."""

from __future__ import annotations

from typing import Any

import pytest

from api.errors import NOT_FOUND_MESSAGE
from tests.conftest import ApiClient

INVALID_URI = {"uri": ["invalid uri, supported protocols are rtmp, rtmps, srt"]}


async def _stream(api: ApiClient, name: str = "src") -> dict[str, Any]:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": name})
    assert status == 200
    created: dict[str, Any] = stream
    return created


async def test_crud_round_trip(api: ApiClient) -> None:
    stream = await _stream(api)
    body = {
        "restream": {
            "name": "YouTube",
            "uri": "rtmp://a.rtmp.youtube.com/live2/abcd-1234",
            "stream_id": stream["id"],
            "client_user_id": 42,
            "live": True,
        }
    }
    status, created, _ = await api.call("POST", "/streaming/restreams", body)
    assert status == 200
    assert created["name"] == "YouTube" and created["active"] is True and created["stream_id"] == stream["id"]
    assert created["live"] is False  # sent values are ignored: nobody publishes
    assert created["client_id"] == 1 and created["client_user_id"] == 42
    assert created["no_audio"] is False and created["no_audio_mode"] == "drop"
    assert created["source"] == "original" and created["quality_id"] is None and created["playlist_id"] is None
    assert created["tls_verify"] is True and created["status"]["state"] in ("idle", "disabled")

    rid = created["id"]
    status, patched, _ = await api.call(
        "PATCH",
        f"/streaming/restreams/{rid}",
        {"restream": {"active": False, "no_audio": True, "no_audio_mode": "silence"}},
    )
    assert status == 200 and patched["active"] is False and patched["no_audio"] is True
    assert patched["no_audio_mode"] == "silence" and patched["uri"] == created["uri"]
    assert patched["status"]["state"] == "disabled"

    status, listed, headers = await api.call("GET", "/streaming/restreams")
    assert status == 200 and [r["id"] for r in listed] == [rid] and headers["X-Total-Count"] == "1"
    assert (await api.call("GET", f"/streaming/restreams/{rid}"))[1] == patched
    assert (await api.call("DELETE", f"/streaming/restreams/{rid}"))[0] == 204
    status, body, _ = await api.call("GET", f"/streaming/restreams/{rid}")
    assert (status, body) == (404, {"status": 404, "error": NOT_FOUND_MESSAGE})


async def test_documented_messages(api: ApiClient) -> None:
    stream = await _stream(api)
    ok_uri = "rtmp://example.com/live/key"
    cases: list[tuple[dict[str, Any], dict[str, list[str]]]] = [
        ({"uri": ok_uri}, {"stream": ["must exist"]}),
        ({"uri": ok_uri, "stream_id": 987654}, {"stream": ["must exist"]}),
        ({"stream_id": stream["id"]}, INVALID_URI),
        ({"stream_id": stream["id"], "uri": "http://example.com/live"}, INVALID_URI),
        ({"stream_id": stream["id"], "uri": "file:///etc/passwd"}, INVALID_URI),
        ({"stream_id": stream["id"], "uri": 17}, INVALID_URI),
        ({"stream_id": stream["id"], "uri": ok_uri, "no_audio": "yes"}, {"no_audio": ["must be a boolean"]}),
        ({"stream_id": stream["id"], "uri": ok_uri, "no_audio": 1}, {"no_audio": ["must be a boolean"]}),
        (
            {"stream_id": stream["id"], "uri": ok_uri, "no_audio_mode": "mute"},
            {"no_audio_mode": ["must be one of: drop or silence"]},
        ),
        (
            {"stream_id": stream["id"], "uri": ok_uri, "source": "transcoded"},
            {"source": ["transcoded is not supported: the relay never transcodes video"]},
        ),
        (
            {"stream_id": stream["id"], "uri": "srt://dest.example.com:5001?mode=listener"},
            {"uri": ["srt targets support only mode=caller"]},
        ),
        ({}, {**INVALID_URI, "stream": ["must exist"]}),
    ]
    for fields, errors in cases:
        status, answer, _ = await api.call("POST", "/streaming/restreams", {"restream": fields})
        assert (status, answer) == (422, {"errors": errors}), fields
    assert (await api.call("GET", "/streaming/restreams"))[1] == []


@pytest.mark.parametrize(
    "uri",
    [
        "rtmp://a.rtmp.youtube.com/live2/xxxx-xxxx-xxxx-xxxx",
        "rtmps://live-api-s.facebook.com:443/rtmp/FB-1234-0-Abc",
        "rtmp://live.twitch.tv/app/live_123_abc",
        "srt://target.example.com:5001?streamid=1&mode=caller&latency=2500000&passphrase=secret-phrase",
        "srt://10.0.0.5:9000",
        "srt://relay.example.com:5001?streamid=12%23tok",
        "srt://relay.example.com:5001?streamid=12#tok",
        "srt://relay.example.com:5001?mode=caller&send_buffer_size=1048576&recv_buffer_size=1048576",
        "rtmp://[2001:db8::1]:1935/live/key",
    ],
)
async def test_accepted_destinations(api: ApiClient, uri: str) -> None:
    stream = await _stream(api)
    status, created, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
    )
    assert status == 200 and created["uri"] == uri


@pytest.mark.parametrize(
    "uri,message",
    [
        ("pipe:1", INVALID_URI["uri"][0]),
        ("concat:rtmp://a/b|file:x", INVALID_URI["uri"][0]),
        ("data:text/plain,hello", INVALID_URI["uri"][0]),
        ("-f null -", INVALID_URI["uri"][0]),
        ("subfile:,start,0,end,0,:/etc/passwd", INVALID_URI["uri"][0]),
        ("rtmp://", "uri must name a host"),
        ("rtmp://host", "rtmp uri needs an application path, e.g. rtmp://host/app/stream-key"),
        ("rtmp://host:0/app", "uri port must be a number from 1 to 65535"),
        ("rtmp://host:70000/app", "uri port must be a number from 1 to 65535"),
        ("rtmp://host:12ab/app", "uri port must be a number from 1 to 65535"),
        ("rtmp://host/app key", "uri must not contain whitespace, control or non-ASCII characters"),
        ("rtmp://host/app\nkey", "uri must not contain whitespace, control or non-ASCII characters"),
        ("rtmp://hóst/app", "uri must not contain whitespace, control or non-ASCII characters"),
        ("rtmp://-host/app", "uri host is not a valid host name or address"),
        ("rtmp://host/app#frag", "uri must not have a fragment"),
        ("srt://host", "srt uri must name a port"),
        ("srt://host:5000/path", "srt uri must not have a path"),
        ("srt://host:5000?mode=rendezvous", "srt targets support only mode=caller"),
        ("srt://host:5000?listen=1", "unsupported srt option 'listen'"),
        ("srt://host:5000?latency=abc", "srt option 'latency' must be an integer"),
        ("srt://host:5000?passphrase=short", "srt passphrase must be 10 to 79 characters"),
        ("srt://host:5000?mode=caller&mode=caller", "srt option 'mode' is given twice"),
        ("srt://host:5000?send_buffer_size=1024", "srt option 'send_buffer_size' must be from 32768 to 67108864"),
        ("rtmp://h/" + "a" * 2100, "uri is too long (maximum is 2048 characters)"),
    ],
)
async def test_refused_destinations(api: ApiClient, uri: str, message: str) -> None:
    stream = await _stream(api)
    status, answer, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream["id"]}}
    )
    assert (status, answer) == (422, {"errors": {"uri": [message]}})


async def test_patch_validates_and_keeps_the_rest(api: ApiClient) -> None:
    stream = await _stream(api)
    _, created, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": "rtmp://h/app/k", "stream_id": stream["id"], "name": "n"}}
    )
    path = f"/streaming/restreams/{created['id']}"
    for fields, errors in [
        ({"uri": "ftp://h/x"}, INVALID_URI),
        ({"uri": None}, INVALID_URI),
        ({"stream_id": 123456}, {"stream": ["must exist"]}),
        ({"active": "false"}, {"active": ["must be a boolean"]}),
    ]:
        status, answer, _ = await api.call("PATCH", path, {"restream": fields})
        assert (status, answer) == (422, {"errors": errors}), fields
    assert (await api.call("GET", path))[1] == created
    other = await _stream(api, "other")
    status, moved, _ = await api.call(
        "PATCH", path, {"restream": {"stream_id": other["id"], "uri": "srt://h:1?mode=caller"}}
    )
    assert status == 200 and moved["stream_id"] == other["id"] and moved["name"] == "n"


async def test_deleting_a_stream_deletes_its_restreams(api: ApiClient) -> None:
    stream = await _stream(api)
    _, restream, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": "rtmp://h/app/k", "stream_id": stream["id"]}}
    )
    assert (await api.call("DELETE", f"/streaming/streams/{stream['id']}"))[0] == 204
    assert (await api.call("GET", f"/streaming/restreams/{restream['id']}"))[0] == 404
