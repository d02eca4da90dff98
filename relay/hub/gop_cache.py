"""The GOP cache: every chunk since the last video keyframe, so a late joiner starts on a keyframe."""

from __future__ import annotations

from collections import deque

from relay.hub.subscriber import Chunk


class GopCache:
    """Owns the chunks of the current group of pictures, bounded in bytes.

    With video, the cache restarts at each keyframe; a GOP larger than the bound is dropped whole (a
    joiner then waits for the next keyframe rather than getting a GOP without its start). Without video
    (audio-only streams) every chunk is a sync point, so the cache is a rolling window of recent chunks.
    """

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._chunks: deque[Chunk] = deque()
        self._bytes = 0
        self._waiting_for_sync = False

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._chunks)

    def chunks(self) -> list[Chunk]:
        return list(self._chunks)

    def clear(self) -> None:
        self._chunks.clear()
        self._bytes = 0
        self._waiting_for_sync = False

    def add(self, chunk: Chunk, *, has_video: bool) -> None:
        if has_video:
            if chunk.sync:
                self.clear()
            elif self._waiting_for_sync or not self._chunks:
                # Nothing before the first keyframe is useful to a joiner.
                return
            self._append(chunk)
            if self._bytes > self._max_bytes:
                self.clear()
                self._waiting_for_sync = True
            return
        self._append(chunk)
        while self._bytes > self._max_bytes and self._chunks:
            self._bytes -= len(self._chunks.popleft().data)

    def _append(self, chunk: Chunk) -> None:
        self._chunks.append(chunk)
        self._bytes += len(chunk.data)
