"""The official `gcore` Python SDK, pointed at the relay, drives streams and restreams end to end."""

from __future__ import annotations

import gcore
import pytest

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
