"""The backup input as the API shows it: Gcore's `backup_push_url`, `backup_push_url_srt`, `backup_live`,
`started_at_backup`, our `backup_push_url_rtmps` and `input`, the `stream.input` event and the
`relay_stream_input*` series, with publishers opened on the engine in this process (no media process)."""

from __future__ import annotations

from typing import Any

from api.bodies import event_body
from api.server import Server
from relay.engine.events import EngineEvent
from relay.ingest.gate import EndReason, IngestSink, PublishRequest
from relay.media.packets import ContainerFormat
from tests.conftest import ApiClient
from tests.engine.test_engine import Publisher
from tests.hub.helpers import config_packets, feed, video


async def publish(service: Server, key: str) -> IngestSink:
    request = PublishRequest(stream_key=key, container=ContainerFormat.FLV, publisher=Publisher())
    return await service.engine.open_publish(request)


async def get_stream(api: ApiClient, stream_id: int) -> dict[str, Any]:
    status, body, _ = await api.call("GET", f"/streaming/streams/{stream_id}")
    assert status == 200 and isinstance(body, dict)
    return body


async def metrics(api: ApiClient) -> str:
    async with api.session.get(f"{api.base_url}/metrics", headers={"Authorization": f"APIKey {api.key}"}) as response:
        assert response.status == 200
        return await response.text()


async def test_backup_urls_follow_gcore_s_form(api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "show"})
    assert status == 200 and isinstance(stream, dict)
    ident, token = stream["id"], stream["token"]
    assert stream["backup_push_url"] == stream["push_url"].replace(f"/in/{ident}?", f"/in/{ident}b?")
    assert stream["backup_push_url"].endswith(f"/in/{ident}b?{token}")
    assert stream["backup_push_url_srt"].endswith(f"?streamid={ident}b#{token}")
    assert stream["backup_push_url_rtmps"] is None or stream["backup_push_url_rtmps"].startswith("rtmps://")
    assert (stream["live"], stream["backup_live"], stream["input"]) == (False, False, None)
    assert stream["started_at_backup"] is None and stream["finished_at_backup"] is None


async def test_the_fields_event_and_series_show_which_input_feeds(service: Server, api: ApiClient) -> None:
    _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "show"})
    assert isinstance(stream, dict)
    events: list[EngineEvent] = []
    service.engine.subscribe(events.append)
    main = await publish(service, f"{stream['id']}?{stream['token']}")
    feed(main, [*config_packets(), video(0, key=True)])
    backup = await publish(service, f"{stream['id']}b?{stream['token']}")
    feed(backup, [*config_packets(), video(0, key=True)])
    body = await get_stream(api, stream["id"])
    assert (body["live"], body["backup_live"], body["input"]) == (True, True, "main")
    assert body["started_at_primary"] is not None and body["started_at_backup"] is not None

    main.close(EndReason.DROP)
    backup.write(video(1000, key=True))  # the backup's next keyframe: it feeds from here
    body = await get_stream(api, stream["id"])
    assert (body["live"], body["backup_live"], body["input"]) == (True, True, "backup")
    assert body["finished_at_primary"] is not None and body["stream_source_type"] == "rtmp"
    switched = [event_body(e) for e in events if event_body(e)[0] == "stream.input"]
    assert switched == [
        (
            "stream.input",
            {"client_id": 1, "stream_id": stream["id"], "input": "backup", "reason": "dropped", "restarted": False},
        )
    ]
    labels = f'client_id="1",name="show",stream_id="{stream["id"]}"'
    series = {line for line in (await metrics(api)).splitlines() if line.startswith("relay_stream_")}
    assert {
        f'relay_stream_input{{client_id="1",input="backup",name="show",stream_id="{stream["id"]}"}} 1.0',
        f'relay_stream_input{{client_id="1",input="main",name="show",stream_id="{stream["id"]}"}} 0.0',
        f"relay_stream_input_switches_total{{{labels}}} 1.0",
        f"relay_stream_backup_live{{{labels}}} 1.0",
    } <= series, sorted(series)

    backup.close(EndReason.UNPUBLISH)
    body = await get_stream(api, stream["id"])
    assert (body["live"], body["backup_live"], body["input"]) == (False, False, None)
    assert body["finished_at_backup"] is not None
    assert [event_body(e)[1]["backup_live"] for e in events if event_body(e)[0] == "stream.live"][-1] is False
