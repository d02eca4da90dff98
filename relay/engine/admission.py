"""Publish admission: who may publish to which stream, decided before any media flows.

A stream key names a stream and its input and carries its token (`<id>?<token>` over RTMP, an SRT
streamid over SRT; `<id>b?<token>` names the backup input, as Gcore's `backup_push_url`). The stream
must exist, the token match (in constant time) and the stream be active. Each input has one
publisher: a second one on the same input is refused while the first sends, and takes over from one
silent for `takeover_idle_seconds` (a crashed encoder must not lock its own key out). Every refusal is counted
by transport and reason, for the metrics.
"""

from __future__ import annotations

import hmac
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote

from relay.ingest.gate import (
    PublisherHandle,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInput,
    Transport,
)
from relay.ingest.srt_admission import SrtAdmit
from relay.srt.streamid import InvalidStreamId, parse_streamid
from relay.store.base import StoreUnavailable
from relay.store.models import StreamRecord

log = logging.getLogger("relay.engine.admission")

_MAX_ID_DIGITS = 18


class StreamLookup(Protocol):
    """The part of the store admission reads."""

    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None: ...

    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None: ...


@dataclass(frozen=True, slots=True)
class Admitted:
    """A publish request that may go ahead."""

    stream: StreamRecord
    replaces: PublisherHandle | None
    """A silent publisher of the same input that the newcomer takes over from (to be disconnected)."""
    input: StreamInput = StreamInput.MAIN


@dataclass(frozen=True, slots=True)
class StreamKey:
    """What a publish key names: the stream, its input, and the token to check (secret)."""

    stream_id: int
    input: StreamInput
    token: str


def _parse_ident(ident: str, what: str) -> tuple[int, StreamInput]:
    """`123` -> (123, MAIN); `123b` -> (123, BACKUP); raises PublishRefused."""
    stream_input = StreamInput.MAIN
    if ident.endswith("b"):
        ident, stream_input = ident[:-1], StreamInput.BACKUP
    if not ident.isdigit() or len(ident) > _MAX_ID_DIGITS:
        raise PublishRefused(RefusalReason.UNKNOWN_STREAM, f"{what} does not name a stream")
    return int(ident), stream_input


def parse_stream_key(stream_key: str) -> StreamKey:
    """`<id>?<token>` or `<id>b?<token>` (RTMP; `#` and `%23` also separate) -> StreamKey; raises PublishRefused."""
    key = stream_key.strip()
    for separator in ("?", "#", "%23"):
        if separator in key:
            ident, _, token = key.partition(separator)
            break
    else:
        raise PublishRefused(RefusalReason.BAD_REQUEST, "stream key has no token")
    stream_id, stream_input = _parse_ident(unquote(ident).rsplit("/", 1)[-1], "stream key")
    return StreamKey(stream_id, stream_input, unquote(token))


def parse_srt_stream_key(streamid: str) -> StreamKey:
    """An SRT streamid (`<id>#<token>`, `<id>b#<token>` for the backup) -> StreamKey; raises PublishRefused."""
    try:
        ident, token = parse_streamid(streamid)
    except InvalidStreamId as exc:
        raise PublishRefused(RefusalReason.BAD_REQUEST, "malformed SRT streamid") from exc
    stream_id, stream_input = _parse_ident(ident, "streamid")
    return StreamKey(stream_id, stream_input, token)


def split_stream_key(stream_key: str) -> tuple[int, str]:
    """`parse_stream_key` as (id, token), for callers that do not care about the input."""
    key = parse_stream_key(stream_key)
    return key.stream_id, key.token


def srt_stream_key(streamid: str) -> tuple[int, str]:
    """`parse_srt_stream_key` as (id, token), for callers that do not care about the input."""
    key = parse_srt_stream_key(streamid)
    return key.stream_id, key.token


def check_stream(stream_id: int, stream: StreamRecord | None, token: str) -> StreamRecord:
    """The stream, if it exists, the token is its own and it is active; raises PublishRefused."""
    if stream is None:
        raise PublishRefused(RefusalReason.UNKNOWN_STREAM, f"no stream {stream_id}")
    if not hmac.compare_digest(stream.token.encode(), token.encode()):
        raise PublishRefused(RefusalReason.BAD_TOKEN, f"wrong token for stream {stream_id}")
    if not stream.active:
        raise PublishRefused(RefusalReason.INACTIVE, f"stream {stream_id} is not active")
    if stream.pull:
        raise PublishRefused(RefusalReason.PULLED, f"stream {stream_id} is pulled by the relay")
    return stream


class Admission:
    """Decides publish requests (the gate's half and SRT's handshake-time half); owns the refusal counts."""

    def __init__(
        self,
        streams: StreamLookup,
        publisher_of: Callable[[int, StreamInput], PublisherHandle | None],
        takeover_idle_seconds: float,
    ) -> None:
        self._streams = streams
        self._publisher_of = publisher_of
        self._takeover_idle_seconds = takeover_idle_seconds
        self._accepting = True
        self.refusals: Counter[tuple[str, str]] = Counter()
        """Publish attempts refused, by (transport, reason): for metrics."""

    def stop_accepting(self) -> None:
        """From now on every request is refused as unavailable (the node is shutting down)."""
        self._accepting = False

    def refused(self, transport: Transport, reason: RefusalReason) -> None:
        """Count a refusal decided elsewhere (an ingest server's connection limits)."""
        self.refusals[(transport.value, reason.value)] += 1

    async def admit(self, request: PublishRequest) -> Admitted:
        """May this request publish? Raises PublishRefused (counted) when not."""
        transport = request.publisher.transport
        try:
            if not self._accepting:
                raise PublishRefused(RefusalReason.UNAVAILABLE, "relay is shutting down")
            key = self._stream_key(request.stream_key, transport)
            try:
                record = await self._streams.get_stream(key.stream_id)
            except StoreUnavailable as exc:  # PostgreSQL away: no publisher can be checked, nor own a stream
                raise PublishRefused(RefusalReason.DATABASE_UNAVAILABLE, "the definitions cannot be read") from exc
            stream = check_stream(key.stream_id, record, key.token)
            return Admitted(stream, self._silent_publisher(key.stream_id, key.input), key.input)
        except PublishRefused as refused:
            self.refused(transport, refused.reason)
            raise

    def check(self, streamid: str) -> SrtAdmit:
        """SrtAdmission: decide an SRT handshake on libsrt's thread, before it completes.

        Runs off the event loop, so it reads the store through its blocking reader and only reads
        live state; the loop decides again (takeover or refusal) when the gate is asked.
        """
        try:
            key = parse_srt_stream_key(streamid)
            stream = check_stream(key.stream_id, self._streams.get_stream_blocking(key.stream_id), key.token)
            self._silent_publisher(key.stream_id, key.input)
        except PublishRefused as refused:
            self.refused(Transport.SRT, refused.reason)
            raise
        return SrtAdmit(stream_id=stream.id, passphrase=stream.srt_passphrase or None, latency_ms=stream.srt_latency_ms)

    @staticmethod
    def _stream_key(stream_key: str, transport: Transport) -> StreamKey:
        return parse_srt_stream_key(stream_key) if transport is Transport.SRT else parse_stream_key(stream_key)

    def _silent_publisher(self, stream_id: int, stream_input: StreamInput) -> PublisherHandle | None:
        """The one rule for a second publisher on an input: refused while the current one sends; a current
        one silent for `takeover_idle_seconds` (a crashed encoder) is returned, to be replaced. The other
        input's publisher never counts: main and backup publish side by side."""
        current = self._publisher_of(stream_id, stream_input)
        if current is None:
            return None
        if current.idle_seconds() < self._takeover_idle_seconds:
            raise PublishRefused(
                RefusalReason.ALREADY_LIVE, f"stream {stream_id} already has a {stream_input.value} publisher"
            )
        return current
