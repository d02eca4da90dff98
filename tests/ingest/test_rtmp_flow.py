"""The RTMP ingest's reading over real sockets: bytes behind a publish wait for the gate and arrive in
order, a client that does not read our replies cannot make us buffer without bound, and where a TCP
segment ends never changes what the sink gets."""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
import time
from pathlib import Path

import pytest

from relay.ingest.gate import EndReason, IngestSink, PublishRequest
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.media.packets import MediaKind
from relay.pull.flv import FlvStreamReader
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.rtmp.sessions import AUDIO_CONFIG, AUDIO_FRAME, VIDEO_CONFIG, VIDEO_KEY, handshake, media
from tests.rtmp.wire import ServerReplies, command, publish_script

pytestmark = pytest.mark.timeout(60)
KEY = f"{STREAM_ID}?{TOKEN}"


class SlowGate(RecordingGate):
    """The recording gate, deciding after `delay_seconds` (a store under load)."""

    def __init__(self, directory: Path, delay_seconds: float) -> None:
        super().__init__(directory, {STREAM_ID: TOKEN})
        self.delay_seconds = delay_seconds

    async def open_publish(self, request: PublishRequest) -> IngestSink:
        await asyncio.sleep(self.delay_seconds)
        return await super().open_publish(request)


def _settings(**overrides: float) -> RtmpServerSettings:
    values: dict[str, float] = {"handshake_timeout_seconds": 5, "idle_timeout_seconds": 20}
    values.update(overrides)
    return RtmpServerSettings(host="127.0.0.1", port=0, **values)  # type: ignore[arg-type]


def _frames() -> list[tuple[MediaKind, int, bytes]]:
    frames = [(MediaKind.VIDEO, 0, VIDEO_CONFIG), (MediaKind.AUDIO, 0, AUDIO_CONFIG)]
    for index in range(6):
        # Video bodies over the 128-byte default chunk size: several chunks each.
        frames.append((MediaKind.VIDEO, 40 * index, VIDEO_KEY + bytes([index]) * 700))
        frames.append((MediaKind.AUDIO, 23 * index, AUDIO_FRAME))
    return frames


def _media_bytes(frames: list[tuple[MediaKind, int, bytes]]) -> bytes:
    return b"".join(media(kind, ts, body, csid=6 if kind is MediaKind.VIDEO else 4) for kind, ts, body in frames)


UNPUBLISH = command("deleteStream", 9.0, None, 1.0)


def _recorded(gate: RecordingGate, index: int = 0, stream_id: str = STREAM_ID) -> list[tuple[MediaKind, int, bytes]]:
    sink = gate.sinks[stream_id][index]
    tags = FlvStreamReader().feed(sink.path.read_bytes())
    return [(tag.packet.kind, tag.packet.timestamp_ms, tag.packet.payload) for tag in tags]


async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(data)
    await writer.drain()


async def _publish(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key: str = KEY) -> None:
    """Handshake, connect and publish `key`; returns once the server said NetStream.Publish.Start."""
    await _send(writer, handshake() + b"".join(publish_script(key)))
    replies = ServerReplies()
    async with asyncio.timeout(5):
        while "NetStream.Publish.Start" not in replies.status_codes():
            replies.feed(await reader.read(65536))


async def test_media_behind_the_publish_is_delivered_in_order_after_the_gate_accepts(tmp_path: Path) -> None:
    gate = SlowGate(tmp_path, delay_seconds=0.3)
    frames = _frames()
    async with RtmpServer(gate, _settings()) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # One write: the publish and the first media in the same segment; the rest while the gate decides.
        await _send(writer, handshake() + b"".join(publish_script(KEY)) + _media_bytes(frames[:2]))
        await asyncio.sleep(0.1)
        assert not gate.sinks, "the gate decided early: the test would not hold bytes behind the publish"
        await _send(writer, _media_bytes(frames[2:]) + UNPUBLISH)
        await asyncio.wait_for(gate.opened.wait(), 5)
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
        replies = ServerReplies()
        replies.feed(await reader.read(1 << 20))
        writer.close()
    assert sink.close_reasons == [EndReason.UNPUBLISH]
    assert _recorded(gate) == frames
    assert "NetStream.Publish.Start" in replies.status_codes()


async def test_where_segments_end_does_not_change_what_the_sink_gets(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = _frames()
    before_publish = handshake() + b"".join(publish_script(KEY)[:-1])
    publish = publish_script(KEY)[-1]
    stream = before_publish + publish + _media_bytes(frames) + UNPUBLISH
    # Every offset around the publish command (the gate's pause) and the handshake's end, a stride elsewhere.
    around_publish = range(len(before_publish) - 2, len(before_publish) + len(publish) + 40)
    offsets = sorted({*around_publish, *range(1, len(stream), 97), 1537, 3073, 3074, len(stream) - 1})
    async with RtmpServer(gate, _settings()) as server:
        for offset in offsets:
            _, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await _send(writer, stream[:offset])
            await asyncio.sleep(0.005)
            await _send(writer, stream[offset:])
            await asyncio.wait_for(gate.opened.wait(), 5)
            gate.opened.clear()
            sink = gate.sinks[STREAM_ID][-1]
            await asyncio.wait_for(sink.closed.wait(), 5)
            writer.close()
            assert sink.close_reasons == [EndReason.UNPUBLISH], offset
            assert _recorded(gate, -1) == frames, offset
    assert len(gate.sinks[STREAM_ID]) == len(offsets)


async def test_a_client_that_does_not_read_our_replies_is_bounded_then_served_again(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    settings = _settings(read_chunk_bytes=4096)
    async with RtmpServer(gate, settings) as server:
        client = socket.socket()
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        client.setblocking(False)
        await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=client)
        await _publish(reader, writer)
        # Each unknown call with a transaction id is answered with an _error about 4x its size.
        flood = command("noSuchCall", 7.0, None) * 2000
        sent = 0
        stalled = False
        while sent < 64 << 20:
            writer.write(flood)
            sent += len(flood)
            try:
                async with asyncio.timeout(1.0):
                    await writer.drain()
            except TimeoutError:
                stalled = True
                break
        assert stalled, f"the server read {sent} bytes from a client that reads none of its replies"
        (connection,) = server._connections  # what the server holds for that client
        assert connection._io is not None
        _, high = connection._io.get_write_buffer_limits()
        held = connection._io.get_write_buffer_size()
        assert held <= high + 16 * settings.read_chunk_bytes, held
        assert connection.published  # bounded by not reading, not by dropping the publisher
        # The client reads its replies: the server reads again and the stream goes on.
        while True:
            try:
                async with asyncio.timeout(1.0):
                    if not await reader.read(1 << 20):
                        break
            except TimeoutError:
                break
        await _send(writer, media(MediaKind.VIDEO, 0, VIDEO_CONFIG) + UNPUBLISH)
        sink = gate.sinks[STREAM_ID][0]
        async with asyncio.timeout(10):
            while not sink.closed.is_set():
                await reader.read(1 << 20)  # keep reading: the rest of the flood's answers
        writer.close()
    assert sink.close_reasons == [EndReason.UNPUBLISH]
    assert _recorded(gate) == [(MediaKind.VIDEO, 0, VIDEO_CONFIG)]


async def test_a_publisher_writing_each_header_apart_from_its_body_gets_every_frame_through(tmp_path: Path) -> None:
    # ffmpeg's pattern: each message's chunk header in a write of its own, its body right behind it (from
    # a thread here, as from another process: the server's loop wakes for the header alone). The connection
    # reads the body in the callback that read the header when it is there (`_read_on`), and from the loop's
    # next turn when it is not: either way every frame arrives, whole and in order.
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = _frames()
    rounds = 20
    messages = [
        media(kind, 1000 * r + ts, body, csid=6 if kind is MediaKind.VIDEO else 4)
        for r in range(rounds)
        for kind, ts, body in frames
    ]

    def publish(port: int) -> None:
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.sendall(handshake() + b"".join(publish_script(KEY)))
            for index, message in enumerate(messages):
                sock.sendall(message[:12])  # a type 0 header on a chunk stream id under 64
                if index % 7 == 0:
                    time.sleep(0.002)  # now and then the body a loop turn behind its header
                sock.sendall(message[12:])
            sock.sendall(UNPUBLISH)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # the replies, until the server closes
                pass

    async with RtmpServer(gate, _settings()) as server:
        await asyncio.wait_for(asyncio.to_thread(publish, server.port), 20)
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
    assert sink.close_reasons == [EndReason.UNPUBLISH]
    assert _recorded(gate) == [(k, 1000 * r + ts, body) for r in range(rounds) for k, ts, body in frames]


async def test_a_publisher_reset_inside_a_message_ends_its_session_only(tmp_path: Path) -> None:
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = _frames()
    async with RtmpServer(gate, _settings()) as server:
        _, writer = await asyncio.open_connection("127.0.0.1", server.port)
        await _send(writer, handshake() + b"".join(publish_script(KEY)) + _media_bytes(frames[:4]))
        await asyncio.wait_for(gate.opened.wait(), 5)
        gate.opened.clear()
        last = media(MediaKind.VIDEO, 500, VIDEO_KEY + bytes(5000))
        await _send(writer, last[: len(last) // 2])  # the rest never comes: the encoder's host resets
        await asyncio.sleep(0.05)
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
        # The same stream publishes again at once on a new connection.
        _, again = await asyncio.open_connection("127.0.0.1", server.port)
        await _send(again, handshake() + b"".join(publish_script(KEY)) + _media_bytes(frames) + UNPUBLISH)
        await asyncio.wait_for(gate.opened.wait(), 5)
        await asyncio.wait_for(gate.sinks[STREAM_ID][1].closed.wait(), 5)
        again.close()
    assert sink.close_reasons == [EndReason.DROP]
    assert _recorded(gate, 0) == frames[:4]  # the half message is not delivered
    assert _recorded(gate, 1) == frames
    assert gate.sinks[STREAM_ID][1].close_reasons == [EndReason.UNPUBLISH]


async def _publish_then(server: RtmpServer, gate: RecordingGate, key: str = KEY) -> asyncio.StreamWriter:
    """A publisher past its accepted publish (its replies read), with Nagle off: each write is a segment."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await _publish(reader, writer, key)
    await asyncio.wait_for(gate.opened.wait(), 5)
    return writer


def _bursts(times: list[float], gap_seconds: float) -> int:
    """How many groups `times` fall into when a group ends at a pause longer than `gap_seconds`."""
    return 1 + sum(b - a > gap_seconds for a, b in itertools.pairwise(times)) if times else 0


async def test_merged_reads_take_a_paced_publisher_a_few_times_a_second_in_order(tmp_path: Path) -> None:
    # RELAY_MERGE_INTERVAL_MS: a publisher that leaves the socket empty after each message is read once an
    # interval, what it sent meanwhile in one read (one loop turn, one write a push), not once a message.
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = _frames()
    async with RtmpServer(gate, _settings(merge_interval_seconds=0.2)) as server:
        writer = await _publish_then(server, gate)
        started = time.monotonic()
        for index, (kind, ts, body) in enumerate(frames):
            await _send(writer, media(kind, ts, body, csid=6 if kind is MediaKind.VIDEO else 4))
            await asyncio.sleep(max(0.0, started + 0.03 * (index + 1) - time.monotonic()))  # 14 over 0.42 s
        await _send(writer, UNPUBLISH)
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
        writer.close()
    assert _recorded(gate) == frames
    # A read an interval: ~3 over the 0.42 s, where a read a message made 14 (each message 30 ms apart).
    assert _bursts(sink.write_times, 0.015) <= 4, sink.write_times
    # Each is handed over as merged: the hub writes it at its end, without waiting an interval of its own.
    assert sink.merged_batches >= 2


def _burst_starts(times: list[float], gap_seconds: float) -> list[float]:
    """The first of each group of `times` (a group ends at a pause longer than `gap_seconds`)."""
    return [b for a, b in itertools.pairwise([-1e9, *times]) if b - a > gap_seconds]


async def test_the_merged_reads_of_several_publishers_share_one_wake_up(tmp_path: Path) -> None:
    # The server's connections wait for their next read on one ticker (relay.ingest.read_ticker): two paced
    # publishers, the second a third of an interval behind the first, are each read at the same ticks once
    # their first read is past, where each connection's own timer read them a third of an interval apart.
    other = str(int(STREAM_ID) + 1)
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN, other: TOKEN})
    frames = _frames() * 2
    frames = [(kind, 20 * index, body) for index, (kind, _, body) in enumerate(frames)]

    async def paced(writer: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        for index, (kind, ts, body) in enumerate(frames):
            await _send(writer, media(kind, ts, body, csid=6 if kind is MediaKind.VIDEO else 4))
            await asyncio.sleep(max(0.0, started + 0.03 * (index + 1) - time.monotonic()))  # 28 over 0.84 s
        await _send(writer, UNPUBLISH)

    async with RtmpServer(gate, _settings(merge_interval_seconds=0.15)) as server:
        first = await _publish_then(server, gate)
        gate.opened.clear()
        second = await _publish_then(server, gate, f"{other}?{TOKEN}")
        one = asyncio.create_task(paced(first))
        await asyncio.sleep(0.05)
        await paced(second)
        await one
        sinks = [gate.sinks[STREAM_ID][0], gate.sinks[other][0]]
        for sink in sinks:
            await asyncio.wait_for(sink.closed.wait(), 5)
        first.close()
        second.close()
    assert _recorded(gate) == frames and _recorded(gate, stream_id=other) == frames
    reads = [_burst_starts(sink.write_times, 0.01) for sink in sinks]
    assert all(len(starts) >= 4 for starts in reads), reads  # ~6 reads each over the 0.84 s
    # Past each one's first read (as its bytes came), every read of the second is one of the first's ticks.
    apart = [min(abs(b - a) for a in reads[0][1:]) for b in reads[1][1:-1]]
    assert max(apart) < 0.01, (apart, reads)


async def test_merged_reads_never_hold_back_a_publisher_faster_than_a_buffer_an_interval(tmp_path: Path) -> None:
    # A keyframe, a burst or a high bitrate fills the read buffer: the rest is read at once, not an interval
    # later (here reads of 4 KiB: one an interval, even with the reads on inside a message, would take
    # minutes for these 2 MB).
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = [(MediaKind.VIDEO, 0, VIDEO_CONFIG)]
    frames += [(MediaKind.VIDEO, 33 * i, VIDEO_KEY + bytes([i % 256]) * 1000) for i in range(1, 2001)]
    async with RtmpServer(gate, _settings(merge_interval_seconds=0.25, read_chunk_bytes=4096)) as server:
        writer = await _publish_then(server, gate)
        started = time.monotonic()
        await _send(writer, _media_bytes(frames) + UNPUBLISH)  # 2 MB at once
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 20)
        took = time.monotonic() - started
        writer.close()
    assert _recorded(gate) == frames
    assert took < 5.0, f"2 MB took {took:.2f} s: read an interval at a time, not at once"


async def test_the_media_before_a_protocol_fault_in_the_same_read_is_delivered(tmp_path: Path) -> None:
    # A read's media reaches the sink in one call (ServerSession.take_media): a fault further on in the same
    # read ends the connection, and what came before it still goes, as it did message by message.
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    frames = _frames()
    async with RtmpServer(gate, _settings()) as server:
        writer = await _publish_then(server, gate)
        bad = bytes.fromhex("49 000000 000001 09") + b"x"  # a type 1 header on a chunk stream never opened
        await _send(writer, _media_bytes(frames) + bad)
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 5)
        writer.close()
    assert _recorded(gate) == frames
    assert sink.close_reasons == [EndReason.DROP]
