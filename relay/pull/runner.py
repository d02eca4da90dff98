"""One stream's pull: its alternatives tried in turn with backoff, and the publisher it is to the engine.

A `PullRunner` owns one task. Each attempt takes one alternative: its host is resolved and every address
held against the destination policy (relay/policy.py; a pulled source may not point inside either),
then one ffmpeg reads it with `-c copy` and writes FLV to a pipe (relay/pull/command.py), which is
parsed into packets (relay/pull/flv.py). At the first packet the runner opens a publishing session
through the engine (`PullOpener`), as the RTMP and SRT ingests do through the gate, so the hub takes a
pulled source as its main input like any publisher. When the source ends or breaks, the session ends
as a DROP: the hub's grace period holds the destinations while the next attempt reconnects. An attempt
that delivered media is retried on the same alternative first (a blip); one that delivered nothing
moves on to the next alternative. Delays come from the push's `Backoff` (exponential with jitter, a
fast-retry window after a run that had been going).

No media for `stall_timeout_seconds` (a source that accepts and then sends nothing) kills the attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from relay.destinations import Destination
from relay.ingest.gate import EndReason, IngestSink, PublishRefused, SourceType, Transport
from relay.ingest.rtmp_info import InfoTracker
from relay.media.packets import MediaPacket
from relay.policy import DestinationPolicy, DestinationRefused, DestinationUnresolved, ResolvedHost
from relay.pull.command import PullCommandSettings, build_pull_command
from relay.pull.flv import FlvStreamReader
from relay.pull.process import PullExit, PullProcess
from relay.pull.sources import source_type
from relay.push.masking import mask_uri, secrets_of
from relay.supervisor.backoff import Backoff
from relay.supervisor.settings import SupervisorSettings

log = logging.getLogger("relay.pull")


class PullState(StrEnum):
    """What a stream's pull is doing (`status.pull.state`)."""

    CONNECTING = "connecting"
    """An attempt is under way and no media has come yet (resolving, connecting, probing)."""
    RUNNING = "running"
    """Media flows from the source."""
    RETRYING = "retrying"
    """The last attempt ended; the next one starts after `next_retry_seconds`."""
    STOPPED = "stopped"
    """No pull: the stream is inactive, or not pulled any more."""


@dataclass(frozen=True, slots=True)
class PullStatus:
    """A stream's pull as the API shows it: never a secret (sources and errors come masked)."""

    state: PullState
    source: str | None
    """The alternative of the current (or last) attempt, masked."""
    source_index: int | None
    """Its place in `uri`, from 1."""
    sources: int
    since: datetime | None
    """Of the last state change."""
    attempts: int
    """Attempts since the pull started."""
    last_error: str | None
    """Why the last attempt that failed did (masked); kept while a later one runs (an alternative took
    over: this says why the one before it failed)."""
    next_retry_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class PullSettings:
    """Timings of every pull; names carry units."""

    retry_initial_delay_seconds: float = 0.5
    retry_max_delay_seconds: float = 10.0
    """Cap of the backoff between attempts: a source that is down is tried at least this often."""
    stall_timeout_seconds: float = 10.0
    """No media for this long (from the start of an attempt, or from the last packet): kill, retry."""
    stop_timeout_seconds: float = 3.0
    resolve_timeout_seconds: float = 5.0
    command: PullCommandSettings = field(default_factory=PullCommandSettings)

    def backoff(self) -> SupervisorSettings:
        """The push supervisor's backoff, with the pull's delays."""
        return SupervisorSettings(
            restart_initial_delay_seconds=self.retry_initial_delay_seconds,
            restart_max_delay_seconds=self.retry_max_delay_seconds,
        )


class PullOpener(Protocol):
    """The engine's side: a pulled source has media; open its stream's publishing session."""

    def __call__(
        self, stream_id: int, client_id: int, publisher: PulledPublisher, source_type: SourceType
    ) -> IngestSink:
        """The sink for its media, or PublishRefused (the engine is closing)."""
        ...


class ProcessFactory(Protocol):
    """Makes the (not yet started) ffmpeg of one attempt: `PullProcess`, or a fake in tests."""

    def __call__(
        self, argv: Sequence[str], secrets: Sequence[str], *, on_data: Callable[[bytes], None], log_prefix: str
    ) -> PullProcessLike: ...


class PullProcessLike(Protocol):
    """What the runner needs of one pull process (`relay.pull.process.PullProcess`)."""

    async def start(self) -> None: ...

    async def exited(self) -> int:
        """Wait for the exit only (the pipes may still be draining)."""
        ...

    async def wait(self) -> PullExit: ...

    async def stop(self, timeout_seconds: float) -> PullExit: ...

    async def aclose(self) -> None: ...

    def kill(self) -> None: ...


class PulledPublisher:
    """The `PublisherHandle` of a pulled source: what the engine sees of a pull while it publishes."""

    def __init__(self, runner: PullRunner, source: Destination) -> None:
        self._runner = runner
        self._peer = f"{source.host}:{source.port}"

    @property
    def transport(self) -> Transport:
        return Transport.PULL

    @property
    def peer(self) -> str:
        return self._peer

    def idle_seconds(self) -> float:
        return self._runner.idle_seconds()

    def disconnect(self, reason: EndReason) -> None:
        self._runner.end_session(reason)


class PullRunner:
    """Owns one stream's pull: its task, the current attempt's process and publishing session, the
    backoff and the status. `stop` ends it; `wait_stopped` reaps it."""

    def __init__(
        self,
        stream_id: int,
        client_id: int,
        uri: str,
        sources: Sequence[Destination],
        *,
        opener: PullOpener,
        policy: DestinationPolicy,
        ffmpeg_path: str,
        settings: PullSettings,
        process_factory: ProcessFactory = PullProcess,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream_id = stream_id
        self.client_id = client_id
        self.uri = uri
        """The stream's `uri` as stored: a different one means a new runner."""
        self._sources = tuple(sources)
        self._opener = opener
        self._policy = policy
        self._ffmpeg_path = ffmpeg_path
        self._settings = settings
        self._factory = process_factory
        self._clock = clock
        self._backoff = Backoff(settings.backoff())
        self._secrets = tuple(s for source in self._sources for s in secrets_of(source.uri))
        self._stop = asyncio.Event()
        self._end_reason = EndReason.DROP
        self._task: asyncio.Task[None] | None = None
        self._process: PullProcessLike | None = None
        self._sink: IngestSink | None = None
        self._last_media_at = clock()
        self._status = PullStatus(PullState.CONNECTING, None, None, len(self._sources), None, 0, None)
        self._retry_at: float | None = None

    # -- control ------------------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pull-{self.stream_id}")

    def stop(self, reason: EndReason = EndReason.DROP) -> None:
        """End the pull (non-blocking, idempotent): the session ends with `reason`, the process is stopped."""
        self._end_reason = reason
        self._stop.set()
        self.end_session(reason)

    async def wait_stopped(self) -> None:
        """Wait for the task (after `stop`); the process is reaped when it returns."""
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def end_session(self, reason: EndReason) -> None:
        """Close the publishing session now (the engine disconnects the publisher), if one is open."""
        sink, self._sink = self._sink, None
        if sink is not None:
            sink.close(reason)

    # -- what the engine and the API read -----------------------------------------------------------

    def idle_seconds(self) -> float:
        return self._clock() - self._last_media_at

    @property
    def status(self) -> PullStatus:
        if self._status.state is PullState.RETRYING and self._retry_at is not None:
            remaining = round(max(0.0, self._retry_at - self._clock()), 1)
            return replace(self._status, next_retry_seconds=remaining)
        return self._status

    # -- the task -----------------------------------------------------------------------------------

    def _set(self, state: PullState, **changes: Any) -> None:
        if state is not self._status.state:
            changes["since"] = datetime.now(UTC)
        self._status = replace(self._status, state=state, next_retry_seconds=None, **changes)

    async def _run(self) -> None:
        index = 0
        try:
            while not self._stop.is_set():
                source = self._sources[index]
                started = self._clock()
                self._set(
                    PullState.CONNECTING,
                    source=mask_uri(source.uri),
                    source_index=index + 1,
                    attempts=self._status.attempts + 1,
                )
                delivered, error = await self._attempt(source, index)
                if self._stop.is_set():
                    break
                ran_for = self._clock() - started if delivered else 0.0
                delay = self._backoff.next_delay(ran_for, self._clock())
                if not delivered:
                    index = (index + 1) % len(self._sources)
                log.info(
                    "stream %d: pull of source %d ended (%s), next attempt in %.1f s",
                    self.stream_id,
                    self._status.source_index or 0,
                    error or "source ended",
                    delay,
                )
                self._retry_at = self._clock() + delay
                self._set(PullState.RETRYING, last_error=error or "the source ended the stream")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
        finally:
            self.end_session(self._end_reason)
            self._set(PullState.STOPPED)

    async def _attempt(self, source: Destination, index: int) -> tuple[bool, str | None]:
        """One attempt at `source`: (whether media came, why it ended if it failed)."""
        try:
            resolved = await self._resolve(source)
        except (DestinationRefused, DestinationUnresolved) as exc:
            return False, str(exc).replace("destination", "source")
        if resolved is None:
            return False, None
        argv = build_pull_command(
            self._ffmpeg_path,
            source,
            connect_to=resolved.address_for(self._status.attempts - 1),
            settings=self._settings.command,
        )
        reader = FlvStreamReader()
        info = InfoTracker()
        delivered = False
        publisher = PulledPublisher(self, source)

        def on_data(data: bytes) -> None:
            sink = self._sink
            if sink is None:  # the first media opens the session
                feed(data)
                return
            with sink.batch():  # what this read fans out is written at its end, once per push
                feed(data)

        def feed(data: bytes) -> None:
            nonlocal delivered
            for tag in reader.feed(data):
                self._last_media_at = self._clock()
                if not delivered:
                    delivered = True
                    self._open_session(publisher, source)
                    self._set(PullState.RUNNING)
                sink = self._sink
                if sink is None:
                    continue  # the engine refused or ended the session: the stop follows
                packet: MediaPacket = tag.packet
                sink.write(packet)
                if tag.metadata is not None:
                    info.from_metadata(tag.metadata)
                elif packet.config:
                    info.from_packet(packet)
                else:
                    continue
                merged = info.merged()
                if merged is not None:
                    sink.update_info(merged)

        process = self._factory(argv, self._secrets, on_data=on_data, log_prefix=f"stream {self.stream_id} pull")
        try:
            await process.start()
        except OSError as exc:
            return False, f"cannot start ffmpeg: {exc.strerror or exc}"
        self._process = process
        self._last_media_at = self._clock()
        try:
            result = await self._watch(process)
        except asyncio.CancelledError:
            await process.aclose()
            raise
        finally:
            self._process = None
            self.end_session(EndReason.DROP)
        if result is None:
            return delivered, None
        if result.killed and not result.stopped and result.last_error is None:
            return delivered, f"no media from the source for {self._settings.stall_timeout_seconds:g} s"
        return delivered, result.last_error

    async def _watch(self, process: PullProcessLike) -> PullExit | None:
        """Until the process ends (its exit), a stop (None) or a stall (killed, then its exit)."""
        exit_wait = asyncio.ensure_future(process.exited())
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            while not exit_wait.done():
                quiet_for = self.idle_seconds()
                limit = self._settings.stall_timeout_seconds
                if quiet_for >= limit:
                    log.warning("stream %d: no media from the source for %.1f s, restarting", self.stream_id, quiet_for)
                    process.kill()
                    break
                await asyncio.wait({exit_wait, stop_wait}, timeout=limit - quiet_for, return_when="FIRST_COMPLETED")
                if stop_wait.done() and not exit_wait.done():
                    await process.stop(self._settings.stop_timeout_seconds)
                    return None
            return await process.wait()
        finally:
            stop_wait.cancel()
            exit_wait.cancel()

    async def _resolve(self, source: Destination) -> ResolvedHost | None:
        """The checked addresses of the source's host; None if a stop came first. Raises DestinationRefused
        or DestinationUnresolved."""
        resolving = asyncio.ensure_future(
            self._policy.resolve(
                source.host,
                source.port,
                self.client_id,
                socket_type=socket.SOCK_DGRAM if source.scheme == "srt" else socket.SOCK_STREAM,
                timeout_seconds=self._settings.resolve_timeout_seconds,
            )
        )
        stop_wait = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({resolving, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_wait.cancel()
            if not resolving.done():
                resolving.cancel()
                await asyncio.gather(resolving, return_exceptions=True)
        return None if resolving.cancelled() else resolving.result()

    def _open_session(self, publisher: PulledPublisher, source: Destination) -> None:
        try:
            self._sink = self._opener(self.stream_id, self.client_id, publisher, source_type(source))
        except PublishRefused as exc:
            log.info("stream %d: pulled media refused (%s)", self.stream_id, exc.reason.value)
            self._stop.set()
