"""Publish admission: who may publish to which stream, decided before any media flows.

A stream key names a stream and carries its token (`<id>?<token>` over RTMP, an SRT streamid over
SRT). The stream must exist, the token match (in constant time) and the stream be active. A stream
has one publisher: a second one is refused while the first sends, and takes over from one silent for
`takeover_idle_seconds` (a crashed encoder must not lock its own key out). Every refusal is counted
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

from relay.ingest.gate import PublisherHandle, PublishRefused, PublishRequest, RefusalReason, Transport
from relay.ingest.srt_admission import SrtAdmit
from relay.srt.streamid import InvalidStreamId, parse_streamid
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
    """A silent publisher of the same stream that the newcomer takes over from (to be disconnected)."""


def split_stream_key(stream_key: str) -> tuple[int, str]:
    """`<id>?<token>` (RTMP) or `<id>#<token>` (SRT, after parsing) -> (id, token); raises PublishRefused."""
    key = stream_key.strip()
    for separator in ("?", "#", "%23"):
        if separator in key:
            ident, _, token = key.partition(separator)
            break
    else:
        raise PublishRefused(RefusalReason.BAD_REQUEST, "stream key has no token")
    ident = unquote(ident).rsplit("/", 1)[-1]
    if not ident.isdigit() or len(ident) > _MAX_ID_DIGITS:
        raise PublishRefused(RefusalReason.UNKNOWN_STREAM, "stream key does not name a stream")
    return int(ident), unquote(token)


def srt_stream_key(streamid: str) -> tuple[int, str]:
    """An SRT streamid -> (id, token); raises PublishRefused."""
    try:
        ident, token = parse_streamid(streamid)
    except InvalidStreamId as exc:
        raise PublishRefused(RefusalReason.BAD_REQUEST, "malformed SRT streamid") from exc
    if not ident.isdigit() or len(ident) > _MAX_ID_DIGITS:
        raise PublishRefused(RefusalReason.UNKNOWN_STREAM, "streamid does not name a stream")
    return int(ident), token


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
        self, streams: StreamLookup, publisher_of: Callable[[int], PublisherHandle | None], takeover_idle_seconds: float
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
            stream_id, token = self._stream_key(request.stream_key, transport)
            stream = check_stream(stream_id, await self._streams.get_stream(stream_id), token)
            return Admitted(stream, self._silent_publisher(stream_id))
        except PublishRefused as refused:
            self.refused(transport, refused.reason)
            raise

    def check(self, streamid: str) -> SrtAdmit:
        """SrtAdmission: decide an SRT handshake on libsrt's thread, before it completes.

        Runs off the event loop, so it reads the store through its blocking reader and only reads
        live state; the loop decides again (takeover or refusal) when the gate is asked.
        """
        try:
            stream_id, token = srt_stream_key(streamid)
            stream = check_stream(stream_id, self._streams.get_stream_blocking(stream_id), token)
            self._silent_publisher(stream_id)
        except PublishRefused as refused:
            self.refused(Transport.SRT, refused.reason)
            raise
        return SrtAdmit(stream_id=stream.id, passphrase=stream.srt_passphrase or None, latency_ms=stream.srt_latency_ms)

    @staticmethod
    def _stream_key(stream_key: str, transport: Transport) -> tuple[int, str]:
        return srt_stream_key(stream_key) if transport is Transport.SRT else split_stream_key(stream_key)

    def _silent_publisher(self, stream_id: int) -> PublisherHandle | None:
        """The one rule for a second publisher: refused while the current one sends; a current one silent
        for `takeover_idle_seconds` (a crashed encoder) is returned, to be replaced."""
        current = self._publisher_of(stream_id)
        if current is None:
            return None
        if current.idle_seconds() < self._takeover_idle_seconds:
            raise PublishRefused(RefusalReason.ALREADY_LIVE, f"stream {stream_id} already has a publisher")
        return current
