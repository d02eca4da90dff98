"""No secret in any log line of a real relay run where they were used and refused, and none in a push's
environment: stream tokens (as `<id>?`, `<id>#`, `<id>%23`, written the wrong way round), SRT
passphrases, destination keys (a trailing slash, several segments, a one-character key), the API key."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from relay.srt.libsrt import LibSrt, SockOpt, SrtError, TransType
from tests.rtmp.wire import ServerReplies, publish_script, simple_c1
from tests.support import ADMIN_KEY, Publisher, RelayProcess, children_of, free_port, pattern_publish_argv, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

PASSPHRASE = "srt-passphrase-0042"
WRONG_TOKEN = "wrong-token-0123456789"
KEYS = ("trailing-slash-key-1", "deep-key-2", "replaced-key-3")


async def rtmp_publish(port: int, name: str) -> list[str]:
    """Ask to publish as `name` over a raw RTMP session (any key, as an encoder would send it);
    returns the server's status codes once it accepted or refused."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = ServerReplies()
    writer.write(b"\x03" + simple_c1() + simple_c1(5) + b"".join(publish_script(name, app="in")))
    try:
        async with asyncio.timeout(10):
            while not {"NetStream.Publish.Start", "NetStream.Publish.BadName"} & set(replies.status_codes()):
                data = await reader.read(65536)
                if not data:
                    break
                replies.feed(data)
    finally:
        writer.close()
    return replies.status_codes()


def srt_connect(port: int, streamid: str, passphrase: str) -> bool:
    """One SRT caller through the relay's own binding: True if the relay accepted it (then closed)."""
    lib = LibSrt.load()
    lib.startup()
    try:
        sock = lib.create_socket()
        lib.set_int(sock, SockOpt.TRANSTYPE, TransType.LIVE)
        lib.set_int(sock, SockOpt.CONNTIMEO, 3000)
        lib.set_str(sock, SockOpt.STREAMID, streamid)
        lib.set_str(sock, SockOpt.PASSPHRASE, passphrase)
        try:
            lib.connect(sock, "127.0.0.1", port)
        except SrtError:
            return False
        finally:
            lib.close(sock)
        return True
    finally:
        lib.cleanup()


@contextlib.asynccontextmanager
async def silent_destination() -> AsyncIterator[int]:
    """A TCP port that accepts and never answers: a push to it stays in its RTMP handshake (alive)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in held:
            writer.close()
        server.close()


def push_pid(relay: RelayProcess, port: int) -> int | None:
    assert relay.process is not None
    needle = re.compile(rf"127\.0\.0\.1:{port}/")
    found = [pid for pid, cmd in children_of(relay.process.pid).items() if "pipe:0" in cmd and needle.search(cmd)]
    return found[0] if found else None


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(item.decode().split("=", 1) for item in raw.split(b"\0") if item)


async def call(relay: RelayProcess, method: str, path: str, body: Any = None) -> Any:
    result = await asyncio.to_thread(relay.api, method, path, body)
    assert result.status in (200, 204), f"{method} {path}: {result.status} {result.body}"
    return result.body


async def test_no_secret_reaches_the_log_or_a_push_environment(relay_process: RelayProcess) -> None:
    relay = relay_process
    stream = await call(relay, "POST", "/streaming/streams", {"name": "show", "srt_passphrase": PASSPHRASE})
    sid, token = stream["id"], stream["token"]
    closed_port = free_port()
    async with silent_destination() as silent_port:
        refused = await call(
            relay,
            "POST",
            "/streaming/restreams",
            {"restream": {"stream_id": sid, "uri": f"rtmp://127.0.0.1:{closed_port}/live2/{KEYS[0]}/"}},
        )
        await call(
            relay,
            "POST",
            "/streaming/restreams",
            {"restream": {"stream_id": sid, "uri": f"rtmp://127.0.0.1:{silent_port}/app/inst/{KEYS[1]}"}},
        )
        await call(
            relay, "POST", "/streaming/restreams", {"restream": {"stream_id": sid, "uri": "rtmp://127.0.0.1:1/a/k"}}
        )

        # Refused publishers, every way a key can be written, and an accepted one with '#'.
        for name in (f"{sid}%23{WRONG_TOKEN}", f"{sid}#{WRONG_TOKEN}", f"{token}#{sid}", token):
            assert "NetStream.Publish.BadName" in await rtmp_publish(relay.rtmp_port, name)
        assert "NetStream.Publish.Start" in await rtmp_publish(relay.rtmp_port, f"{sid}#{token}")
        assert not await asyncio.to_thread(srt_connect, relay.srt_port, f"{sid}#{WRONG_TOKEN}", PASSPHRASE)
        assert not await asyncio.to_thread(srt_connect, relay.srt_port, f"{token}#{sid}", PASSPHRASE)
        assert not await asyncio.to_thread(srt_connect, relay.srt_port, f"{sid}#{token}", "not-the-passphrase")

        url = f"rtmp://127.0.0.1:{relay.rtmp_port}/in/{sid}?{token}"
        async with Publisher(pattern_publish_argv(url, 30)) as publisher:

            async def failing() -> bool:
                status = (await call(relay, "GET", f"/streaming/restreams/{refused['id']}"))["status"]
                return bool(status.get("last_error")) and status.get("restarts", 0) >= 1

            await wait_for(failing, 30, "the push to a closed port failed and retried")
            pid = await wait_for(lambda: asyncio.to_thread(push_pid, relay, silent_port), 15, "a push held open")
            environ = await asyncio.to_thread(environ_of, pid)
            await call(
                relay,
                "PATCH",
                f"/streaming/restreams/{refused['id']}",
                {"restream": {"uri": f"rtmp://127.0.0.1:{closed_port}/live2/{KEYS[2]}/?s=1"}},
            )
            await asyncio.sleep(2)  # the replaced push fails at least once more
            await publisher.stop()
    await asyncio.to_thread(relay.stop)

    assert not [name for name in environ if name.startswith("RELAY_")], sorted(environ)
    text = relay.log()
    assert "Connection refused" in text and "***" in text  # the pushes did fail, masked
    leaked = [s for s in (token, PASSPHRASE, WRONG_TOKEN, ADMIN_KEY, *KEYS) if s in text]
    assert not leaked, f"in the relay's log: {leaked}"
    assert re.search(r"\w\*\*\*|\*\*\*\w", text.replace("/***", "").replace("=***", "")) is None  # never in words
