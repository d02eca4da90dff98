"""Which streams the relay pulls: one `PullRunner` per active stream with `pull: true` and a `uri`.

Kept in line with the definitions the way pushes are: each stream change touches that stream's runner
only (started, stopped, or replaced when its `uri` changed), and `replace_all` is the periodic full
pass. A runner being stopped is reaped in the background (its ffmpeg may take a moment to end) and
awaited by `close`, so no write to the store waits for a process.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from relay.ingest.gate import EndReason
from relay.policy import DestinationPolicy
from relay.pull.process import PullProcess
from relay.pull.runner import ProcessFactory, PullOpener, PullRunner, PullSettings, PullStatus
from relay.pull.sources import InvalidSource, parse_sources
from relay.store.models import StreamRecord

log = logging.getLogger("relay.engine.pulls")


def pulled(stream: StreamRecord | None) -> bool:
    """Is this stream fed by the relay's own pull?"""
    return stream is not None and stream.active and stream.pull and bool(stream.uri)


class PullPlan:
    """Owns the running pulls by stream id and the ones still being stopped."""

    def __init__(
        self,
        opener: PullOpener,
        policy: DestinationPolicy,
        ffmpeg_path: str,
        settings: PullSettings,
        *,
        process_factory: ProcessFactory = PullProcess,
    ) -> None:
        self._opener = opener
        self._policy = policy
        self._ffmpeg_path = ffmpeg_path
        self._settings = settings
        self._factory = process_factory
        self._runners: dict[int, PullRunner] = {}
        self._retiring: set[asyncio.Task[None]] = set()

    def status(self, stream_id: int) -> PullStatus | None:
        runner = self._runners.get(stream_id)
        return runner.status if runner is not None else None

    def set(self, stream_id: int, stream: StreamRecord | None, *, reason: EndReason = EndReason.UNPUBLISH) -> None:
        """Bring stream `stream_id`'s pull in line with its record (None: deleted).

        A pull no longer wanted ends its session with `reason`; one whose `uri` changed is replaced, its
        session ending as a DROP so the destinations are held while the new source connects.
        """
        runner = self._runners.get(stream_id)
        wanted = stream if pulled(stream) else None
        if runner is not None and (wanted is None or wanted.uri != runner.uri):
            self._retire(runner, reason if wanted is None else EndReason.DROP)
        if wanted is None or (runner is not None and wanted.uri == runner.uri):
            return
        assert wanted.uri is not None
        try:
            sources = parse_sources(wanted.uri)
        except InvalidSource as exc:  # stored under other rules: nothing to pull, and say why once
            log.warning("stream %d: cannot pull its uri (%s)", stream_id, exc)
            return
        runner = PullRunner(
            stream_id,
            wanted.client_id,
            wanted.uri,
            sources,
            opener=self._opener,
            policy=self._policy,
            ffmpeg_path=self._ffmpeg_path,
            settings=self._settings,
            process_factory=self._factory,
        )
        self._runners[stream_id] = runner
        log.info("stream %d: pulling (%d source%s)", stream_id, len(sources), "" if len(sources) == 1 else "s")
        runner.start()

    def replace_all(self, streams: Iterable[StreamRecord]) -> None:
        """The full pass: every stream the store holds; pulls of streams not among them end."""
        seen: set[int] = set()
        for stream in streams:
            seen.add(stream.id)
            self.set(stream.id, stream)
        for stream_id in [s for s in self._runners if s not in seen]:
            self.set(stream_id, None)

    def _retire(self, runner: PullRunner, reason: EndReason) -> None:
        del self._runners[runner.stream_id]
        runner.stop(reason)
        task = asyncio.get_running_loop().create_task(self._reap(runner), name=f"pull-stop-{runner.stream_id}")
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _reap(self, runner: PullRunner) -> None:
        await runner.wait_stopped()
        log.info("stream %d: pull stopped", runner.stream_id)

    async def close(self) -> None:
        """Stop every pull and wait until each process is reaped."""
        for runner in list(self._runners.values()):
            self._retire(runner, EndReason.KICKED)
        while self._retiring:
            await asyncio.gather(*list(self._retiring), return_exceptions=True)
