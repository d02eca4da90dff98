"""The command of an SRT push the relay sends itself (relay/push/command.py, `srt_push="relay"`): ffmpeg
muxes MPEG-TS into the relay's pipe and never sees the destination, its passphrase or stream id."""

from __future__ import annotations

import ipaddress

from relay.media.packets import ContainerFormat
from relay.push.command import SRT_PIPE, CommandSettings, build_command
from relay.srt.libsrt import SockOpt

RELAY = CommandSettings(srt_push="relay", srt_peer_idle_timeout_ms=800)
URI = "srt://dest.example:9000?mode=caller&latency=200000&passphrase=0123456789abcdef&streamid=live%2Fkey"


def opt(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_ffmpeg_writes_mpegts_to_the_relays_pipe_and_only_there() -> None:
    command = build_command("ffmpeg", URI, ContainerFormat.MPEGTS, settings=RELAY)
    args = command.argv
    assert args[-1] == SRT_PIPE and args[len(args) - 1 - args[::-1].index("-f") + 1] == "mpegts"
    assert opt(args, "-protocol_whitelist") == "pipe"
    assert opt(args, "-flush_packets") == "1" and opt(args, "-max_interleave_delta") == "1"
    assert "-linger" not in args and "-timeout" not in args  # the caller's business now
    assert not any("dest.example" in a or "0123456789abcdef" in a for a in args)  # off /proc/<pid>/cmdline


def test_the_caller_gets_the_destination_its_options_and_the_relay_settings() -> None:
    checked = ipaddress.ip_address("192.0.2.10")
    output = build_command("ffmpeg", URI, ContainerFormat.FLV, settings=RELAY, connect_to=checked).srt_output
    assert output is not None
    assert (output.host, output.port, output.peer_idle_timeout_ms) == ("192.0.2.10", 9000, 800)
    assert dict(output.text_options)[SockOpt.PASSPHRASE] == "0123456789abcdef"
    assert dict(output.text_options)[SockOpt.STREAMID] == "live/key"
    assert dict(output.int_options)[SockOpt.LATENCY] == 200
    assert output.linger_seconds == RELAY.srt_linger_seconds


def test_ffmpeg_own_output_stays_selectable() -> None:
    command = build_command("ffmpeg", URI, ContainerFormat.MPEGTS, settings=CommandSettings(srt_push="ffmpeg"))
    assert command.srt_output is None and command.argv[-1].startswith("srt://dest.example:9000")


def test_rtmp_is_never_sent_by_the_caller() -> None:
    assert build_command("ffmpeg", "rtmp://h/app/key", ContainerFormat.FLV, settings=RELAY).srt_output is None
