"""Restreams created and deleted by the thousand leave nothing behind in the engine: the soak's API churn
found an entry per restream ever deleted in the engine's push states and the push plan's clients."""

from __future__ import annotations

from api.server import Server
from tests.conftest import ApiClient


async def test_deleted_restreams_are_forgotten(service: Server, api: ApiClient) -> None:
    status, stream, _ = await api.call("POST", "/streaming/streams", {"name": "spare"})
    assert status == 200
    engine = service.engine
    for n in range(30):
        body = {"restream": {"name": f"r{n}", "stream_id": stream["id"], "uri": f"rtmp://198.51.100.7/live/{n}"}}
        status, restream, _ = await api.call("POST", "/streaming/restreams", body)
        assert status == 200
        status, _, _ = await api.call("PATCH", f"/streaming/restreams/{restream['id']}", {"restream": {"name": "x"}})
        assert status == 200
        assert (await api.call("DELETE", f"/streaming/restreams/{restream['id']}"))[0] == 204
    assert engine._push_states == {}
    assert engine.pushes._clients == {}
