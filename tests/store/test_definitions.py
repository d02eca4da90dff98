"""What every store keeps the same way (SQLite and PostgreSQL): ids never reused, deletes cascading,
Gcore fields kept as sent across a restart, token resets announced, scoping by client, pages."""

from __future__ import annotations

from dataclasses import replace

import pytest

from relay.store.base import Store, StoreError
from relay.store.changes import Change, StreamChanged
from relay.store.models import GcoreSettings
from tests.store.conftest import Stores


async def test_ids_are_never_reused_and_cascade_deletes(store: Store) -> None:
    try:
        first = await store.create_stream(1, {"name": "a"})
        restream = await store.create_restream(1, {"stream_id": first.id, "uri": "rtmp://h/app/k"})
        assert await store.delete_stream(first.id, 1)
        assert await store.get_restream(restream.id) is None
        second = await store.create_stream(1, {"name": "b"})
        assert second.id > first.id  # a deleted stream's id (and so its push URL) never comes back
        assert second.token != first.token
        with pytest.raises(StoreError):
            await store.create_restream(1, {"stream_id": first.id, "uri": "rtmp://h/app/k"})
        assert not await store.delete_stream(second.id, 2)  # another client's: untouched
        assert await store.get_stream(second.id, 1) is not None
    finally:
        await store.close()


async def test_gcore_fields_are_kept_as_sent_across_a_restart(stores: Stores) -> None:
    sent = {
        "name": "show",
        "client_entity_data": '{"seq_id": "1234567890", "name": "John Doe"}',
        "dvr_duration": 120,
        "record_type": "transcoded",
        "html_overlay": True,
        "projection": "vr180",
        "cdn_id": 77,
        "broadcast_ids": [3, 1, 2],
        "quality_set_id": 9,
        "hls_mpegts_endlist_tag": False,
    }
    store = await stores.open()
    try:
        created = await store.create_stream(1, sent)
        untouched = await store.create_stream(1, {"name": "defaults"})
        changed = await store.update_stream(created.id, 1, {"projection": "regular", "broadcast_ids": []})
        assert changed is not None
    finally:
        await store.close()
    store = await stores.open()
    try:
        stream = await store.get_stream(created.id, 1)
        assert stream is not None and stream.client_entity_data == sent["client_entity_data"]
        assert stream.gcore_settings == GcoreSettings(
            dvr_duration=120,
            record_type="transcoded",
            html_overlay=True,
            projection="regular",
            cdn_id=77,
            broadcast_ids=(),
            quality_set_id=9,
            hls_mpegts_endlist_tag=False,
        )
        assert (await store.get_stream(untouched.id, 1)) == untouched
        assert untouched.gcore_settings == GcoreSettings() and untouched.client_entity_data is None
    finally:
        await store.close()


async def test_a_token_reset_is_a_new_token_announced_as_a_change(store: Store) -> None:
    seen: list[Change] = []

    async def listener(change: Change) -> None:
        seen.append(change)

    try:
        stream = await store.create_stream(1, {"name": "show", "srt_passphrase": "0123456789ab"})
        store.changes.subscribe(listener)
        assert await store.reset_stream_token(stream.id, 2) is None  # another client's: untouched
        assert await store.reset_stream_token(10**9, 1) is None
        reset = await store.reset_stream_token(stream.id, 1)
        assert reset is not None and reset.token != stream.token and len(reset.token) == len(stream.token)
        assert reset == replace(stream, token=reset.token)  # nothing else changed
        assert seen == [StreamChanged(stream.id, stream, reset)]
        assert store.get_stream_blocking(stream.id) == reset  # what the SRT handshake reads
    finally:
        await store.close()


async def test_reads_are_scoped_by_client_and_pages_are_newest_first(store: Store) -> None:
    mine = [await store.create_stream(1, {"name": f"s{n}"}) for n in range(5)]
    theirs = await store.create_stream(2, {"name": "theirs", "active": False})
    assert await store.get_stream(theirs.id, 1) is None and await store.get_stream(theirs.id, 2) == theirs
    assert await store.get_stream(theirs.id) == theirs
    assert await store.update_stream(theirs.id, 1, {"name": "taken"}) is None
    assert await store.reset_stream_token(theirs.id, 1) is None

    page = await store.list_streams(1, 1, 2)
    assert page.total == 5 and [s.name for s in page.items] == ["s3", "s2"]
    assert (await store.list_streams(1, 10, 2)).items == [] and (await store.list_streams(3, 0, 10)).total == 0

    shown = await store.create_restream(1, {"stream_id": mine[0].id, "uri": "rtmp://a.example.com/live/1"})
    paused = await store.create_restream(
        1, {"stream_id": mine[0].id, "uri": "srt://b.example.com:9000", "active": False, "no_audio": True}
    )
    hidden = await store.create_restream(2, {"stream_id": theirs.id, "uri": "rtmp://c.example.com/live/3"})
    assert paused.no_audio and not paused.active and paused.no_audio_mode == "drop" and paused.tls_verify
    assert await store.get_restream(hidden.id, 1) is None and await store.get_restream(hidden.id) == hidden
    assert await store.update_restream(hidden.id, 1, {"name": "taken"}) is None
    assert not await store.delete_restream(hidden.id, 1)
    restreams = await store.list_restreams(1, 0, 10)
    assert restreams.total == 2 and restreams.items == [paused, shown]
    # Active restreams of active streams only: `theirs` is inactive, `paused` is off.
    assert await store.active_restreams() == [shown]
    assert await store.active_restreams(mine[0].id) == [shown] and await store.active_restreams(theirs.id) == []
    assert await store.restream_count(mine[0].id) == 2 and await store.restream_count(mine[1].id) == 0
    assert await store.all_restreams() == [shown, paused, hidden]
    assert await store.all_streams() == [*mine, theirs]
    assert store.get_stream_blocking(mine[2].id) == mine[2] and store.get_stream_blocking(10**9) is None
