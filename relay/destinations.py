"""Destination URIs: the strict parse that stands between a client's string and ffmpeg's argv.

Only rtmp://, rtmps:// and srt:// (caller mode) with a real host and port get through; anything that
ffmpeg could read as another protocol (file:, pipe:, concat:, data:, subfile:...) or as an option is
refused with a message that names the problem and never repeats the URI (it may hold a stream key).
The host must read the same to every parser (one '@' at most, no backslash); scheme and host come out
in lower case. SRT options are an allow-list, the integer ones each with a range (`SRT_INT_OPTIONS`).
Whether a client may reach the host at all is the destination policy's question (relay/policy.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, urlsplit

from relay.media.packets import ContainerFormat
from relay.policy import IPAddress, literal_address
from relay.srt.passphrase import PASSPHRASE_LENGTH_RULE, passphrase_length_ok

INVALID_SCHEME = "invalid uri, supported protocols are rtmp, rtmps, srt"
SCHEME_CONTAINERS: dict[str, ContainerFormat] = {
    "rtmp": ContainerFormat.FLV,
    "rtmps": ContainerFormat.FLV,
    "srt": ContainerFormat.MPEGTS,
}
"""The schemes we push to, each with the container ffmpeg writes to it (RTMP carries FLV, SRT MPEG-TS)."""
SCHEMES = tuple(SCHEME_CONTAINERS)
MAX_URI_LENGTH = 2048

_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9_-]{0,62})(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$"
)
_IPV6 = re.compile(r"^[0-9A-Fa-f:.]+$")

SRT_TEXT_OPTIONS = frozenset({"mode", "streamid", "passphrase", "transtype", "smoother", "congestion"})
"""SRT caller options passed through to ffmpeg's libsrt protocol that take text (checked one by one below)."""

SRT_INT_OPTIONS: dict[str, tuple[int, int]] = {
    # Times. ffmpeg takes latency and the I/O timeouts in microseconds, connect_timeout in ms.
    "latency": (0, 60_000_000),  # microseconds: up to 60 s of receiver buffer
    "rcvlatency": (0, 60_000_000),  # microseconds
    "peerlatency": (0, 60_000_000),  # microseconds
    "connect_timeout": (100, 60_000),  # milliseconds
    "timeout": (100_000, 60_000_000),  # microseconds, 0.1 to 60 s: a blocked send must end (no -1)
    "listen_timeout": (0, 60_000_000),  # microseconds (listener mode only: inert for a caller)
    "snddropdelay": (-1, 60_000_000),  # microseconds; -1: never drop
    "linger": (0, 60),  # seconds the socket stays open for unacknowledged data on close
    # Sizes and rates.
    "payload_size": (188, 1456),  # bytes: one TS packet up to the largest live-mode payload
    "pkt_size": (188, 1456),  # bytes (ffmpeg's other name for payload_size)
    "sndbuf": (32_768, 67_108_864),  # bytes, at most 64 MiB: libsrt allocates it per push, on our host
    "rcvbuf": (32_768, 67_108_864),  # bytes, likewise
    # The kernel buffers of the UDP socket under libsrt (ffmpeg sets SRTO_UDP_SNDBUF / SRTO_UDP_RCVBUF);
    # Gcore lists them among the common SRT parameters. Bytes, within sndbuf's bounds; the kernel caps
    # what it grants at net.core.wmem_max / rmem_max.
    "send_buffer_size": (32_768, 67_108_864),
    "recv_buffer_size": (32_768, 67_108_864),
    "maxbw": (-1, 1_250_000_000),  # bytes/s (10 Gbit/s); -1: unlimited, 0: relative to inputbw
    "inputbw": (0, 1_250_000_000),  # bytes/s; 0: estimated
    "oheadbw": (5, 100),  # percent of the input rate kept for retransmission (libsrt's range)
    "lossmaxttl": (0, 10_000),  # packets of reorder tolerance
    # Switches (0 or 1).
    "tlpktdrop": (0, 1),
    "nakreport": (0, 1),
    "enforced_encryption": (0, 1),
    "messageapi": (0, 1),
    "tsbpd": (0, 1),
    # Protocol details.
    "pbkeylen": (0, 32),  # bytes; only 0, 16, 24 or 32 (checked below)
    "minversion": (0, 0xFFFFFF),  # 0xMMmmpp, e.g. 66304 = 1.3.0
    "ipttl": (1, 255),
    "iptos": (0, 255),
    "kmrefreshrate": (0, 2_147_483_647),  # packets between key changes
    "kmpreannounce": (0, 1_073_741_823),  # packets
}
"""SRT caller options that take an integer, each with its accepted range (both ends included): out of
range is refused, naming the option. The bounds keep every value within what libsrt accepts and what
one push should be able to ask of this host (buffers are allocated here, timeouts hold an ffmpeg)."""

SRT_OPTIONS = SRT_TEXT_OPTIONS | frozenset(SRT_INT_OPTIONS)


class InvalidDestination(ValueError):
    """The URI cannot be a destination; the message is safe to show and log."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A validated destination: what the push needs to pick ffmpeg's muxer and options."""

    scheme: str
    host: str
    """Lower case, without brackets."""
    port: int
    """Explicit, or the scheme's default (rtmp 1935, rtmps 443)."""
    uri: str
    """The URI as accepted, its scheme and host in lower case: ffmpeg looks protocols up by their exact
    lower-case name, so `RTMP://` would fail on every start (an endless retry)."""


def _check_characters(uri: str) -> None:
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidDestination(f"uri is too long (maximum is {MAX_URI_LENGTH} characters)")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in uri):
        raise InvalidDestination("uri must not contain whitespace, control or non-ASCII characters")


def _split_authority(scheme: str, rest: str) -> tuple[str, str]:
    """(authority, what follows it) of the part after `scheme://`, cut where urlsplit cuts it."""
    # SRT stream ids may carry a '#' (Gcore's `<id>#<token>`): it belongs to the query, not a fragment.
    delimiters = "/?" if scheme == "srt" else "/?#"
    end = min((i for i in (rest.find(d) for d in delimiters) if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def parse_destination(uri: str, *, check_options: bool = True) -> Destination:
    """Validate and return the destination, or raise InvalidDestination.

    `check_options=False` skips the SRT options' checks: a push of a URI the API accepted earlier,
    under older rules, still starts (only its host and port are needed then).
    """
    if not isinstance(uri, str):
        raise InvalidDestination(INVALID_SCHEME)
    raw_scheme, sep, rest = uri.partition("://")
    scheme = raw_scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise InvalidDestination(INVALID_SCHEME)
    normalised, parts, host, port = parse_location(scheme, rest)
    if scheme == "srt":
        if port is None:
            raise InvalidDestination("srt uri must name a port")
        if parts.path not in ("", "/"):
            raise InvalidDestination("srt uri must not have a path")
        if check_options:
            _check_srt_query(parts.query)
    else:
        if parts.fragment:
            raise InvalidDestination("uri must not have a fragment")
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise InvalidDestination(f"{scheme} uri needs an application path, e.g. {scheme}://host/app/stream-key")
        port = port or (443 if scheme == "rtmps" else 1935)
    return Destination(scheme=scheme, host=host, port=port, uri=normalised)


def parse_location(scheme: str, rest: str) -> tuple[str, SplitResult, str, int | None]:
    """(normalised URI, its parts, host, explicit port) of `scheme://rest`, or InvalidDestination.

    The strict reading every URI the relay connects to gets (destinations here, pulled sources in
    relay/pull/sources.py): safe characters only, one reading of the host for us and for ffmpeg (no
    second '@' or backslash for parsers to disagree on), a valid name or address, a port in range.
    `scheme` is already in lower case; the host comes out in lower case too.
    """
    uri = f"{scheme}://{rest}"
    _check_characters(uri)
    authority, tail = _split_authority(scheme, rest)
    userinfo, at, hostport = authority.rpartition("@")
    if "@" in userinfo or "\\" in authority:
        raise InvalidDestination("uri host is not a valid host name or address")
    normalised = f"{scheme}://{userinfo}{at}{hostport.lower()}{tail}"
    try:
        parts = urlsplit(normalised, allow_fragments=scheme != "srt")
    except ValueError as exc:  # e.g. a bracketed host that is no address
        raise InvalidDestination("uri host is not a valid host name or address") from exc
    host = parts.hostname or ""
    if not host:
        raise InvalidDestination("uri must name a host")
    if ":" in host:
        if not _IPV6.match(host) or literal_address(host) is None:
            raise InvalidDestination("uri host is not a valid host name or address")
    elif not _HOSTNAME.match(host):
        raise InvalidDestination("uri host is not a valid host name or address")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidDestination("uri port must be a number from 1 to 65535") from exc
    if port == 0:
        raise InvalidDestination("uri port must be a number from 1 to 65535")
    return normalised, parts, host, port


def with_address(destination: Destination, address: IPAddress) -> str:
    """The destination's URI with `address` in place of its host and the port written out, everything
    else (userinfo, path, key, query) byte for byte: what ffmpeg connects to once the host was checked."""
    scheme, _, rest = destination.uri.partition("://")
    authority, tail = _split_authority(scheme, rest)
    userinfo, at, _ = authority.rpartition("@")
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"{scheme}://{userinfo}{at}{host}:{destination.port}{tail}"


def srt_options(destination: Destination) -> list[tuple[str, str, str]]:
    """(name, decoded value, value as written) of each option in an SRT destination's query, in order:
    what the relay's own SRT caller (relay/srt/caller.py) sets, as ffmpeg's libsrt protocol would."""
    return _query_fields(urlsplit(destination.uri, allow_fragments=False).query)


def _query_fields(query: str) -> list[tuple[str, str, str]]:
    """(name, decoded value, value as written) of each `&`-separated field of the query."""
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidDestination("srt uri query is malformed") from exc
    raw_values = [field.partition("=")[2] for field in query.split("&")] if query else []
    if len(raw_values) != len(pairs):
        raise InvalidDestination("srt uri query is malformed")
    return [(name, value, raw) for (name, value), raw in zip(pairs, raw_values, strict=True)]


def _check_srt_query(query: str) -> None:
    seen: set[str] = set()
    for name, value, raw in _query_fields(query):
        if name not in SRT_OPTIONS:
            raise InvalidDestination(f"unsupported srt option '{name[:40]}'")
        if name in seen:
            raise InvalidDestination(f"srt option '{name}' is given twice")
        seen.add(name)
        bounds = SRT_INT_OPTIONS.get(name)
        if bounds is not None:
            # ffmpeg reads the value as written (strtol, no percent-decoding): judge that text.
            if not re.fullmatch(r"-?\d{1,19}", raw):
                raise InvalidDestination(f"srt option '{name}' must be an integer")
            low, high = bounds
            if not low <= int(raw) <= high:
                raise InvalidDestination(f"srt option '{name}' must be from {low} to {high}")
        if name == "mode" and value != "caller":
            raise InvalidDestination("srt targets support only mode=caller")
        if name == "transtype" and value != "live":
            raise InvalidDestination("srt targets support only transtype=live")
        if name == "passphrase" and not passphrase_length_ok(value):
            raise InvalidDestination(f"srt passphrase {PASSPHRASE_LENGTH_RULE}")
        if name == "pbkeylen" and value not in ("0", "16", "24", "32"):
            raise InvalidDestination("srt pbkeylen must be 16, 24 or 32")
