"""The secret registry follows what a real SQLite store holds: loaded at start, kept up with every write."""

from __future__ import annotations

from pathlib import Path

from relay.secrets import SecretRegistry
from relay.store.sqlite import SqliteStore


async def test_follows_every_secret_the_store_holds(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.sqlite3")
    try:
        old = await store.create_stream(1, {"name": "before start", "srt_passphrase": "old-passphrase-1"})
        await store.create_restream(1, {"stream_id": old.id, "uri": "rtmp://h/live2/old-dest-key/"})
        secrets = SecretRegistry()
        unsubscribe = await secrets.follow(store)
        for known in (old.token, "old-passphrase-1", "old-dest-key"):
            assert known in secrets

        new = await store.create_stream(2, {"name": "after start"})
        first = await store.create_restream(2, {"stream_id": new.id, "uri": "srt://h:9000?passphrase=shared-pass-1"})
        second = await store.create_restream(2, {"stream_id": new.id, "uri": "srt://h:9001?passphrase=shared-pass-1"})
        assert new.token in secrets and "shared-pass-1" in secrets

        await store.update_restream(first.id, 2, {"uri": "rtmp://h/app/replaced-key"})
        assert "replaced-key" in secrets and "shared-pass-1" in secrets  # the second still holds it
        await store.delete_restream(second.id, 2)
        assert "shared-pass-1" not in secrets

        await store.update_stream(old.id, 1, {"srt_passphrase": None})
        assert "old-passphrase-1" not in secrets and old.token in secrets
        reset = await store.reset_stream_token(old.id, 1)  # a new token is masked from its first log line
        assert reset is not None and reset.token in secrets
        await store.delete_stream(new.id, 2)  # its restreams go with it, without a change of their own
        assert new.token not in secrets and "replaced-key" not in secrets
        assert "old-dest-key" in secrets and reset.token in secrets

        unsubscribe()
        late = await store.create_stream(1, {"name": "unfollowed"})
        assert late.token not in secrets
    finally:
        await store.close()


async def test_a_pulled_streams_source_secrets_are_held_while_it_has_them(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "relay.sqlite3")
    try:
        secrets = SecretRegistry()
        unsubscribe = await secrets.follow(store)
        uri = "rtmp://a.example.com/live/source-key-1 rtsp://cam:camera-pass-1@b.example.com/s"
        stream = await store.create_stream(1, {"name": "pulled", "pull": True, "uri": uri})
        assert "source-key-1" in secrets and "camera-pass-1" in secrets
        masked = secrets.mask("ffmpeg said: source-key-1 and camera-pass-1")
        assert "source-key-1" not in masked and "camera-pass-1" not in masked
        await store.update_stream(stream.id, 1, {"uri": "srt://c.example.com:9000?passphrase=srt-pass-123"})
        assert "source-key-1" not in secrets and "srt-pass-123" in secrets
        unsubscribe()
    finally:
        await store.close()


def test_masks_words_and_urls_never_inside_words() -> None:
    secrets = SecretRegistry()
    secrets.hold(("restream", 1, 1), ["k", "ab", "s3cr3t-key"])
    assert "k" not in secrets  # too short to mask as a word: masked only where it stands in a URL
    line = "Broken pipe on rtmp://h/app/k/ (s3cr3t-key, s3cr3t-keys, ab)"
    assert secrets.mask(line) == "Broken pipe on rtmp://h/app/***/ (***, s3cr3t-keys, ab)"
    secrets.hold(("restream", 1, 1), [])
    assert secrets.mask("s3cr3t-key") == "s3cr3t-key"


def test_many_secrets_stay_cheap() -> None:
    secrets = SecretRegistry()
    for n in range(20_000):
        secrets.hold(("stream", n), [f"token-{n:08d}-padding"])
    line = "stream 7 refused: token-00001234-padding " * 5
    assert secrets.mask(line) == "stream 7 refused: *** " * 5
