"""The secrets this node holds in clear, for the logs' last-resort filter (`relay.logs.SecretFilter`).

Code masks secrets where it formats them (push lines and URIs in relay/push/masking.py, stream labels
in relay/ingest/gate.py); this registry lets the log handler catch what slips through (an exception
that quotes a URL, a library's message). It is fed where the secrets live, without relay/ knowing
the API: `follow` reads every stream token, SRT passphrase and destination secret from the store
when the node starts and keeps up with each write through the store's change feed; the composition
root adds the API keys the node knows in clear.

Secrets are kept by holder (a stream, a destination, an API key), so that deleting one of two
destinations with the same key keeps the key hidden. Secrets shorter than `MIN_SECRET_CHARS` are not kept: the filter
masks them only where they stand in a URL, as every URL in a log line is masked anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from relay.push.masking import MIN_SECRET_CHARS, SecretIndex, mask_text, secrets_of
from relay.store.base import Store
from relay.store.changes import Change, StreamChanged
from relay.store.models import RestreamRecord, StreamRecord


def stream_secrets(stream: StreamRecord | None) -> list[str]:
    """A stream's publish token and SRT passphrase, and the secrets of each source it pulls (`uri`)."""
    if stream is None:
        return []
    found = [s for s in (stream.token, stream.srt_passphrase) if s]
    for alternative in (stream.uri or "").split():
        found += secrets_of(alternative)
    return found


def restream_secrets(restream: RestreamRecord | None) -> list[str]:
    """Every secret of a destination URI, as written and percent-decoded (key, userinfo, passphrase...)."""
    return [] if restream is None else secrets_of(restream.uri)


Holder = tuple[str | int, ...]
"""Who holds a set of secrets: ("stream", id), ("restream", stream id, id), ("api key", name)."""


class SecretRegistry:
    """Secrets in clear, by holder; thread-safe (libsrt's thread logs too). Owns no I/O.

    A holder's secrets are replaced as a whole on each change, and a deleted stream takes its
    restreams' secrets with it (the store announces no change of their own), so what is registered
    is always what the store holds, never more.
    """

    def __init__(self) -> None:
        self._held: dict[Holder, frozenset[str]] = {}
        self._lock = threading.Lock()
        self._index: SecretIndex | None = None

    def hold(self, holder: Holder, secrets: Iterable[str | None]) -> None:
        """`holder` now holds exactly `secrets` (short ones are not kept; none at all forgets it)."""
        kept = frozenset(s for s in secrets if s and len(s) >= MIN_SECRET_CHARS)
        with self._lock:
            if self._held.get(holder, frozenset()) == kept:
                return
            if kept:
                self._held[holder] = kept
            else:
                self._held.pop(holder, None)
            self._index = None

    def release(self, matches: Callable[[Holder], bool]) -> None:
        """Forget every holder `matches` accepts."""
        with self._lock:
            gone = [holder for holder in self._held if matches(holder)]
            for holder in gone:
                del self._held[holder]
            if gone:
                self._index = None

    def __contains__(self, secret: object) -> bool:
        with self._lock:
            return any(secret in secrets for secrets in self._held.values())

    def mask(self, text: str) -> str:
        """`text` with every registered secret masked where it stands as a word, and every URL masked."""
        with self._lock:
            index = self._index
            if index is None:
                # Rebuilt on the first line after a change: writes are rare, log lines are many.
                index = self._index = SecretIndex(s for secrets in self._held.values() for s in secrets)
        return mask_text(text, index)

    async def follow(self, store: Store) -> Callable[[], None]:
        """Register every secret the store holds and keep up with its writes; returns the unsubscribe call.

        Subscribe before the engine does, so that a destination is registered before its push starts.
        """
        unsubscribe = store.changes.subscribe(self._on_change)
        for stream in await store.all_streams():
            self.hold(("stream", stream.id), stream_secrets(stream))
        for restream in await store.all_restreams():
            self.hold(("restream", restream.stream_id, restream.id), restream_secrets(restream))
        return unsubscribe

    async def _on_change(self, change: Change) -> None:
        if isinstance(change, StreamChanged):
            stream_id = change.stream_id
            if change.after is None:
                self.release(lambda h: h[:2] == ("stream", stream_id) or h[:2] == ("restream", stream_id))
            else:
                self.hold(("stream", stream_id), stream_secrets(change.after))
            return
        if change.before is not None:
            self.hold(("restream", change.before.stream_id, change.restream_id), ())
        if change.after is not None:
            self.hold(("restream", change.after.stream_id, change.restream_id), restream_secrets(change.after))
