"""The store's change feed: every durable stream and restream write is announced once, before and after."""

from __future__ import annotations

from relay.store.base import Store
from relay.store.changes import Change, RestreamChanged, StreamChanged


async def test_every_write_is_announced_with_before_and_after(store: Store) -> None:
    seen: list[Change] = []

    async def listener(change: Change) -> None:
        seen.append(change)

    unsubscribe = store.changes.subscribe(listener)
    try:
        stream = await store.create_stream(1, {"name": "show"})
        renamed = await store.update_stream(stream.id, 1, {"name": "renamed"})
        restream = await store.create_restream(1, {"stream_id": stream.id, "uri": "rtmp://127.0.0.1:1/live/k"})
        paused = await store.update_restream(restream.id, 1, {"active": False})
        assert await store.update_stream(stream.id, 2, {"name": "not yours"}) is None  # nothing written
        assert not await store.delete_restream(restream.id, 2)
        assert await store.delete_restream(restream.id, 1)
        assert await store.delete_stream(stream.id, 1)
        assert not await store.delete_stream(stream.id, 1)
        assert seen == [
            StreamChanged(stream.id, None, stream),
            StreamChanged(stream.id, stream, renamed),
            RestreamChanged(restream.id, None, restream),
            RestreamChanged(restream.id, restream, paused),
            RestreamChanged(restream.id, paused, None),
            StreamChanged(stream.id, renamed, None),
        ]
        unsubscribe()
        await store.create_stream(1, {"name": "unheard"})
        assert len(seen) == 6
    finally:
        await store.close()


async def test_a_failing_listener_neither_undoes_the_write_nor_silences_the_others(store: Store) -> None:
    heard: list[Change] = []

    async def broken(change: Change) -> None:
        raise RuntimeError("observer bug")

    async def listener(change: Change) -> None:
        heard.append(change)

    store.changes.subscribe(broken)
    store.changes.subscribe(listener)
    try:
        stream = await store.create_stream(1, {"name": "show"})
        assert await store.get_stream(stream.id) == stream
        assert heard == [StreamChanged(stream.id, None, stream)]
    finally:
        await store.close()
