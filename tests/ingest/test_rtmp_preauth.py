"""Limits on RTMP(S) connections that have not had a publish accepted: the budget and who is evicted
from it, the per-address count, the deadline from accept, the message cap, and TLS counted from accept."""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.doors import DoorCut
from relay.ingest.gate import RefusalReason, Transport
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.media.packets import MediaKind
from relay.rtmp.chunks import MessageType, encode_chunk_header
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.ingest.test_rtmp_server import KEY, ScriptedClient
from tests.rtmp.sessions import VIDEO_KEY, media
from tests.rtmp.wire import simple_c1
from tests.support import wait_for

pytestmark = pytest.mark.timeout(30)


def settings(**overrides: float) -> RtmpServerSettings:
    values: dict[str, float] = {"idle_timeout_seconds": 5}
    values.update(overrides)
    return RtmpServerSettings(host="127.0.0.1", port=0, **values)  # type: ignore[arg-type]


class Refusals(list[RefusalReason]):
    """What the server reported through `on_refused`."""

    def __call__(self, transport: Transport, reason: RefusalReason) -> None:
        self.append(reason)


async def anonymous(server: RtmpServer, source: str = "127.0.0.1") -> ScriptedClient:
    """A connection that sends one byte of handshake and then nothing.

    Once this returns the server has taken it in: `accepted` counts every connection it has taken in,
    including those that took an evicted one's place (the number of open ones does not change then)."""
    before = server.accepted
    client = await ScriptedClient.connect(server.port, source)
    await client.send(b"\x03")
    await settled(lambda: server.accepted > before, "the server took the connection in")
    return client


async def settled(check: Callable[[], bool], what: str) -> None:
    async def probe() -> bool:
        return check()

    await wait_for(probe, 5, what, every=0.01)


async def still_open(client: ScriptedClient) -> bool:
    """True if the server has neither closed nor written to this (silent) connection."""
    try:
        async with asyncio.timeout(0.1):
            return bool(await client.reader.read(1))
    except TimeoutError:
        return True
    except ConnectionError:
        return False


async def test_the_oldest_anonymous_connection_makes_room_and_an_encoder_gets_in(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    refused = Refusals()
    server_settings = settings(max_unauthenticated_connections=3, preauth_timeout_seconds=30)
    async with RtmpServer(gate, server_settings, on_refused=refused) as server:
        first, second, third = [await anonymous(server) for _ in range(3)]
        fourth = await anonymous(server)
        await first.closed()
        assert [await still_open(c) for c in (second, third, fourth)] == [True, True, True]
        fifth = await anonymous(server)
        await second.closed()
        assert [await still_open(c) for c in (third, fourth, fifth)] == [True, True, True]

        encoder = await ScriptedClient.connect(server.port)  # the budget is full: the third makes room
        await encoder.publish()
        await third.closed()
        assert server.anonymous_count == 2 and server.connection_count == 3
        sixth = await anonymous(server)  # a publisher is no longer anonymous: it left the budget
        assert server.anonymous_count == 3
        seventh = await anonymous(server)
        await fourth.closed()
        assert [await still_open(c) for c in (encoder, fifth, sixth, seventh)] == [True] * 4
        for client in (encoder, fifth, sixth, seventh):
            client.close()
    assert refused == [RefusalReason.EVICTED] * 4


async def test_a_flood_from_one_peer_evicts_its_own_connections_before_an_older_lone_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    refused = Refusals()
    server_settings = settings(max_unauthenticated_connections=4, preauth_timeout_seconds=30)
    async with RtmpServer(RecordingGate(tmp_path, {}), server_settings, on_refused=refused) as server:
        lone = await anonymous(server, "127.0.0.9")  # the oldest of all, e.g. an encoder still handshaking
        flood = [await anonymous(server, "127.0.0.2") for _ in range(3)]
        newcomers = [await anonymous(server, "127.0.0.3") for _ in range(2)]
        await flood[0].closed()  # 127.0.0.2 held the most: its oldest went first...
        await flood[1].closed()  # ...and still held the most (two, against one each) for the next newcomer
        assert [await still_open(c) for c in (lone, flood[2], *newcomers)] == [True] * 4
        for client in (lone, flood[2], *newcomers):
            client.close()
    assert refused == [RefusalReason.EVICTED] * 2
    assert "evicted: too many connections not publishing" in caplog.text


async def test_a_full_address_evicts_its_own_oldest(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    refused = Refusals()
    server_settings = settings(max_connections_per_address=2, preauth_timeout_seconds=30)
    async with RtmpServer(RecordingGate(tmp_path, {}), server_settings, on_refused=refused) as server:
        a1 = await anonymous(server, "127.0.0.2")
        b1 = await anonymous(server, "127.0.0.3")
        a2 = await anonymous(server, "127.0.0.2")
        a3 = await anonymous(server, "127.0.0.2")
        await a1.closed()
        assert [await still_open(c) for c in (b1, a2, a3)] == [True, True, True]
        assert server.connection_count == 3
        for client in (b1, a2, a3):
            client.close()
    assert refused == [RefusalReason.EVICTED]
    assert "127.0.0.2" in caplog.text and "evicted: too many connections from this address" in caplog.text


async def test_the_deadline_runs_from_accept_whatever_the_client_sends(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    async with RtmpServer(RecordingGate(tmp_path, {}), settings(preauth_timeout_seconds=0.5)) as server:
        client = await ScriptedClient.connect(server.port)
        started = time.monotonic()
        handshake = b"\x03" + simple_c1()
        with pytest.raises(ConnectionError):  # byte by byte, never silent for long: cut off all the same
            for index in range(len(handshake)):
                await client.send(handshake[index : index + 1])
                await asyncio.sleep(0.02)
        assert time.monotonic() - started < 1.5
        assert server.connection_count == 0
    assert "handshake timeout" in caplog.text


async def test_an_anonymous_peer_may_not_announce_large_messages(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    async with RtmpServer(gate, settings()) as server:
        assert server.settings.preauth_max_message_bytes == 32 << 10
        huge = await ScriptedClient.connect(server.port)
        await huge.send(b"\x03" + simple_c1() + simple_c1(5))
        # A 40 KiB command: refused on its header, before any of its body is waited for.
        await huge.send(encode_chunk_header(0, 3, length=40 << 10, type_id=MessageType.COMMAND_AMF0))
        await huge.closed()
        spread = await ScriptedClient.connect(server.port)
        await spread.send(b"\x03" + simple_c1() + simple_c1(5))
        # Three 30 KiB messages begun on three chunk streams: the third is over the 64 KiB of partial messages.
        for csid in (4, 5, 6):
            await spread.send(encode_chunk_header(0, csid, length=30 << 10, type_id=MessageType.VIDEO) + bytes(128))
        await spread.closed()

        encoder = await ScriptedClient.connect(server.port)
        await encoder.publish(KEY)
        keyframe = VIDEO_KEY + bytes(200 << 10)  # once publishing, the publishing limits apply
        await encoder.send(media(MediaKind.VIDEO, 0, keyframe))
        sink = gate.sinks[STREAM_ID][0]
        await settled(lambda: sink.packets >= 1, "the large keyframe reached the sink")
        encoder.close()
        cut = server.door_counts().cut
        assert cut[DoorCut.PROTOCOL_ERROR] == 2 and sum(cut.values()) == 2  # the encoder's close is its own
    assert "message of 40960 bytes over the limit" in caplog.text
    assert "too many bytes in partial messages" in caplog.text


async def test_rtmps_connections_count_from_accept_not_from_tls(
    tmp_path: Path, tls_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    refused = Refusals()
    server_settings = settings(preauth_timeout_seconds=0.5, max_unauthenticated_connections=1)
    async with RtmpServer(gate, server_settings, tls_context, on_refused=refused) as server:
        silent = await ScriptedClient.connect(server.port)  # TCP only: no ClientHello ever
        await settled(lambda: server.anonymous_count == 1, "the TCP connection counted as anonymous")
        await silent.closed(limit_seconds=2)
        assert server.connection_count == 0

        squatter = await anonymous(server)  # the budget of one is taken...
        client_context = ssl.create_default_context()
        client_context.check_hostname = False
        client_context.verify_mode = ssl.CERT_NONE
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=client_context)
        await squatter.closed()  # ...and given up to the newcomer, which completes TLS and publishes
        encoder = ScriptedClient(reader, writer)
        await encoder.publish(KEY)
        encoder.close()
        counts = server.door_counts()
        assert counts.transport == "rtmps"
        assert counts.cut[DoorCut.HANDSHAKE_TIMEOUT] == 1 and counts.cut[DoorCut.EVICTED] == 1
    assert "TLS or RTMP handshake timeout" in caplog.text
    assert refused == [RefusalReason.EVICTED]
