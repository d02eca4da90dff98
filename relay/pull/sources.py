"""Pulled sources: the strict parse of a stream's `uri`, between a client's string and ffmpeg's argv.

Gcore's `uri` holds one address or several separated by spaces, tried in turn. Each must be one of the
protocols a live source speaks and ffmpeg reads from a remote host: RTMP, RTMPS, SRT (the relay calls
the source: caller mode), RTSP, and HTTP(S) serving HLS or MPEG-TS. Nothing that reads a local file or
another protocol (file:, pipe:, concat:, data:, subfile:, crypto:...) gets through, nor anything ffmpeg
would read as an option: the characters are the destinations' (no whitespace, control or non-ASCII:
a space is what separates the alternatives, and RTMP would take what follows one as options), the host
is read once for us and for ffmpeg (relay/destinations.py `parse_location`), SRT options are the
destinations' allow-list, and RTSP's query may not carry the bare words ffmpeg's RTSP reads as transport
switches (`?udp`, `?multicast`, `?http`...). Messages name the problem and the alternative, never the
URI (it may hold a stream key or a password). Whether a client may reach the host at all is the
destination policy's question (relay/policy.py), asked of every alternative.
"""

from __future__ import annotations

from relay.destinations import Destination, InvalidDestination, parse_destination, parse_location
from relay.ingest.gate import SourceType

PULL_SCHEMES: dict[str, SourceType] = {
    "rtmp": SourceType.RTMP,
    "rtmps": SourceType.RTMP,
    "srt": SourceType.SRT,
    "rtsp": SourceType.RTSP,
    "http": SourceType.HTTPS,
    "https": SourceType.HTTPS,
}
"""The schemes a stream may pull from, each with the `stream_source_type` the API reports while it does
(Gcore's values: rtmp, srt, https; rtsp is ours)."""
INVALID_SOURCE_SCHEME = "invalid uri, supported protocols are rtmp, rtmps, srt, rtsp, http, https"
MAX_ALTERNATIVES = 8
"""Alternatives one stream may list: each is retried in turn, so more only lengthens a round."""
_DEFAULT_PORTS = {"rtsp": 554, "http": 80, "https": 443}
_RTSP_SWITCHES = frozenset({"udp", "tcp", "multicast", "http", "https", "filter_src", "listen", "prefer_tcp"})
"""Query words ffmpeg's RTSP client reads as its own options (libavformat/rtsp.c): transports, tunnels,
server mode. The relay chooses the transport (interleaved TCP); a URI may not switch it."""


class InvalidSource(ValueError):
    """The `uri` cannot be pulled; the message is safe to show and log."""


def source_type(source: Destination) -> SourceType:
    """What the API reports as `stream_source_type` while this source feeds the stream."""
    return PULL_SCHEMES[source.scheme]


def parse_source(uri: str) -> Destination:
    """One alternative, validated and normalised (scheme and host in lower case), or InvalidSource.

    The result is a `Destination` in the sense of relay/destinations.py: where the relay connects to,
    with the port written out or the scheme's default.
    """
    raw_scheme, sep, rest = uri.partition("://")
    scheme = raw_scheme.lower()
    if not sep or scheme not in PULL_SCHEMES:
        raise InvalidSource(INVALID_SOURCE_SCHEME)
    try:
        if scheme in ("rtmp", "rtmps", "srt"):
            # The same rules as a destination of that protocol: an RTMP application path, SRT caller
            # mode (the relay calls the source's listener) and the allow-listed SRT options.
            return parse_destination(f"{scheme}://{rest}")
        normalised, parts, host, port = parse_location(scheme, rest)
    except InvalidDestination as exc:
        raise InvalidSource(str(exc).replace("srt targets", "srt sources")) from None
    if parts.fragment:
        raise InvalidSource("uri must not have a fragment")
    if scheme == "rtsp":
        words = {item.partition("=")[0].lower() for item in parts.query.split("&") if item}
        if words & _RTSP_SWITCHES:
            raise InvalidSource("rtsp uri must not choose the transport (the relay pulls over tcp)")
    return Destination(scheme=scheme, host=host, port=port or _DEFAULT_PORTS[scheme], uri=normalised)


def parse_sources(text: str) -> tuple[Destination, ...]:
    """Every alternative of a stream's `uri` (separated by spaces), in order; raises InvalidSource.

    An error in one of several alternatives names it by its place ("alternative 2: ..."), never by its text.
    """
    alternatives = text.split()
    if not alternatives:
        raise InvalidSource(INVALID_SOURCE_SCHEME)
    if len(alternatives) > MAX_ALTERNATIVES:
        raise InvalidSource(f"uri lists too many alternatives (maximum is {MAX_ALTERNATIVES})")
    sources: list[Destination] = []
    for index, alternative in enumerate(alternatives, start=1):
        try:
            sources.append(parse_source(alternative))
        except InvalidSource as exc:
            if len(alternatives) == 1:
                raise
            raise InvalidSource(f"alternative {index}: {exc}") from None
    return tuple(sources)


def normalise_sources(text: str) -> str:
    """The `uri` as stored: each alternative normalised, one space between them; raises InvalidSource."""
    return " ".join(source.uri for source in parse_sources(text))
