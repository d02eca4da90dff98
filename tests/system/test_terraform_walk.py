"""What Gcore's Terraform provider does to streams and restreams, as plain HTTP against the real relay.

The provider (terraform-provider-gcore, resources gcore_streaming_stream and gcore_streaming_restream)
creates with every planned attribute, its defaults included; updates with flat PATCH bodies holding
only what changed, and an explicit null for an attribute removed from the configuration; reads back
after each apply and on every refresh. Any attribute read back different from what was planned is
"inconsistent result after apply" or a perpetual diff: every one is compared here.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.support import RelayProcess

pytestmark = pytest.mark.integration

PLANNED_DEFAULTS: dict[str, Any] = {
    "active": False,  # the provider's default (Gcore's), sent explicitly
    "auto_record": False,
    "dvr_duration": 3600,
    "dvr_enabled": False,
    "hls_mpegts_endlist_tag": True,
    "html_overlay": False,
    "low_latency_enabled": True,
    "projection": "regular",
    "record_type": "origin",
}
"""The provider's schema defaults for computed_optional attributes: planned, and sent, when not configured."""


def attributes_of(body: dict[str, Any], planned: dict[str, Any]) -> dict[str, Any]:
    return {name: body.get(name) for name in planned}


def test_terraform_stream_create_update_nulls_and_no_drift(shared_relay: RelayProcess) -> None:
    relay = shared_relay
    configured = {
        "name": "terraform",
        "client_entity_data": '{"owner": "ops"}',
        "client_user_id": 1001,
        "cdn_id": 17,
        "quality_set_id": 5,
        "broadcast_ids": [10, 11],
        "projection": "vr360",
        "dvr_duration": 300,
    }
    planned = {**PLANNED_DEFAULTS, **configured}
    created = relay.api("POST", "/streaming/streams", {**planned, "pull": False})
    assert created.status == 200
    stream = created.body
    assert attributes_of(stream, planned) == planned  # no "inconsistent result after apply"
    assert stream.get("pull", False) is False  # a push stream (the field itself comes with pulled sources)
    path = f"/streaming/streams/{stream['id']}"
    assert relay.api("GET", path).body == stream  # refresh: nothing drifts

    # The configuration loses client_entity_data, cdn_id and projection, and turns the stream on: the
    # provider sends null for the removed optional attributes, the default for the removed computed one.
    patch = {"client_entity_data": None, "cdn_id": None, "projection": "regular", "active": True}
    planned = {**planned, **patch}
    first = relay.api("PATCH", path, patch)
    assert first.status == 200 and attributes_of(first.body, planned) == planned
    assert first.body["token"] == stream["token"] and first.body["name"] == "terraform"
    # API.md: a null restores the default for the computed attributes too.
    nulls = {"dvr_duration": None, "broadcast_ids": None, "quality_set_id": None, "html_overlay": None}
    planned = {**planned, "dvr_duration": 3600, "broadcast_ids": [], "quality_set_id": None, "html_overlay": False}
    second = relay.api("PATCH", path, nulls)
    assert second.status == 200 and attributes_of(second.body, planned) == planned
    again = relay.api("PATCH", path, nulls)  # the same apply once more changes nothing
    assert again.status == 200 and again.body == second.body
    assert relay.api("GET", path).body == second.body

    assert relay.api("DELETE", path).status == 204
    assert relay.api("GET", path).status == 404  # the provider then drops it from its state


def test_terraform_restream_nulls_restore_the_defaults(shared_relay: RelayProcess) -> None:
    relay = shared_relay
    stream = relay.api("POST", "/streaming/streams", {"name": "source"}).body
    uri = "srt://ingest.example.com:5001?mode=caller&latency=2000000&send_buffer_size=1048576&recv_buffer_size=1048576"
    configured = {"name": "SRT box", "uri": uri, "stream_id": stream["id"], "active": False, "client_user_id": 9}
    created = relay.api("POST", "/streaming/restreams", {"restream": {**configured, "live": None}})
    assert created.status == 200 and attributes_of(created.body, configured) == configured
    path = f"/streaming/restreams/{created.body['id']}"
    assert relay.api("GET", path).body == created.body

    # name, active and client_user_id removed from the configuration: explicit nulls, wrapped...
    removed = {"name": None, "active": None, "client_user_id": None}
    expected = {**configured, "name": "", "active": True, "client_user_id": None}
    first = relay.api("PATCH", path, {"restream": removed})
    assert first.status == 200 and attributes_of(first.body, expected) == expected
    # ... and flat, as some of Gcore's pages send it; the same apply again changes nothing.
    again = relay.api("PATCH", path, removed)
    assert again.status == 200 and attributes_of(again.body, expected) == expected
    assert relay.api("GET", path).body == again.body

    assert relay.api("DELETE", path).status == 204
    assert relay.api("GET", path).status == 404
    assert relay.api("DELETE", f"/streaming/streams/{stream['id']}").status == 204
