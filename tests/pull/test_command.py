"""The pull's ffmpeg command: the protocols it may open, where it connects, and FLV on stdout."""

from __future__ import annotations

import ipaddress

import pytest

from relay.pull.command import PullCommandSettings, build_pull_command
from relay.pull.sources import parse_source

CHECKED = ipaddress.ip_address("203.0.113.7")


def _after(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


@pytest.mark.parametrize(
    ("uri", "protocols"),
    [
        ("rtmp://example.com/live/key", "rtmp,tcp"),
        ("rtmps://example.com/live/key", "rtmps,tls,tcp"),
        ("srt://example.com:9000", "srt"),
        ("rtsp://example.com/stream", "rtsp,tcp"),
        ("http://example.com/i.m3u8", "http,https,tls,tcp,crypto"),
        ("https://example.com/i.m3u8", "http,https,tls,tcp,crypto"),
    ],
)
def test_only_the_sources_own_protocols_may_be_opened(uri: str, protocols: str) -> None:
    argv = build_pull_command("ffmpeg", parse_source(uri))
    assert _after(argv, "-protocol_whitelist") == protocols
    assert argv.index("-protocol_whitelist") < argv.index("-i"), "an input option, so it binds the input"
    # Copy, FLV on stdout, nothing else written anywhere.
    assert _after(argv, "-c") == "copy" and _after(argv, "-f") == "flv" and argv[-1] == "pipe:1"
    assert "-flush_packets" in argv and argv.count("-i") == 1


def test_rtmp_connects_to_the_checked_address_and_keeps_the_name_in_tcurl() -> None:
    argv = build_pull_command("ffmpeg", parse_source("rtmp://example.com/live/key"), connect_to=CHECKED)
    assert _after(argv, "-i") == "rtmp://203.0.113.7:1935/live/key"
    assert _after(argv, "-rtmp_tcurl") == "rtmp://example.com:1935/live"
    assert _after(argv, "-rtmp_live") == "live"


def test_srt_and_rtsp_connect_to_the_checked_address() -> None:
    srt = build_pull_command("ffmpeg", parse_source("srt://example.com:9000?streamid=a"), connect_to=CHECKED)
    assert _after(srt, "-i") == "srt://203.0.113.7:9000?streamid=a"
    rtsp = build_pull_command("ffmpeg", parse_source("rtsp://u:p@example.com/s"), connect_to=CHECKED)
    assert _after(rtsp, "-i") == "rtsp://u:p@203.0.113.7:554/s"
    assert _after(rtsp, "-rtsp_transport") == "tcp"


@pytest.mark.parametrize("uri", ["rtmps://example.com/live/key", "https://example.com/i.m3u8"])
def test_tls_and_http_keep_the_name(uri: str) -> None:
    argv = build_pull_command("ffmpeg", parse_source(uri), connect_to=CHECKED)
    assert _after(argv, "-i") == uri


def test_http_sources_are_read_at_their_own_pace_and_every_source_has_a_read_timeout() -> None:
    settings = PullCommandSettings(read_timeout_seconds=4.0)
    http = build_pull_command("ffmpeg", parse_source("http://example.com/i.m3u8"), settings=settings)
    assert "-re" in http and _after(http, "-rw_timeout") == "4000000"
    for uri, flag in (
        ("rtmp://e.com/a/b", "-rw_timeout"),
        ("srt://e.com:1", "-timeout"),
        ("rtsp://e.com/s", "-timeout"),
    ):
        argv = build_pull_command("ffmpeg", parse_source(uri), settings=settings)
        assert _after(argv, flag) == "4000000" and "-re" not in argv
