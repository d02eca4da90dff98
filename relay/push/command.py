"""The ffmpeg command of one push: hub bytes on stdin, `-c copy`, one destination.

Flags that matter in production, and why:

Global
  `-hide_banner -nostdin -nostats -loglevel repeat+level+warning`: stderr carries only warnings and
  errors, each tagged with its level (`[error]`), never the interactive stats line; `-nostdin` because
  stdin is the media pipe, not a console.
  `-progress pipe:1 -stats_period 1`: machine-readable `key=value` progress blocks on stdout, separate
  from the log lines on stderr; one per second is enough for status and stall detection.

Input (`-f flv` or `-f mpegts` on `pipe:0`)
  `-probesize 500000 -analyzeduration 500000`: the hub hands over the codec configuration and a whole
  GOP at once, so a short probe finds every stream; the defaults (5 MB, up to 5 s of media) would only
  add start-up delay. Not `-fflags +nobuffer`: it discards the packets read while probing, which are
  exactly the cached GOP that lets the destination start on a keyframe (measured: the first GOP was
  lost). Never `-re`: the hub already delivers at the source's pace.
  `-codec_whitelist <audio decoders>` for FLV with H.264 or HEVC (or a codec not known yet, as when a
  push starts with its stream: an FLV stream's video is then one of those two): probing opens a decoder per stream and
  decodes until it knows the pixel and sample formats, and a 1080p H.264 keyframe costs ~25 ms of CPU
  in every push's start-up (16 pushes going live at once: ~0.4 s of CPU). No video decoder may open, so
  the probe takes the video's parameters from the FLV headers and the parser and never decodes a frame
  (`-c copy` needs no decoder). The audio decoders stay allowed: without them the muxer's onMetaData
  would say 44100 Hz (the FLV tag's flag) for 48 kHz AAC, and the output must not change by a byte
  (checked: tests/push/test_probe.py, and `make bench`'s bit-identical video). Measured on the bench's
  1080p30 clip: 42 -> 17 ms of CPU per push start. Not for MPEG-TS input or other video codecs (not
  checked).

Output
  `-map 0:v? -map 0:a? -c copy`: bytes of audio and video unchanged (architecture invariant 1); the `?`
  keeps audio-only and video-only sources working.
  no_audio: "drop" adds `-an`; "silence" maps a lavfi `anullsrc` input encoded with `aac` (the one
  encoding the relay ever does) and ends with the video thanks to `-shortest`.
  RTMP(S): `-f flv -flvflags no_duration_filesize` (a live FLV cannot seek back to patch duration and
  size), `-rw_timeout` so a destination that stops reading is noticed (the push then restarts) instead
  of blocking forever. `-tcp_nodelay 1`: without it Nagle's algorithm holds the small packets of the RTMP
  handshake and of each audio frame; `make bench` measured start-up behind a direct receiver going from
  188 ms to 74 ms at 4 destinations, and a destination added while live getting its first keyframe in
  0.04 s instead of 0.17 s, for about 0.06 CPU s/min per push. `-rtmp_enhanced_codecs` only for
  HEVC/AV1/VP9 sources: announcing FourCCs in `connect` makes some platforms refuse an ordinary H.264
  stream.
  `-send_buffer_size` (RTMP(S), `CommandSettings.tcp_send_buffer_bytes`, 256 KiB): ffmpeg's rtmp protocol
  passes it down to its tcp one (checked with `ss -tm`: `tb524288`, Linux doubles it and stops autotuning).
  Measured behind a 2 Mbit/s `tbf` link with a 2.77 Mbit/s stream (tests/network, 36 s): autotuned, up to
  645 kB sat unacknowledged in the kernel (1.9 s of video; the issue saw autotuning reach 4 MB, 11 s, over a
  longer run); bounded, 344 kB (1.0 s). 512 KiB still carries 25 Mbit/s to a destination 150 ms away.
  What remains is counted in the status's `behind_live_seconds` (relay/supervisor/push_runner.py).
  RTMPS: `-tls_verify 1 -ca_file <bundle>` by default (certifi's bundle, else the system's); a restream
  may opt out for self-signed test servers.
  `-protocol_whitelist`: only the protocols this one output needs (`rtmp,tcp`; `rtmps,tls,tcp`; `srt`,
  whose UDP is libsrt's own): a file, pipe, http or concat URL that got past relay/destinations.py, or
  that a server's redirect names, is refused by ffmpeg itself.
  SRT through the relay (`srt_push="relay"`, the default): `-f mpegts` to `pipe:<fd>`, a pipe of its own
  (stdout carries the progress), read by the relay's SRT caller (relay/srt/caller.py), which connects with
  the URI's options and sends 1316-byte messages; `-protocol_whitelist pipe`; `-flush_packets 1` so each
  packet reaches the pipe (and the destination) when muxed, as ffmpeg's own SRT output does with its
  1316-byte I/O buffer; `-max_interleave_delta 1` as below. The caller sets the peer idle timeout ffmpeg
  does not expose (a dead destination noticed in 1 s, not 5 s), waits for the last packets' acks at
  the end, and reports the link's statistics.
  SRT through ffmpeg (`srt_push="ffmpeg"`, or libsrt not loadable): `-f mpegts`, the URI passed as given
  (latency, pkt_size, passphrase, streamid are the user's);
  `-timeout` bounds a blocked send; `-linger 2` keeps the socket while sent packets are acknowledged.
  `-max_interleave_delta 1` (microseconds): write each packet as soon as it arrives instead of holding
  video until an audio packet with a later timestamp comes (an audio PES of an MPEG-TS source spans up to
  ~250 ms): ffmpeg's libsrt socket is non-blocking, so libsrt never transmits what is queued right before
  `srt_close` (strace: no data datagram after the close, `-linger` or not); whatever ffmpeg still held
  at stdin EOF was lost. Measured on a clean end of an SRT-ingested stream: 0-2 video frames lost
  instead of 5-7 (what may remain is the last PES, which the MPEG-TS demuxer completes only at EOF); none
  for an RTMP-ingested one. The input is already interleaved by the publisher. PAT/PMT are repeated by
  the mpegts muxer; parameter sets before each keyframe come from the automatic
  `h264_mp4toannexb`/`hevc_mp4toannexb` for FLV sources and are already in-band for MPEG-TS sources,
  so `dump_extra` is not added (for TS sources it would rewrite video packets that the relay promises to pass
  unchanged).

Where ffmpeg connects (relay/policy.py)
  With a destination policy the runner resolves the host and checks every address first; the command
  then names the checked address so that ffmpeg does not resolve the name again (a second answer
  could differ: DNS rebinding). RTMP: the address replaces the host and `-rtmp_tcurl` keeps the name
  in the `connect` command's tcUrl, exactly as ffmpeg would have written it (`rtmp://name:port/app`):
  servers that pick a virtual host from it (SRS, CDN edges) see no difference. SRT: the address
  replaces the host; nothing else in the protocol carries it.
  RTMPS keeps the name. ffmpeg's TLS would verify the certificate against a name given apart from an
  address (`-verifyhost`, checked with ffmpeg 9), but it sends no SNI when the URL holds an address
  (tls_openssl.c: `if (!c->listen && !c->numerichost) SSL_set_tlsext_host_name`), and the platforms
  behind shared TLS front ends need SNI to answer with their certificate. So an RTMPS push is checked
  and then resolved again by ffmpeg: a name that answers differently within those milliseconds can
  still reach an address the check refused (with `tls_verify` on, the TLS handshake, and nothing of
  RTMP, reaches it unless it holds a certificate for that name). An egress firewall closes that.

The destination URI, with its key, is on ffmpeg's argv: ffmpeg has no way to take an output URL or a
protocol option from a file descriptor (`-/option file` covers only its own option table), so the key
is visible in /proc/<pid>/cmdline to other users of the host. Everything the relay logs is masked.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import ffmpeg

from relay.destinations import (
    SCHEME_CONTAINERS,
    Destination,
    InvalidDestination,
    parse_destination,
    with_address,
)
from relay.media.packets import ContainerFormat
from relay.policy import IPAddress
from relay.srt.caller import CallerConfig, caller_libsrt_available

_ENHANCED_CODECS = {
    "hevc": "hvc1",
    "h265": "hvc1",
    "hvc1": "hvc1",
    "av1": "av01",
    "av01": "av01",
    "vp9": "vp09",
    "vp09": "vp09",
}
_OUTPUT_PROTOCOLS = {"rtmp": "rtmp,tcp", "rtmps": "rtmps,tls,tcp", "srt": "srt"}
"""ffmpeg protocols each destination scheme opens (rtmps is rtmp over ffmpeg's tls, over tcp)."""
_PROBE_DECODERS = ",".join(
    (
        *("aac", "aac_fixed", "aac_latm", "mp3float", "mp3", "mp2float", "mp2", "ac3", "ac3_fixed", "eac3"),
        *("opus", "libopus", "flac", "vorbis", "speex", "libspeex", "nellymoser", "adpcm_swf"),
        *("pcm_s16le", "pcm_s16be", "pcm_u8", "pcm_alaw", "pcm_mulaw"),
    )
)
"""Decoders a push's probe may open on an FLV input with H.264 or HEVC video: every audio decoder an FLV (or
enhanced RTMP) stream can need, no video decoder (see the module's docstring)."""
_PROBE_WITHOUT_DECODING = {"h264", "avc1", "hevc", "h265", "hvc1"}
"""Video codecs whose parameters ffmpeg's probe gets from an FLV input without decoding a frame
(checked by tests/push/test_probe.py)."""
_CA_CANDIDATES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


class NoAudioMode(StrEnum):
    DROP = "drop"
    SILENCE = "silence"


class UnsupportedDestination(ValueError):
    """The URI's scheme is not one we push to (rtmp, rtmps, srt)."""


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Tunables of the ffmpeg command line; names carry units."""

    rw_timeout_seconds: float = 10.0
    srt_timeout_seconds: float = 10.0
    srt_linger_seconds: int = 2
    """On a clean end, keep the SRT socket until sent packets are acknowledged (libsrt drops them in live
    mode otherwise: the destination lost the last frames in our tests)."""
    probe_size_bytes: int = 500_000
    analyze_duration_seconds: float = 0.5
    probe_decoders: str | None = _PROBE_DECODERS
    """FLV input with H.264/HEVC: the only decoders the probe may open (`-codec_whitelist`); None: any."""
    progress_period_seconds: float = 1.0
    silence_sample_rate_hz: int = 48_000
    silence_bitrate_bps: int = 128_000
    tcp_send_buffer_bytes: int | None = 256 * 1024
    """RTMP(S): cap the kernel send buffer (`-send_buffer_size`, which ffmpeg's rtmp protocol passes down
    to its tcp one: checked with `ss -tm`, Linux then doubles it, `tb524288`, and stops autotuning it).
    None keeps Linux autotuning (up to tcp_wmem's 4 MB), which hid 11 s of media behind a 2 Mbit/s link.
    512 KiB of buffer still carries 25 Mbit/s to a destination 150 ms away (buffer / RTT)."""
    ca_file: str | None = None
    """CA bundle for RTMPS; None finds one (certifi, then the system's)."""
    srt_push: str = "ffmpeg"
    """Who sends to an SRT destination: "relay" (its own libsrt caller, fed by ffmpeg through a pipe) or
    "ffmpeg" (ffmpeg's libsrt output). "relay" falls back to "ffmpeg" when libsrt cannot be loaded. The
    relay's setting (RELAY_SRT_PUSH, relay/config.py) defaults to "relay"; this bare default is ffmpeg's
    output, the command the command-line tests pin down."""
    srt_peer_idle_timeout_ms: int = 1000
    """The relay's SRT caller: how long no acknowledgement may come while media waits for one before the
    link counts as broken and the push restarts (ffmpeg's output: ~5 s, libsrt's floor)."""


SRT_PIPE = "pipe:3"
"""The output of an SRT push sent by the relay, in the argv as built; the process replaces it with the
write end of the pipe it makes (`relay.push.srt_process`)."""


@dataclass(frozen=True, slots=True)
class PushCommand:
    """What a push runs: the argv (secrets included: mask before logging) and the output format."""

    argv: list[str]
    output_format: str
    srt_output: CallerConfig | None = None
    """Set when the relay itself sends to the SRT destination: ffmpeg writes to `SRT_PIPE`."""


def find_ca_file() -> str | None:
    """certifi's bundle if installed, else the first system bundle that exists."""
    try:
        import certifi
    except ImportError:  # certifi is optional
        pass
    else:
        path: str = certifi.where()
        if os.path.exists(path):
            return path
    for path in _CA_CANDIDATES:
        if os.path.exists(path):
            return path
    return None


def build_command(
    ffmpeg_path: str,
    uri: str,
    container: ContainerFormat,
    *,
    no_audio: bool = False,
    no_audio_mode: str = "drop",
    tls_verify: bool = True,
    video_codec: str | None = None,
    settings: CommandSettings | None = None,
    connect_to: IPAddress | None = None,
) -> PushCommand:
    """The argv for one push; raises UnsupportedDestination for a URI we cannot push to.

    `connect_to`: the checked address of the URI's host, for ffmpeg to connect to instead of resolving
    the name itself (ignored for RTMPS, see the module's docstring).
    """
    settings = settings or CommandSettings()
    scheme = urlsplit(uri, allow_fragments=False).scheme.lower()
    output = SCHEME_CONTAINERS.get(scheme)
    if output is None:
        raise UnsupportedDestination(f"unsupported destination scheme {scheme or '(none)'!r}")
    try:
        destination = parse_destination(uri, check_options=False)
    except InvalidDestination as exc:
        raise UnsupportedDestination(str(exc)) from None
    target = destination.uri  # scheme and host in lower case: ffmpeg's protocol names are
    if connect_to is not None and scheme != "rtmps":
        target = with_address(destination, connect_to)
    mode = NoAudioMode(no_audio_mode) if no_audio else None
    srt_output: CallerConfig | None = None
    if scheme == "srt" and settings.srt_push == "relay" and caller_libsrt_available():
        srt_output = CallerConfig.from_destination(
            destination,
            host=str(connect_to) if connect_to is not None else None,
            peer_idle_timeout_ms=settings.srt_peer_idle_timeout_ms,
            linger_seconds=settings.srt_linger_seconds,
            send_timeout_ms=int(settings.srt_timeout_seconds * 1000),
        )
        target = SRT_PIPE

    probe: dict[str, Any] = {}
    if (
        settings.probe_decoders
        and container is ContainerFormat.FLV
        and (video_codec is None or video_codec.lower() in _PROBE_WITHOUT_DECODING)
    ):
        probe["codec_whitelist"] = settings.probe_decoders
    source = ffmpeg.input(
        "pipe:0",
        f=container.value,
        probesize=settings.probe_size_bytes,
        analyzeduration=int(settings.analyze_duration_seconds * 1_000_000),
        **probe,
    )
    streams: list[Any] = [source["v?"]]
    out: dict[str, Any] = {}
    if mode is None:
        streams.append(source["a?"])
        out["c"] = "copy"
    elif mode is NoAudioMode.DROP:
        out["c"] = "copy"
        out["an"] = None
    else:
        silence = ffmpeg.input(
            f"anullsrc=channel_layout=stereo:sample_rate={settings.silence_sample_rate_hz}", f="lavfi"
        )
        streams.append(silence["a"])
        out.update({"c:v": "copy", "c:a": "aac", "b:a": settings.silence_bitrate_bps, "shortest": None})

    output_format = output.value
    if output is ContainerFormat.FLV:
        out["flvflags"] = "no_duration_filesize"
        out["rw_timeout"] = int(settings.rw_timeout_seconds * 1_000_000)
        out["tcp_nodelay"] = 1
        if settings.tcp_send_buffer_bytes:
            out["send_buffer_size"] = settings.tcp_send_buffer_bytes
        if target != destination.uri and scheme == "rtmp":
            out["rtmp_tcurl"] = rtmp_tc_url(destination)
        fourcc = _ENHANCED_CODECS.get((video_codec or "").lower())
        if fourcc is not None:
            out["rtmp_enhanced_codecs"] = fourcc
        if scheme == "rtmps":
            out["tls_verify"] = 1 if tls_verify else 0
            ca_file = settings.ca_file or find_ca_file()
            if tls_verify and ca_file:
                out["ca_file"] = ca_file
    elif srt_output is not None:
        out["flush_packets"] = 1
        out["max_interleave_delta"] = 1
    else:
        out["timeout"] = int(settings.srt_timeout_seconds * 1_000_000)
        out["linger"] = settings.srt_linger_seconds
        out["max_interleave_delta"] = 1
    out["protocol_whitelist"] = "pipe" if srt_output is not None else _OUTPUT_PROTOCOLS[scheme]
    out["f"] = output_format

    global_args: Sequence[str] = (
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "repeat+level+warning",
        "-progress",
        "pipe:1",
        "-stats_period",
        f"{settings.progress_period_seconds:g}",
    )
    argv = ffmpeg.output(*streams, target, **out).compile(cmd=[ffmpeg_path, *global_args])
    return PushCommand(argv=[str(a) for a in argv], output_format=output_format, srt_output=srt_output)


def rtmp_tc_url(destination: Destination) -> str:
    """The tcUrl ffmpeg sends in `connect` for this destination: `rtmp://host:port/app`, with the app
    split from the path by ffmpeg's own rule (libavformat/rtmpproto.c, rtmp_open)."""
    _, _, rest = destination.uri.partition("://")
    cut = [i for i in (rest.find("/"), rest.find("?")) if i >= 0]
    path = rest[min(cut) :] if cut else ""
    host = f"[{destination.host}]" if ":" in destination.host else destination.host
    return f"{destination.scheme}://{host}:{destination.port}/{_rtmp_app(path)}"


def _rtmp_app(path: str) -> str:
    # ffmpeg 7 to 9: with `slist=` in the query the whole path is the application; `/ondemand/...` is
    # "ondemand"; a single element is the application; otherwise the first element, or the first two
    # when a third follows (an application instance) and no ':' (as in `mp4:name`) comes before it.
    # tests/push/test_command_tcurl.py holds this against the tcUrl the shipped ffmpeg really sends.
    query_at = path.find("?")
    if query_at >= 0 and "slist=" in path[query_at:]:
        return path[1:]
    if path.startswith("/ondemand/"):
        return "ondemand"
    first = path.find("/", 1 if path else 0)
    if first < 0:
        return path[1:]
    colon, second = path.find(":", first + 1), path.find("/", first + 1)
    if second < 0 or 0 <= colon < second:
        return path[1:first]
    return path[1:second]
