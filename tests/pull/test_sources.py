"""Pulled source URIs: what may be pulled, what is refused before it can reach ffmpeg's argv, and how the
alternatives of one `uri` are read."""

from __future__ import annotations

import pytest

from relay.ingest.gate import SourceType
from relay.pull.sources import (
    INVALID_SOURCE_SCHEME,
    MAX_ALTERNATIVES,
    InvalidSource,
    normalise_sources,
    parse_source,
    parse_sources,
    source_type,
)

ACCEPTED = [
    ("rtmp://Example.COM/live/key", "rtmp://example.com/live/key", 1935, SourceType.RTMP),
    ("RTMPS://example.com/live/key", "rtmps://example.com/live/key", 443, SourceType.RTMP),
    ("srt://example.com:9000?streamid=abc&latency=200000", None, 9000, SourceType.SRT),
    ("srt://example.com:9000?mode=caller&passphrase=0123456789", None, 9000, SourceType.SRT),
    ("rtsp://user:pw@cam.example.com/Streaming/Channels/101?transportmode=unicast", None, 554, SourceType.RTSP),
    ("http://example.com/hls/index.m3u8", None, 80, SourceType.HTTPS),
    ("https://example.com:8443/live/stream.ts?token=abc", None, 8443, SourceType.HTTPS),
    ("https://[2001:db8::1]/index.m3u8", None, 443, SourceType.HTTPS),
]


@pytest.mark.parametrize(("uri", "normalised", "port", "kind"), ACCEPTED)
def test_accepted_sources(uri: str, normalised: str | None, port: int, kind: SourceType) -> None:
    source = parse_source(uri)
    assert source.uri == (normalised or uri)
    assert source.port == port
    assert source_type(source) is kind


REFUSED = [
    ("file:///etc/passwd", INVALID_SOURCE_SCHEME),
    ("/etc/passwd", INVALID_SOURCE_SCHEME),
    ("pipe:0", INVALID_SOURCE_SCHEME),
    ("concat:a.ts|b.ts", INVALID_SOURCE_SCHEME),
    ("data:text/plain;base64,AAAA", INVALID_SOURCE_SCHEME),
    ("subfile,,start,0,end,0,,:/etc/passwd", INVALID_SOURCE_SCHEME),
    ("crypto://example.com/x", INVALID_SOURCE_SCHEME),
    ("hls+http://example.com/x.m3u8", INVALID_SOURCE_SCHEME),
    ("ftp://example.com/x.ts", INVALID_SOURCE_SCHEME),
    ("udp://239.0.0.1:1234", INVALID_SOURCE_SCHEME),
    ("-i", INVALID_SOURCE_SCHEME),
    ("srt://example.com:9000?mode=listener", "srt sources support only mode=caller"),
    ("srt://example.com:9000?localport=1", "unsupported srt option 'localport'"),
    ("srt://example.com", "srt uri must name a port"),
    ("rtmp://example.com", "rtmp uri needs an application path, e.g. rtmp://host/app/stream-key"),
    ("rtsp://cam.example.com/stream?udp", "rtsp uri must not choose the transport (the relay pulls over tcp)"),
    ("rtsp://cam.example.com/stream?multicast", "rtsp uri must not choose the transport (the relay pulls over tcp)"),
    ("http://example.com/x.m3u8#frag", "uri must not have a fragment"),
    ("http://a@b@example.com/x.m3u8", "uri host is not a valid host name or address"),
    ("http://example.com\\@evil/x", "uri host is not a valid host name or address"),
    ("http://exämple.com/x", "uri must not contain whitespace, control or non-ASCII characters"),
    ("http://example.com:0/x", "uri port must be a number from 1 to 65535"),
    ("http:///x.m3u8", "uri must name a host"),
]


@pytest.mark.parametrize(("uri", "message"), REFUSED)
def test_refused_sources_name_the_problem_never_the_uri(uri: str, message: str) -> None:
    with pytest.raises(InvalidSource) as caught:
        parse_source(uri)
    assert str(caught.value) == message


def test_alternatives_are_separated_by_spaces_and_kept_in_order() -> None:
    sources = parse_sources("  rtmp://a.example.com/live/k \t srt://b.example.com:9000\nhttps://c.example.com/i.m3u8 ")
    assert [s.host for s in sources] == ["a.example.com", "b.example.com", "c.example.com"]
    assert normalise_sources("RTMP://A.example.com/live/k   srt://b.example.com:9000") == (
        "rtmp://a.example.com/live/k srt://b.example.com:9000"
    )


def test_a_bad_alternative_is_named_by_its_place() -> None:
    with pytest.raises(InvalidSource) as caught:
        parse_sources("rtmp://a.example.com/live/secret-key file:///etc/passwd")
    assert str(caught.value) == f"alternative 2: {INVALID_SOURCE_SCHEME}"
    # RTMP would read text after a space as options ("live=1 playpath=x"): here it is another alternative.
    with pytest.raises(InvalidSource, match="alternative 2"):
        parse_sources("rtmp://a.example.com/live/key playpath=other")


def test_blank_and_too_many_alternatives_are_refused() -> None:
    with pytest.raises(InvalidSource, match="supported protocols"):
        parse_sources("   ")
    many = " ".join(f"rtmp://h{n}.example.com/live/k" for n in range(MAX_ALTERNATIVES + 1))
    with pytest.raises(InvalidSource, match=f"maximum is {MAX_ALTERNATIVES}"):
        parse_sources(many)
