"""Every field a Gcore client sends to a stream or a restream: kept and given back as sent, Gcore's
defaults when left out, `null` as the default (Terraform), and a 422 naming the field for a setting
that would promise what the relay does not do (API.md, "Gcore fields added")."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ApiClient

GCORE_DEFAULTS: dict[str, Any] = {
    "client_entity_data": None,
    "auto_record": False,
    "dvr_enabled": False,
    "dvr_duration": 3600,
    "record_type": "origin",
    "html_overlay": False,
    "projection": "regular",
    "cdn_id": None,
    "broadcast_ids": [],
    "quality_set_id": None,
    "hls_mpegts_endlist_tag": True,
}
"""What a stream shows of each setting nobody set: Gcore's defaults, those its Terraform provider plans with."""

SENT: dict[str, Any] = {
    "client_entity_data": '{ "seq_id": "1234567890", "name": "John Doe", "iat": 1516239022 }',
    "auto_record": False,
    "dvr_enabled": False,
    "dvr_duration": 120,
    "record_type": "transcoded",
    "html_overlay": True,
    "projection": "vr360tb",
    "cdn_id": 12,
    "broadcast_ids": [7, 3, 5],
    "quality_set_id": 44,
    "hls_mpegts_endlist_tag": False,
}


def settings_of(stream: dict[str, Any]) -> dict[str, Any]:
    return {name: stream[name] for name in GCORE_DEFAULTS}


async def test_settings_left_out_read_as_gcore_defaults(api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "plain"})
    assert status == 200 and settings_of(stream) == GCORE_DEFAULTS
    assert stream["low_latency_enabled"] is True  # Gcore: deprecated, always true
    assert stream["transcoded_qualities"] == []


@pytest.mark.parametrize("wrapped", [False, True])
async def test_settings_are_kept_and_returned_as_sent(api: ApiClient, wrapped: bool) -> None:
    body = {"name": "all of them", **SENT}
    status, created, _ = await api.call("POST", "/streaming/streams", {"stream": body} if wrapped else body)
    assert status == 200 and settings_of(created) == SENT
    path = f"/streaming/streams/{created['id']}"
    assert (await api.call("GET", path))[1] == created
    listed = (await api.call("GET", "/streaming/streams"))[1]
    assert [s for s in listed if s["id"] == created["id"]] == [created]

    # PATCH changes only what is sent, the rest stays as it was sent.
    status, patched, _ = await api.call("PATCH", path, {"stream": {"projection": "vr180", "broadcast_ids": [1]}})
    assert status == 200 and settings_of(patched) == {**SENT, "projection": "vr180", "broadcast_ids": [1]}
    assert patched["token"] == created["token"] and patched["name"] == "all of them"


async def test_client_entity_data_up_to_4096_characters(api: ApiClient) -> None:
    text = "ü{}\n\t\"' " * 512  # any text, 4096 characters
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "data", "client_entity_data": text})
    assert status == 200 and stream["client_entity_data"] == text
    status, body, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"client_entity_data": text + "x"})
    assert (status, body) == (422, {"errors": {"client_entity_data": ["is too long (maximum is 4096 characters)"]}})


@pytest.mark.parametrize(
    ("field", "message"),
    [
        ("auto_record", "is not supported: the relay does not record streams"),
        ("dvr_enabled", "is not supported: the relay keeps no recording to rewind (DVR)"),
    ],
)
async def test_switching_on_recording_or_dvr_is_refused_naming_the_field(
    api: ApiClient, field: str, message: str
) -> None:
    status, body, _ = await api.call("POST", "/streaming/streams", {"name": "rec", field: True})
    assert (status, body) == (422, {"errors": {field: [message]}})
    assert (await api.call("GET", "/streaming/streams"))[1] == []  # nothing was created
    _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "rec", field: False})
    path = f"/streaming/streams/{stream['id']}"
    for patch in ({field: True}, {"stream": {field: True, "name": "renamed"}}):
        status, body, _ = await api.call("PATCH", path, patch)
        assert (status, body) == (422, {"errors": {field: [message]}})
    assert (await api.call("GET", path))[1] == stream  # nothing was changed


@pytest.mark.parametrize(
    ("fields", "errors"),
    [
        ({"dvr_duration": 29}, {"dvr_duration": ["is out of range"]}),
        ({"dvr_duration": 14401}, {"dvr_duration": ["is out of range"]}),
        ({"dvr_duration": "60"}, {"dvr_duration": ["must be an integer"]}),
        ({"record_type": "both"}, {"record_type": ["must be one of: origin or transcoded"]}),
        ({"projection": "flat"}, {"projection": ["must be one of: regular, vr360, vr180 or vr360tb"]}),
        ({"html_overlay": "true"}, {"html_overlay": ["must be a boolean"]}),
        ({"hls_mpegts_endlist_tag": 1}, {"hls_mpegts_endlist_tag": ["must be a boolean"]}),
        ({"cdn_id": "3"}, {"cdn_id": ["must be an integer"]}),
        ({"quality_set_id": 2**64}, {"quality_set_id": ["is out of range"]}),
        ({"broadcast_ids": 3}, {"broadcast_ids": ["must be an array"]}),
        ({"broadcast_ids": [1, "2"]}, {"broadcast_ids": ["must be an integer"]}),
        ({"broadcast_ids": list(range(1001))}, {"broadcast_ids": ["is too long (maximum is 1000 items)"]}),
        ({"client_entity_data": 5}, {"client_entity_data": ["must be a string"]}),
    ],
)
async def test_settings_are_validated_with_gcore_shapes(
    api: ApiClient, fields: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    status, body, _ = await api.call("POST", "/streaming/streams", {"name": "bad", **fields})
    assert (status, body) == (422, {"errors": errors})


async def test_stream_null_restores_the_default_on_create_and_update(api: ApiClient) -> None:
    nulls = {name: None for name in (*GCORE_DEFAULTS, "active", "client_user_id", "srt_passphrase", "srt_latency_ms")}
    status, created, _ = await api.call("POST", "/streaming/streams", {"name": "nulls", **nulls})
    assert status == 200 and settings_of(created) == GCORE_DEFAULTS and created["active"] is True
    assert created["client_user_id"] is None and created["srt_passphrase"] is None

    path = f"/streaming/streams/{created['id']}"
    set_all = {**SENT, "active": False, "client_user_id": 5, "srt_passphrase": "0123456789ab", "srt_latency_ms": 300}
    status, changed, _ = await api.call("PATCH", path, set_all)
    assert status == 200 and settings_of(changed) == SENT and changed["active"] is False
    # Terraform removes attributes from its configuration: flat PATCH, explicit nulls.
    status, restored, _ = await api.call("PATCH", path, nulls)
    assert status == 200 and settings_of(restored) == GCORE_DEFAULTS and restored["active"] is True
    assert (restored["client_user_id"], restored["srt_passphrase"], restored["srt_latency_ms"]) == (None, None, None)
    assert restored["name"] == "nulls" and restored["token"] == created["token"]
    # name has no default: null is refused as blank, as before.
    status, body, _ = await api.call("PATCH", path, {"name": None})
    assert (status, body) == (422, {"errors": {"name": ["can't be blank"]}})


async def test_a_null_wrapper_leaves_the_flat_fields(api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"stream": None, "name": "flat", "cdn_id": 4})
    assert status == 200 and stream["name"] == "flat" and stream["cdn_id"] == 4
    status, patched, _ = await api.call("PATCH", f"/streaming/streams/{stream['id']}", {"stream": None, "cdn_id": 5})
    assert status == 200 and patched["cdn_id"] == 5


async def _stream_id(api: ApiClient) -> int:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "src"})
    assert status == 200
    stream_id: int = stream["id"]
    return stream_id


@pytest.mark.parametrize("wrapped", [True, False])
async def test_restream_null_name_and_active_restore_the_defaults(api: ApiClient, wrapped: bool) -> None:
    def body(fields: dict[str, Any]) -> dict[str, Any]:
        return {"restream": fields} if wrapped else fields

    stream_id = await _stream_id(api)
    uri = "rtmp://a.rtmp.youtube.com/live2/key-1234"
    status, created, _ = await api.call(
        "POST", "/streaming/restreams", {"restream": {"uri": uri, "stream_id": stream_id, "name": None, "active": None}}
    )
    assert status == 200 and created["name"] == "" and created["active"] is True
    path = f"/streaming/restreams/{created['id']}"
    status, changed, _ = await api.call(
        "PATCH",
        path,
        body({"name": "YouTube", "active": False, "no_audio": True, "no_audio_mode": "silence", "tls_verify": False}),
    )
    assert status == 200 and (changed["name"], changed["active"], changed["no_audio"]) == ("YouTube", False, True)
    nulls = {"name": None, "active": None, "no_audio": None, "no_audio_mode": None, "tls_verify": None}
    status, restored, _ = await api.call("PATCH", path, body({**nulls, "client_user_id": None, "live": None}))
    assert status == 200
    assert (restored["name"], restored["active"], restored["no_audio"]) == ("", True, False)
    assert (restored["no_audio_mode"], restored["tls_verify"], restored["client_user_id"]) == ("drop", True, None)
    assert restored["uri"] == uri and restored["stream_id"] == stream_id
    # uri and stream_id have no default: null is refused, as documented.
    for fields, errors in (
        ({"uri": None}, {"uri": ["invalid uri, supported protocols are rtmp, rtmps, srt"]}),
        ({"stream_id": None}, {"stream": ["must exist"]}),
    ):
        status, answer, _ = await api.call("PATCH", path, body(fields))
        assert (status, answer) == (422, {"errors": errors}), fields
