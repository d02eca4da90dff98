"""The official `gcore` Python SDK, pointed at the relay, drives streams and restreams end to end: every
field it sends, the token reset, the documented errors."""

from __future__ import annotations

import gcore
import pytest
from gcore.types.streaming import Stream

from tests.support import ADMIN_KEY, RelayProcess

pytestmark = pytest.mark.integration


@pytest.fixture
def client(shared_relay: RelayProcess) -> gcore.Gcore:
    return gcore.Gcore(api_key=ADMIN_KEY, base_url=shared_relay.base_url, max_retries=0, timeout=10)


def test_sdk_streams_and_restreams_lifecycle(client: gcore.Gcore) -> None:
    stream = client.streaming.streams.create(name="from the SDK")
    assert stream.id and stream.name == "from the SDK" and stream.token
    assert stream.push_url and stream.push_url.endswith(f"/in/{stream.id}?{stream.token}")
    assert stream.push_url_srt and f"streamid={stream.id}#" in stream.push_url_srt
    assert stream.live is False

    got = client.streaming.streams.get(stream.id)
    assert got.name == "from the SDK" and got.token == stream.token
    updated = client.streaming.streams.update(stream.id, stream={"name": "renamed", "active": True})
    assert updated.name == "renamed"
    assert stream.id in [s.id for s in client.streaming.streams.list()]

    restream = client.streaming.restreams.create(
        restream={
            "name": "YouTube",
            "uri": "rtmp://a.rtmp.youtube.com/live2/abcd-efgh",
            "stream_id": stream.id,
            "active": True,
            "client_user_id": 7,
        }
    )
    assert restream.id and restream.stream_id == stream.id and (restream.uri or "").endswith("/abcd-efgh")
    assert restream.active is True and restream.live is False and restream.client_user_id == 7
    assert restream.no_audio is False and restream.source == "original"
    fetched = client.streaming.restreams.get(restream.id)
    assert fetched.name == "YouTube"
    updated_r = client.streaming.restreams.update(restream.id, restream={"active": False})
    assert updated_r.active is False and updated_r.uri == restream.uri
    assert restream.id in [r.id for r in client.streaming.restreams.list()]

    client.streaming.restreams.delete(restream.id)
    with pytest.raises(gcore.NotFoundError):
        client.streaming.restreams.get(restream.id)
    client.streaming.streams.delete(stream.id)
    with pytest.raises(gcore.NotFoundError):
        client.streaming.streams.get(stream.id)


def test_sdk_sees_documented_422_errors(client: gcore.Gcore) -> None:
    stream = client.streaming.streams.create(name="errors")
    assert stream.id is not None
    with pytest.raises(gcore.UnprocessableEntityError) as missing:
        client.streaming.restreams.create(restream={"uri": "rtmp://h/app/k", "stream_id": 10**9})
    assert missing.value.body == {"errors": {"stream": ["must exist"]}}
    with pytest.raises(gcore.UnprocessableEntityError) as bad_uri:
        client.streaming.restreams.create(restream={"uri": "http://h/app/k", "stream_id": stream.id})
    assert bad_uri.value.body == {"errors": {"uri": ["invalid uri, supported protocols are rtmp, rtmps, srt"]}}
    with pytest.raises(gcore.UnprocessableEntityError) as blank:
        client.streaming.streams.create(name="")
    assert blank.value.body == {"errors": {"name": ["can't be blank"]}}


def test_sdk_with_a_wrong_key_is_refused(shared_relay: RelayProcess) -> None:
    wrong = gcore.Gcore(api_key="1$not-a-key", base_url=shared_relay.base_url, max_retries=0, timeout=10)
    with pytest.raises(gcore.AuthenticationError) as refused:
        wrong.streaming.streams.list()
    assert refused.value.body == {"errors": {"auth": ["invalid api key"]}}


def test_sdk_walk_with_every_stream_setting_and_a_token_reset(client: gcore.Gcore) -> None:
    entity = '{ "seq_id": "1234567890", "name": "John Doe", "iat": 1516239022 }'
    stream = client.streaming.streams.create(
        name="settings",
        active=True,
        auto_record=False,
        dvr_enabled=False,
        dvr_duration=600,
        record_type="origin",
        html_overlay=True,
        projection="vr360",
        cdn_id=31,
        broadcast_ids=[4, 2],
        quality_set_id=8,
        hls_mpegts_endlist_tag=False,
        client_entity_data=entity,
        client_user_id=1001,
        srt_passphrase="0123456789abcdef",
    )
    assert stream.id is not None and stream.token
    written = {
        "auto_record": False,
        "dvr_enabled": False,
        "dvr_duration": 600,
        "record_type": "origin",
        "html_overlay": True,
        "projection": "vr360",
        "cdn_id": 31,
        "broadcast_ids": [4, 2],
        "quality_set_id": 8,
        "hls_mpegts_endlist_tag": False,
        "client_entity_data": entity,
        "client_user_id": 1001,
        "srt_passphrase": "0123456789abcdef",
    }
    for read in (stream, client.streaming.streams.get(stream.id)):
        assert {name: getattr(read, name) for name in written} == written
    listed = [s for s in client.streaming.streams.list() if s.id == stream.id]
    assert len(listed) == 1 and listed[0].projection == "vr360" and listed[0].broadcast_ids == [4, 2]

    updated = client.streaming.streams.update(
        stream.id, stream={"name": "settings", "projection": "vr180", "client_entity_data": "plain text"}
    )
    assert updated.projection == "vr180" and updated.client_entity_data == "plain text"
    assert updated.cdn_id == 31 and updated.html_overlay is True and updated.token == stream.token

    # Switching on DVR is refused with a 422 the SDK does not retry, naming the field.
    with pytest.raises(gcore.UnprocessableEntityError) as dvr:
        client.streaming.streams.update(stream.id, stream={"name": "settings", "dvr_enabled": True})
    assert dvr.value.body == {
        "errors": {"dvr_enabled": ["is not supported: the relay keeps no recording to rewind (DVR)"]}
    }
    with pytest.raises(gcore.UnprocessableEntityError) as record:
        client.streaming.streams.create(name="rec", auto_record=True)
    assert record.value.body == {"errors": {"auto_record": ["is not supported: the relay does not record streams"]}}

    # The SDK has no method for Gcore's reset_push_token: its raw request facility calls it.
    reset = client.post(f"/streaming/streams/{stream.id}/reset_push_token", cast_to=Stream)
    assert reset.id == stream.id and reset.token and reset.token != stream.token
    assert reset.push_url and reset.push_url.endswith(f"/in/{stream.id}?{reset.token}")
    assert reset.push_url_srt and reset.push_url_srt.endswith(f"streamid={stream.id}#{reset.token}")
    assert client.streaming.streams.get(stream.id).token == reset.token
    assert reset.projection == "vr180" and reset.client_entity_data == "plain text"
    with pytest.raises(gcore.NotFoundError):
        client.post("/streaming/streams/999999/reset_push_token", cast_to=Stream)

    # A restream to an SRT destination with Gcore's common buffer options.
    uri = "srt://srt.example.com:5001?mode=caller&latency=2000000&send_buffer_size=1048576&recv_buffer_size=1048576"
    restream = client.streaming.restreams.create(restream={"name": "SRT box", "uri": uri, "stream_id": stream.id})
    assert restream.uri == uri and restream.active is True
    assert client.streaming.restreams.get(restream.id or 0).uri == uri
    assert [r.uri for r in client.streaming.restreams.list() if r.id == restream.id] == [uri]
    paused = client.streaming.restreams.update(restream.id or 0, restream={"active": False, "name": "paused"})
    assert paused.active is False and paused.name == "paused" and paused.uri == uri
    client.streaming.restreams.delete(restream.id or 0)
    with pytest.raises(gcore.NotFoundError):
        client.streaming.restreams.get(restream.id or 0)
    client.streaming.streams.delete(stream.id)
    with pytest.raises(gcore.NotFoundError):
        client.post(f"/streaming/streams/{stream.id}/reset_push_token", cast_to=Stream)
