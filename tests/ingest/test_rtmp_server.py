"""RtmpServer lifecycle with a scripted client over loopback: takeover, timeouts, limits, close."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from pathlib import Path

import pytest

from relay.doors import DoorCut, DoorRefusal
from relay.ingest.gate import EndReason, RefusalReason, Transport
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.media.packets import MediaKind
from relay.rtmp.handshake import SERVER_FULL_KEY, SERVER_PARTIAL_KEY, compute_digest, digest_offset, find_client_digest
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.rtmp.sessions import VIDEO_KEY, media
from tests.rtmp.wire import ServerReplies, command, digest_c1, publish_script, simple_c1
from tests.support import wait_for

pytestmark = pytest.mark.timeout(30)
KEY = f"{STREAM_ID}?{TOKEN}"


class ScriptedClient:
    """A publisher driven byte by byte from the test."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.replies = ServerReplies()

    @classmethod
    async def connect(cls, port: int, source: str = "127.0.0.1") -> ScriptedClient:
        """Connect from `source`: any 127.0.0.0/8 address works on Linux (all of it is routed to lo)."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until(self, code: str, limit_seconds: float = 5) -> None:
        async with asyncio.timeout(limit_seconds):
            while code not in self.replies.status_codes():
                data = await self.reader.read(65536)
                if not data:
                    raise AssertionError(f"closed before {code}: {self.replies.status_codes()}")
                self.replies.feed(data)

    async def closed(self, limit_seconds: float = 5) -> None:
        async with asyncio.timeout(limit_seconds):
            while True:
                try:
                    data = await self.reader.read(65536)
                except ConnectionError:
                    return
                if not data:
                    return
                self.replies.feed(data)

    async def publish(self, name: str = KEY) -> None:
        await self.send(b"\x03" + simple_c1() + simple_c1(5) + b"".join(publish_script(name)))
        await self.until("NetStream.Publish.Start")

    def close(self) -> None:
        self.writer.close()


def _settings(**overrides: float) -> RtmpServerSettings:
    values: dict[str, float] = {"handshake_timeout_seconds": 2, "idle_timeout_seconds": 5}
    values.update(overrides)
    return RtmpServerSettings(host="127.0.0.1", port=0, **values)  # type: ignore[arg-type]


async def test_takeover_of_a_silent_publisher_kicks_it(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN}, takeover_idle_seconds=0.3)
    async with RtmpServer(gate, _settings()) as server:
        first = await ScriptedClient.connect(server.port)
        await first.publish()
        await first.send(media(MediaKind.VIDEO, 0, VIDEO_KEY))
        handle = gate.sinks[STREAM_ID][0].publisher
        assert handle.transport is Transport.RTMP and handle.peer.startswith("127.0.0.1:")
        assert handle.idle_seconds() < 0.3
        await asyncio.sleep(0.4)  # the first publisher goes silent (a crashed encoder)
        assert handle.idle_seconds() >= 0.3
        second = await ScriptedClient.connect(server.port)
        await second.publish()
        await first.closed()
        old, new = gate.sinks[STREAM_ID]
        await asyncio.wait_for(old.closed.wait(), 5)
        assert old.close_reasons == [EndReason.KICKED]
        assert old.packets == 1 and not new.close_reasons
        handle.disconnect(EndReason.KICKED)  # idempotent, harmless after the end
        second.close()
        await asyncio.wait_for(new.closed.wait(), 5)
        assert new.close_reasons == [EndReason.DROP]  # EOF without unpublish


async def test_deliberate_unpublish_then_close(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    async with RtmpServer(gate, _settings()) as server:
        client = await ScriptedClient.connect(server.port)
        await client.publish()
        await client.send(command("deleteStream", 9.0, None, 1.0))
        await client.until("NetStream.Unpublish.Success")
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
        client.close()
    assert sink.close_reasons == [EndReason.UNPUBLISH]


@pytest.mark.parametrize(
    ("name", "label"),
    [
        (f"{STREAM_ID}?{TOKEN}", STREAM_ID),
        (f"{STREAM_ID}#{TOKEN}", STREAM_ID),
        (f"{STREAM_ID}%23{TOKEN}", STREAM_ID),
        (f"live/{STREAM_ID}%23{TOKEN}?x=1", STREAM_ID),
        (f"{TOKEN}#{STREAM_ID}", "(no id)"),
        (TOKEN, "(no id)"),
    ],
)
async def test_the_log_names_the_stream_id_never_the_token(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, label: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    async with RtmpServer(gate, _settings()) as server:
        client = await ScriptedClient.connect(server.port)
        await client.send(b"\x03" + simple_c1() + simple_c1(5) + b"".join(publish_script(name)))
        code = "NetStream.Publish.Start" if name == KEY else "NetStream.Publish.BadName"
        await client.until(code)
        client.close()
    # Leaving the server ended the connection: its last line ("...: closed by peer") is written.
    assert TOKEN not in caplog.text
    assert f"stream {label}: " in caplog.text


async def test_idle_timeout_drops_the_publisher(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    async with RtmpServer(gate, _settings(idle_timeout_seconds=0.3)) as server:
        client = await ScriptedClient.connect(server.port)
        await client.publish()
        await client.closed()
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
    assert sink.close_reasons == [EndReason.DROP]
    assert "idle timeout" in caplog.text


async def test_connected_but_never_publishing_is_closed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {})
    async with RtmpServer(gate, _settings(preauth_timeout_seconds=0.3)) as server:
        client = await ScriptedClient.connect(server.port)
        await client.send(b"\x03" + simple_c1() + simple_c1(5) + publish_script("x")[0])
        with pytest.raises(ConnectionError):  # keeps talking, but never publishes: cut off
            for _ in range(30):
                await asyncio.sleep(0.1)
                await client.send(command("ping", 0.0, None))

        async def task_ended() -> bool:  # the connection's task ends (and counts) after the socket closes
            return server.door_counts().open_connections == 0

        await wait_for(task_ended, 2, "the connection's task ended", every=0.01)
        counts = server.door_counts()
        assert counts.cut[DoorCut.PUBLISH_TIMEOUT] == 1
        assert sum(counts.cut.values()) == 1 and sum(counts.refused.values()) == 0
    assert "no publish in time" in caplog.text


async def test_connection_limits_refuse_when_only_publishers_hold_the_slots(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN, "13": "other"})
    refused: list[RefusalReason] = []
    settings = RtmpServerSettings(host="127.0.0.1", port=0, max_connections_per_address=2, max_connections=3)
    async with RtmpServer(gate, settings, on_refused=lambda _t, reason: refused.append(reason)) as server:
        kept = [await ScriptedClient.connect(server.port) for _ in range(2)]
        await kept[0].publish()
        await kept[1].publish("13?other")
        extra = await ScriptedClient.connect(server.port)  # no anonymous connection to evict: refused
        await extra.closed()
        other = await ScriptedClient.connect(server.port, source="127.0.0.2")
        await other.send(b"\x03")
        await asyncio.sleep(0.05)
        assert server.connection_count == 3 and server.anonymous_count == 1
        last = await ScriptedClient.connect(server.port, source="127.0.0.3")  # total full: evicts the anonymous one
        await other.closed()
        await last.send(b"\x03")
        await asyncio.sleep(0.05)
        assert server.connection_count == 3
        counts = server.door_counts()
        assert counts.transport == "rtmp" and counts.open_connections == 3
        assert counts.refused == {
            DoorRefusal.MAX_CONNECTIONS_PER_ADDRESS: 1,
            DoorRefusal.MAX_CONNECTIONS: 0,
            DoorRefusal.MAX_UNAUTHENTICATED_CONNECTIONS: 0,
        }
        assert counts.cut[DoorCut.EVICTED] == 1 and sum(counts.cut.values()) == 1
        for client in (*kept, last):
            client.close()
    assert refused == [RefusalReason.CONNECTION_LIMIT, RefusalReason.EVICTED]  # relay_ingest_refusals, as before
    assert "refused: too many connections from this address" in caplog.text


async def test_close_is_idempotent_and_ends_every_connection(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    server = RtmpServer(gate, _settings())
    await server.start()
    client = await ScriptedClient.connect(server.port)
    await client.publish()
    idle = await ScriptedClient.connect(server.port)
    await idle.send(b"\x03")
    await asyncio.sleep(0.05)
    assert server.connection_count == 2
    await server.close()
    await server.close()
    assert server.connection_count == 0
    assert gate.sinks[STREAM_ID][0].close_reasons == [EndReason.DROP]
    await client.closed()
    await idle.closed()
    with pytest.raises(RuntimeError):
        await server.start()


async def test_digest_handshake_over_tcp(tmp_path: Path) -> None:
    async with RtmpServer(RecordingGate(tmp_path, {}), _settings()) as server:
        client = await ScriptedClient.connect(server.port)
        c1 = digest_c1(772)
        await client.send(b"\x03" + c1)
        answer = await client.reader.readexactly(1 + 2 * 1536)
        s1, s2 = answer[1:1537], answer[1537:]
        offset = digest_offset(s1, 8)
        assert compute_digest(s1, offset, SERVER_PARTIAL_KEY) == s1[offset : offset + 32]
        client_digest = find_client_digest(c1)
        assert client_digest is not None
        key = hmac.new(SERVER_FULL_KEY, client_digest, hashlib.sha256).digest()
        assert hmac.new(key, s2[:-32], hashlib.sha256).digest() == s2[-32:]
        client.close()
