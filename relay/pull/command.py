"""The ffmpeg command of one pull: one source read with `-c copy`, FLV on stdout.

Flags, and why:

Global
  `-hide_banner -nostdin -nostats -loglevel repeat+level+warning`: stderr carries only warnings and
  errors, each tagged with its level, which become the pull's `last_error` (masked). No `-progress`:
  stdout is the media, and the media itself is the progress (relay/pull/runner.py watches it).

Input
  `-protocol_whitelist`: only the protocols this one source needs (`rtmp,tcp`; `rtmps,tls,tcp`; `srt`;
  `rtsp,tcp`; for HTTP(S) `http,https,tls,tcp,crypto`, crypto for AES-128 HLS). A file, pipe, concat
  or data URL that got past relay/pull/sources.py, or that a playlist or a redirect names, is refused
  by ffmpeg itself.
  RTMP(S): `-rtmp_live live` (a live stream, never a recording's seek), `-rw_timeout` so a source that
  stops sending is noticed by ffmpeg too, and `-tcp_nodelay 1` (small control messages not held by
  Nagle). SRT: `-timeout` likewise, in microseconds. RTSP: `-rtsp_transport tcp` (interleaved: one
  outgoing TCP connection, nothing for a firewall to open, no packet loss to conceal) and `-timeout`.
  HTTP(S): `-rw_timeout`, and `-re`: an HLS playlist offers several segments ahead of time and ffmpeg
  would read them at network speed, a burst the hub's subscriber queues would have to skip; paced at
  the source's own rate the destinations get a live stream. A live MPEG-TS over HTTP arrives paced anyway.
  `-probesize`/`-analyzeduration`: enough to find the codec parameters of a source with one keyframe
  a second or two; the defaults (up to 5 s) would only add start-up delay.

Output
  `-map 0:v? -map 0:a? -c copy`: bytes of audio and video unchanged (invariant 1), audio-only and
  video-only sources alike; other streams (subtitles, data) are left out, FLV cannot carry them.
  `-f flv -flvflags no_duration_filesize`: the hub's FLV framing for every source (the RTMP ingest's
  path: onMetaData, sequence headers, a GOP cache of FLV tags), whatever the source's container;
  ffmpeg's FLV muxer turns MPEG-TS's ADTS audio and Annex B video into FLV's forms itself.
  `-flush_packets 1`: each packet reaches the pipe at once instead of in 32 KB blocks, so start-up
  and the GOP the hub caches are not held back.

Where ffmpeg connects (relay/policy.py)
  The runner resolves the host and checks every address before each attempt; RTMP, SRT and RTSP then
  connect to the checked address (RTMP keeps the name in its tcUrl, as a push does). RTMPS and
  HTTP(S) keep the name: TLS needs it for SNI and the certificate, HTTP for its Host header and for the
  segments a playlist names relative to it. For these a name that answers differently within those
  milliseconds can still reach an address the check refused, and the segments or a redirect of an HTTP
  source may name other hosts, which ffmpeg fetches unchecked: an egress firewall closes that (README,
  "Running it on the internet").
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.destinations import Destination, with_address
from relay.policy import IPAddress
from relay.push.command import rtmp_tc_url

_INPUT_PROTOCOLS = {
    "rtmp": "rtmp,tcp",
    "rtmps": "rtmps,tls,tcp",
    "srt": "srt",
    "rtsp": "rtsp,tcp",
    "http": "http,https,tls,tcp,crypto",
    "https": "http,https,tls,tcp,crypto",
}
"""ffmpeg protocols each source scheme may open (HLS playlists may move from http to https)."""
_NAME_KEEPING = frozenset({"rtmps", "http", "https"})
"""Schemes that connect by name even after the check (see the module's docstring)."""


@dataclass(frozen=True, slots=True)
class PullCommandSettings:
    """Tunables of the pull command line; names carry units."""

    read_timeout_seconds: float = 10.0
    """ffmpeg's own read timeout on the source (rw_timeout, SRT's and RTSP's timeout)."""
    probe_size_bytes: int = 1_000_000
    analyze_duration_seconds: float = 2.0


def build_pull_command(
    ffmpeg_path: str,
    source: Destination,
    *,
    connect_to: IPAddress | None = None,
    settings: PullCommandSettings | None = None,
) -> list[str]:
    """The argv of one pull of `source` (a parsed alternative, relay/pull/sources.py).

    `connect_to`: the checked address of the source's host, used instead of the name where the
    protocol allows it. The argv holds the source's secrets: mask before logging.
    """
    settings = settings or PullCommandSettings()
    scheme = source.scheme
    target = source.uri
    timeout_us = str(int(settings.read_timeout_seconds * 1_000_000))
    argv = [ffmpeg_path, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "repeat+level+warning"]
    if connect_to is not None and scheme not in _NAME_KEEPING:
        target = with_address(source, connect_to)
    if scheme in ("rtmp", "rtmps"):
        argv += ["-rtmp_live", "live", "-rw_timeout", timeout_us, "-tcp_nodelay", "1"]
        if target != source.uri:
            argv += ["-rtmp_tcurl", rtmp_tc_url(source)]
    elif scheme == "srt":
        argv += ["-timeout", timeout_us]
    elif scheme == "rtsp":
        argv += ["-rtsp_transport", "tcp", "-timeout", timeout_us]
    else:
        argv += ["-re", "-rw_timeout", timeout_us]
    argv += [
        "-probesize",
        str(settings.probe_size_bytes),
        "-analyzeduration",
        str(int(settings.analyze_duration_seconds * 1_000_000)),
        "-protocol_whitelist",
        _INPUT_PROTOCOLS[scheme],
        "-i",
        target,
        "-map",
        "0:v?",
        "-map",
        "0:a?",
        "-c",
        "copy",
        "-flush_packets",
        "1",
        "-flvflags",
        "no_duration_filesize",
        "-f",
        "flv",
        "pipe:1",
    ]
    return argv
