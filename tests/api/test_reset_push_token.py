"""POST /streaming/streams/{id}/reset_push_token (Gcore): a new token, the stream as GET shows it, 404
for a stream the caller does not own. What it does to live publishers: tests/system/test_reset_push_token.py."""

from __future__ import annotations

from api.errors import NOT_FOUND_MESSAGE
from api.server import Server
from tests.conftest import ApiClient

NOT_FOUND = {"status": 404, "error": NOT_FOUND_MESSAGE}


async def test_reset_gives_a_new_token_and_the_stream_as_get_shows_it(api: ApiClient) -> None:
    _, stream, _ = await api.call(
        "POST", "/streaming/streams", {"name": "show", "srt_passphrase": "0123456789ab", "cdn_id": 3}
    )
    path = f"/streaming/streams/{stream['id']}"
    status, reset, _ = await api.call("POST", f"{path}/reset_push_token")
    assert status == 200
    token = reset["token"]
    assert token != stream["token"] and len(token) == len(stream["token"])
    assert token.replace("-", "").replace("_", "").isalnum()  # made as at creation: URL-safe
    assert reset["push_url"] == stream["push_url"].replace(stream["token"], token)
    assert reset["push_url_srt"] == stream["push_url_srt"].replace(stream["token"], token)
    assert (await api.call("GET", path))[1] == reset
    for url in ("backup_push_url", "backup_push_url_srt"):  # the backup input's keys carry the token too
        assert reset[url] == stream[url].replace(stream["token"], token)
    urls = (
        "push_url",
        "push_url_srt",
        "push_url_rtmps",
        "backup_push_url",
        "backup_push_url_srt",
        "backup_push_url_rtmps",
    )
    unchanged = {k: v for k, v in stream.items() if k != "token" and k not in urls}
    assert {k: v for k, v in reset.items() if k in unchanged} == unchanged

    status, again, _ = await api.call("POST", f"{path}/reset_push_token", {"ignored": True})
    assert status == 200 and again["token"] not in (token, stream["token"])


async def test_reset_of_a_missing_or_another_clients_stream_is_404(service: Server, api: ApiClient) -> None:
    _, stream, _ = await api.call("POST", "/streaming/streams", {"name": "A's"})
    key_b, _ = await service.store.create_api_key(2, "client B")
    b = api.as_key(key_b)
    for client, path in (
        (b, f"/streaming/streams/{stream['id']}/reset_push_token"),
        (api, "/streaming/streams/987654/reset_push_token"),
        (api, "/streaming/streams/abc/reset_push_token"),
    ):
        assert (await client.call("POST", path))[:2] == (404, NOT_FOUND), path
    assert (await api.call("GET", f"/streaming/streams/{stream['id']}"))[1]["token"] == stream["token"]
    status, _, _ = await api.as_key(None).call("POST", f"/streaming/streams/{stream['id']}/reset_push_token")
    assert status == 401
