"""Where the push command connects: the checked address instead of the name (relay/push/command.py), the
tcUrl kept as ffmpeg would write it, RTMPS keeping its name for SNI, and scheme normalisation."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.destinations import parse_destination
from relay.media.packets import ContainerFormat
from relay.push.command import CommandSettings, build_command, rtmp_tc_url
from relay.rtmp.events import NEED_DATA, ConnectRequested
from relay.rtmp.session import ServerSession
from tests.support import FFMPEG, Clip, MediaCache, run_process

LOCAL = ipaddress.ip_address("127.0.0.1")


def argv(uri: str, container: ContainerFormat = ContainerFormat.FLV, **kw: object) -> list[str]:
    return build_command("ffmpeg", uri, container, **kw).argv  # type: ignore[arg-type]


def opt(args: list[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


def test_an_uppercase_scheme_reaches_ffmpeg_in_lower_case() -> None:
    # ffmpeg's protocol lookup is case-sensitive: `RTMP://` failed on every start, retried for ever.
    assert argv("RTMP://H/Live/Key")[-1] == "rtmp://h/Live/Key"
    assert argv("SRT://H:9000?streamid=X", ContainerFormat.MPEGTS)[-1] == "srt://h:9000?streamid=X"


def test_rtmp_connects_to_the_checked_address_and_keeps_the_name_in_tcurl() -> None:
    a = argv("rtmp://Media.Example/live/sekrit?x=1", connect_to=ipaddress.ip_address("203.0.113.9"))
    assert a[-1] == "rtmp://203.0.113.9:1935/live/sekrit?x=1"
    assert opt(a, "-rtmp_tcurl") == "rtmp://media.example:1935/live"


def test_an_address_in_the_uri_needs_no_tcurl() -> None:
    a = argv("rtmp://127.0.0.1:1935/live/key", connect_to=LOCAL)
    assert a[-1] == "rtmp://127.0.0.1:1935/live/key" and "-rtmp_tcurl" not in a


def test_srt_connects_to_the_checked_address() -> None:
    uri = "srt://media.example:5001?streamid=1#tok&latency=200000"
    a = argv(uri, ContainerFormat.MPEGTS, connect_to=ipaddress.ip_address("2001:db8::9"))
    assert a[-1] == "srt://[2001:db8::9]:5001?streamid=1#tok&latency=200000" and "-rtmp_tcurl" not in a


def test_rtmps_keeps_its_name_for_sni_and_the_certificate_check() -> None:
    a = argv("rtmps://live.example:443/app/key", connect_to=LOCAL, settings=CommandSettings(ca_file="/ca.pem"))
    assert a[-1] == "rtmps://live.example:443/app/key"
    assert opt(a, "-tls_verify") == "1" and "-rtmp_tcurl" not in a


@pytest.mark.parametrize(
    ("path", "app"),
    [
        ("/app", "app"),
        ("/app/key", "app"),
        ("/app/inst/key", "app/inst"),
        ("/app/mp4:key/x", "app"),
        ("/ondemand/x", "ondemand"),
        ("/app?x=1/key", "app?x=1"),
        ("/live/key?s_bl=1&a=b", "live"),
        ("/a/b/c/d", "a/b"),
        ("/app/key?slist=foo&x=1", "app/key?slist=foo&x=1"),
    ],
)
def test_tcurl_splits_the_application_as_ffmpeg_does(path: str, app: str) -> None:
    assert rtmp_tc_url(parse_destination(f"rtmp://Name.Example{path}")) == f"rtmp://name.example:1935/{app}"


@contextlib.asynccontextmanager
async def tcurl_recorder() -> AsyncIterator[tuple[int, list[str]]]:
    """An RTMP server on 127.0.0.1 (our sans-I/O session) that records the tcUrl of each `connect`."""
    seen: list[str] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ServerSession()
        try:
            while data := await reader.read(65536):
                session.receive_data(data)
                while (event := session.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectRequested):
                        seen.append(event.tc_url)
                        return  # enough: close, ffmpeg gives up
                writer.write(session.data_to_send())
                await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], seen
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.integration
@pytest.mark.parametrize("path", ["/app", "/live/key", "/app/inst/key", "/app/mp4:key/x", "/live/key?s_bl=1&a=b"])
async def test_the_relays_tcurl_is_the_one_ffmpeg_sends_for_the_name(
    path: str, media_cache: MediaCache, tmp_path: Path
) -> None:
    clip = media_cache.clip(Clip(seconds=1.0)).read_bytes()
    async with tcurl_recorder() as (port, seen):
        named = f"rtmp://localhost:{port}{path}"
        # ffmpeg given the name writes its own tcUrl ...
        await run_process(
            [FFMPEG, "-hide_banner", "-f", "flv", "-i", "pipe:0", "-c", "copy", "-f", "flv", named],
            stdin_data=clip,
            limit_seconds=20,
        )
        # ... the relay's command connects to the checked address and must send the same one.
        command = build_command(FFMPEG, named, ContainerFormat.FLV, connect_to=LOCAL)
        assert command.argv[-1] == f"rtmp://127.0.0.1:{port}{path}"
        await run_process(command.argv, stdin_data=clip, limit_seconds=20)
    assert len(seen) == 2 and seen[0] == seen[1] == rtmp_tc_url(parse_destination(named)), seen
