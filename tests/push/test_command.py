from __future__ import annotations

import pytest

from relay.destinations import SCHEME_CONTAINERS, parse_destination
from relay.media.packets import ContainerFormat
from relay.push.command import CommandSettings, UnsupportedDestination, build_command
from relay.push.progress import ErrorKind, ProgressParser, classify_error


def argv(uri: str, container: ContainerFormat = ContainerFormat.FLV, **kw: object) -> list[str]:
    return build_command("ffmpeg", uri, container, **kw).argv  # type: ignore[arg-type]


def opt(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_rtmp_flv_copy() -> None:
    a = argv("rtmp://h/live/key")
    assert a[0] == "ffmpeg" and a[-1] == "rtmp://h/live/key"
    assert a[a.index("-i") - 1] == "500000" or "-probesize" in a
    assert opt(a, "-f") == "flv" and a[a.index("-i") + 1] == "pipe:0"
    assert opt(a, "-c") == "copy" and opt(a, "-flvflags") == "no_duration_filesize"
    assert opt(a, "-rw_timeout") == "10000000"
    assert opt(a, "-progress") == "pipe:1" and "-nostats" in a and "-nostdin" in a
    assert "-re" not in a and "-rtmp_enhanced_codecs" not in a and "-tls_verify" not in a
    assert [a[i + 1] for i, x in enumerate(a) if x == "-map"] == ["0:v?", "0:a?"]


def test_mpegts_source_to_srt() -> None:
    uri = "srt://h:9000?mode=caller&latency=200000&pkt_size=1316"
    a = argv(uri, ContainerFormat.MPEGTS)
    assert a[a.index("-i") - 1] != "flv" and "mpegts" in a
    assert (a[-1] == uri and a[-3:-1] == ["-timeout", "10000000"]) or opt(a, "-timeout") == "10000000"
    assert a[len(a) - 1 - a[::-1].index("-f") + 1] == "mpegts"
    assert "-flvflags" not in a
    # Nothing held back at EOF: libsrt drops what ffmpeg queues right before its (non-blocking) close.
    assert opt(a, "-max_interleave_delta") == "1" and "-max_interleave_delta" not in argv("rtmp://h/live/k")


def test_srt_buffer_options_reach_ffmpeg_in_the_uri() -> None:
    # ffmpeg's libsrt reads send_buffer_size / recv_buffer_size from the URL and sets the UDP socket's
    # SO_SNDBUF / SO_RCVBUF (seen with strace): the URI goes to ffmpeg as accepted.
    uri = "srt://h:9000?mode=caller&send_buffer_size=1048576&recv_buffer_size=524288"
    a = argv(uri, ContainerFormat.MPEGTS)
    assert a[-1] == uri


def test_rtmps_verifies_by_default_and_may_opt_out() -> None:
    a = argv("rtmps://h:443/app/key", settings=CommandSettings(ca_file="/tmp/ca.pem"))
    assert opt(a, "-tls_verify") == "1" and opt(a, "-ca_file") == "/tmp/ca.pem"
    b = argv("rtmps://h:443/app/key", tls_verify=False)
    assert opt(b, "-tls_verify") == "0" and "-ca_file" not in b


def test_enhanced_rtmp_only_for_new_codecs() -> None:
    assert opt(argv("rtmp://h/a/k", video_codec="hevc"), "-rtmp_enhanced_codecs") == "hvc1"
    assert opt(argv("rtmp://h/a/k", video_codec="AV1"), "-rtmp_enhanced_codecs") == "av01"
    assert "-rtmp_enhanced_codecs" not in argv("rtmp://h/a/k", video_codec="h264")


def test_no_audio_modes() -> None:
    drop = argv("rtmp://h/a/k", no_audio=True, no_audio_mode="drop")
    assert "-an" in drop and [drop[i + 1] for i, x in enumerate(drop) if x == "-map"] == ["0:v?"]
    silence = argv("rtmp://h/a/k", no_audio=True, no_audio_mode="silence")
    assert "lavfi" in silence and any(x.startswith("anullsrc") for x in silence)
    assert opt(silence, "-c:a") == "aac" and opt(silence, "-c:v") == "copy" and "-shortest" in silence
    assert [silence[i + 1] for i, x in enumerate(silence) if x == "-map"] == ["0:v?", "1:a"]
    with pytest.raises(ValueError):
        argv("rtmp://h/a/k", no_audio=True, no_audio_mode="loud")


@pytest.mark.parametrize(
    ("uri", "protocols"),
    [("rtmp://h/a/k", "rtmp,tcp"), ("RTMPS://h/a/k", "rtmps,tls,tcp"), ("srt://h:9000?mode=caller", "srt")],
)
def test_the_output_may_open_only_its_own_protocols(uri: str, protocols: str) -> None:
    a = argv(uri)
    assert opt(a, "-protocol_whitelist") == protocols and a.index("-protocol_whitelist") > a.index("-i")


def test_unsupported_scheme() -> None:
    with pytest.raises(UnsupportedDestination):
        argv("http://h/x")


@pytest.mark.parametrize(
    ("uri", "muxer"), [("rtmp://h/a/k", "flv"), ("RTMPS://h/a/k", "flv"), ("srt://h:9000", "mpegts")]
)
def test_output_container_follows_the_scheme(uri: str, muxer: str) -> None:
    # One rule (relay.destinations.SCHEME_CONTAINERS) for the API's check and ffmpeg's muxer.
    assert build_command("ffmpeg", uri, ContainerFormat.FLV).output_format == muxer
    assert SCHEME_CONTAINERS[parse_destination(uri).scheme].value == muxer


def test_progress_parser() -> None:
    p = ProgressParser()
    lines = [
        "frame=10",
        "fps=30.0",
        "bitrate=1200.5kbits/s",
        "total_size=4096",
        "out_time_us=333000",
        "out_time_ms=333000",
        "speed=1.01x",
        "progress=continue",
    ]
    out = [p.feed_line(x) for x in lines]
    assert out[:-1] == [None] * 7
    last = out[-1]
    assert last is not None and last.frame == 10 and last.total_size_bytes == 4096
    assert last.out_time_us == 333000 and last.bitrate_kbps == 1200.5 and last.speed == 1.01
    assert not last.ended
    end = [p.feed_line(x) for x in ["bitrate=N/A", "out_time_us=N/A", "progress=end"]][-1]
    assert end is not None and end.ended and end.bitrate_kbps is None and end.out_time_us == 0


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        ("[rtmp @ 0x1] [error] Server error: NetStream.Publish.BadName", ErrorKind.REFUSED),
        ("[rtmp @ 0x1] [error] Server error: Authentication failed", ErrorKind.REFUSED),
        ("[https @ 0x1] [error] HTTP error 403 Forbidden", ErrorKind.REFUSED),
        (
            "SRT.cn: processAsyncConnectRequest: REJECT reported from HS processing: Incorrect passphrase",
            ErrorKind.REFUSED,
        ),
        ("[srt @ 0x1] [error] Connection rejected, reason: REJ_BADSECRET", ErrorKind.REFUSED),
        ("[out#0/flv @ 0x1] [fatal] Error opening output rtmp://h/a/***: Connection refused", ErrorKind.OTHER),
        ("[flv @ 0x1] [warning] Non-monotonic DTS", None),
    ],
)
def test_classify_error(line: str, kind: ErrorKind | None) -> None:
    assert classify_error(line) is kind
