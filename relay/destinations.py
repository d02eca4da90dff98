"""Destination URIs: the strict parse that stands between a client's string and ffmpeg's argv.

Only rtmp://, rtmps:// and srt:// (caller mode) with a real host and port get through; anything that
ffmpeg could read as another protocol (file:, pipe:, concat:, data:, subfile:...) or as an option is
refused with a message that names the problem and never repeats the URI (it may hold a stream key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from relay.media.packets import ContainerFormat

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

# SRT caller options we pass through to ffmpeg's libsrt protocol, with the kind of value each takes.
SRT_OPTIONS: dict[str, str] = {
    "mode": "text",
    "streamid": "text",
    "passphrase": "text",
    "pbkeylen": "int",
    "latency": "int",
    "rcvlatency": "int",
    "peerlatency": "int",
    "payload_size": "int",
    "pkt_size": "int",
    "maxbw": "int",
    "inputbw": "int",
    "oheadbw": "int",
    "connect_timeout": "int",
    "timeout": "int",
    "tlpktdrop": "int",
    "nakreport": "int",
    "lossmaxttl": "int",
    "minversion": "int",
    "enforced_encryption": "int",
    "sndbuf": "int",
    "rcvbuf": "int",
    "ipttl": "int",
    "iptos": "int",
    "transtype": "text",
    "linger": "int",
    "tsbpd": "int",
    "smoother": "text",
    "congestion": "text",
    "kmrefreshrate": "int",
    "kmpreannounce": "int",
    "snddropdelay": "int",
    "messageapi": "int",
    "listen_timeout": "int",
}


class InvalidDestination(ValueError):
    """The URI cannot be a destination; the message is safe to show and log."""


@dataclass(frozen=True, slots=True)
class Destination:
    """A validated destination: what the push needs to pick ffmpeg's muxer and options."""

    scheme: str
    host: str
    port: int
    uri: str


def _check_characters(uri: str) -> None:
    if len(uri) > MAX_URI_LENGTH:
        raise InvalidDestination(f"uri is too long (maximum is {MAX_URI_LENGTH} characters)")
    if any(ord(ch) <= 0x20 or ord(ch) >= 0x7F for ch in uri):
        raise InvalidDestination("uri must not contain whitespace, control or non-ASCII characters")


def parse_destination(uri: str) -> Destination:
    """Validate and return the destination, or raise InvalidDestination."""
    if not isinstance(uri, str):
        raise InvalidDestination(INVALID_SCHEME)
    scheme, sep, _ = uri.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise InvalidDestination(INVALID_SCHEME)
    _check_characters(uri)
    scheme = scheme.lower()
    # SRT stream ids may carry a '#' (Gcore's `<id>#<token>`): it belongs to the query, not a fragment.
    parts = urlsplit(uri, allow_fragments=scheme != "srt")
    host = parts.hostname or ""
    if not host:
        raise InvalidDestination("uri must name a host")
    if ":" in host:
        if not _IPV6.match(host):
            raise InvalidDestination("uri host is not a valid host name or address")
    elif not _HOSTNAME.match(host):
        raise InvalidDestination("uri host is not a valid host name or address")
    try:
        port = parts.port
    except ValueError as exc:
        raise InvalidDestination("uri port must be a number from 1 to 65535") from exc
    if port == 0:
        raise InvalidDestination("uri port must be a number from 1 to 65535")
    if scheme == "srt":
        if port is None:
            raise InvalidDestination("srt uri must name a port")
        if parts.path not in ("", "/"):
            raise InvalidDestination("srt uri must not have a path")
        _check_srt_query(parts.query)
    else:
        if parts.fragment:
            raise InvalidDestination("uri must not have a fragment")
        segments = [s for s in parts.path.split("/") if s]
        if not segments:
            raise InvalidDestination(f"{scheme} uri needs an application path, e.g. {scheme}://host/app/stream-key")
        port = port or (443 if scheme == "rtmps" else 1935)
    return Destination(scheme=scheme, host=host, port=port, uri=uri)


def _check_srt_query(query: str) -> None:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError as exc:
        raise InvalidDestination("srt uri query is malformed") from exc
    seen: set[str] = set()
    for name, value in pairs:
        kind = SRT_OPTIONS.get(name)
        if kind is None:
            raise InvalidDestination(f"unsupported srt option '{name[:40]}'")
        if name in seen:
            raise InvalidDestination(f"srt option '{name}' is given twice")
        seen.add(name)
        if kind == "int" and not re.fullmatch(r"-?\d{1,12}", value):
            raise InvalidDestination(f"srt option '{name}' must be an integer")
        if name == "mode" and value != "caller":
            raise InvalidDestination("srt targets support only mode=caller")
        if name == "transtype" and value != "live":
            raise InvalidDestination("srt targets support only transtype=live")
        if name == "passphrase" and not 10 <= len(value) <= 79:
            raise InvalidDestination("srt passphrase must be 10 to 79 characters")
        if name == "pbkeylen" and value not in ("0", "16", "24", "32"):
            raise InvalidDestination("srt pbkeylen must be 16, 24 or 32")
