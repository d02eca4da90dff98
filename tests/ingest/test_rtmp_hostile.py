"""Hostile and broken clients against a live server while a real ffmpeg publisher streams."""

from __future__ import annotations

import asyncio
import logging
import struct
from pathlib import Path

import pytest

from relay.ingest.gate import EndReason, RefusalReason
from relay.ingest.rtmp_server import RtmpServer, RtmpServerSettings
from relay.rtmp.chunks import ChunkWriter, MessageType
from tests.ingest.rtmp_gate import STREAM_ID, TOKEN, RecordingGate
from tests.ingest.test_rtmp_publishers import assert_same_packets
from tests.rtmp.wire import ServerReplies, control, publish_script, simple_c1
from tests.support import ffmpeg_publish_argv, run_process

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


async def _open(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    return reader, writer, writer.get_extra_info("sockname")[1]


async def _read_until_closed(
    reader: asyncio.StreamReader, replies: ServerReplies | None = None, limit_seconds: float = 5.0
) -> None:
    async with asyncio.timeout(limit_seconds):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionError:
                return
            if not data:
                return
            if replies is not None:
                replies.feed(data)


async def _handshaken(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
    reader, writer, local = await _open(port)
    writer.write(b"\x03" + simple_c1() + simple_c1(2))  # C2 content is not checked
    await writer.drain()
    await reader.readexactly(1 + 2 * 1536)
    return reader, writer, local


async def garbage(port: int) -> int:
    reader, writer, local = await _open(port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 10)
    await _read_until_closed(reader)
    writer.close()
    return local


async def huge_chunk_size(port: int) -> int:
    reader, writer, local = await _handshaken(port)
    writer.write(control(MessageType.SET_CHUNK_SIZE, struct.pack(">I", 0x7FFFFFFF)))
    await _read_until_closed(reader)
    writer.close()
    return local


async def amf_deep_bomb(port: int) -> int:
    reader, writer, local = await _handshaken(port)
    payload = b"\x02\x00\x07connect\x00" + struct.pack(">d", 1) + b"\x03\x00\x01a" * 5000
    writer.write(command_raw(payload))
    await _read_until_closed(reader)
    writer.close()
    return local


async def amf_count_bomb(port: int) -> int:
    reader, writer, local = await _handshaken(port)
    payload = b"\x02\x00\x07connect\x00" + struct.pack(">d", 1) + b"\x0a\xff\xff\xff\xff" + b"\x05" * 100
    writer.write(command_raw(payload))
    await _read_until_closed(reader)
    writer.close()
    return local


async def huge_message(port: int) -> int:
    reader, writer, local = await _handshaken(port)
    # Type 0 header declaring a 16 MiB - 1 video message: refused before any of it is buffered.
    writer.write(b"\x04" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x09" + b"\x01\x00\x00\x00" + b"x" * 128)
    await _read_until_closed(reader)
    writer.close()
    return local


async def stalled_handshake(port: int) -> int:
    reader, writer, local = await _open(port)
    writer.write(b"\x03" + simple_c1()[:100])
    await _read_until_closed(reader)  # the server's handshake timeout ends it
    writer.close()
    return local


async def publish_with(port: int, name: str) -> tuple[int, ServerReplies]:
    reader, writer, local = await _open(port)
    writer.write(b"\x03" + simple_c1())
    replies = ServerReplies()
    while not replies.handshake_done:
        replies.feed(await reader.read(65536))
    writer.write(simple_c1(3) + b"".join(publish_script(name)))
    await _read_until_closed(reader, replies)
    writer.close()
    return local, replies


def command_raw(payload: bytes) -> bytes:
    return ChunkWriter(128).write(3, MessageType.COMMAND_AMF0, 0, 0, payload)


async def test_hostile_clients_do_not_disturb_a_live_publisher(
    sample_flv: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.ingest.rtmp")
    gate = RecordingGate(tmp_path, {STREAM_ID: TOKEN})
    settings = RtmpServerSettings(host="127.0.0.1", port=0, handshake_timeout_seconds=1.0, idle_timeout_seconds=10)
    async with RtmpServer(gate, settings) as server:
        port = server.port
        url = f"rtmp://127.0.0.1:{port}/live/{STREAM_ID}?{TOKEN}"
        publisher = asyncio.create_task(run_process(ffmpeg_publish_argv(sample_flv, url), limit_seconds=30))
        await asyncio.wait_for(gate.opened.wait(), 10)

        locals_ = await asyncio.gather(
            garbage(port),
            huge_chunk_size(port),
            amf_deep_bomb(port),
            amf_count_bomb(port),
            huge_message(port),
            stalled_handshake(port),
        )
        wrong_key_port, wrong_key = await publish_with(port, f"{STREAM_ID}?wrong")
        duplicate_port, duplicate = await publish_with(port, f"{STREAM_ID}?{TOKEN}")
        unknown_port, _ = await publish_with(port, "99?x")

        code, stderr = await publisher
        assert code == 0, stderr
        sink = gate.sinks[STREAM_ID][0]
        await asyncio.wait_for(sink.closed.wait(), 10)
        assert server.connection_count == 0

    assert wrong_key.status_codes() == ["NetConnection.Connect.Success", "NetStream.Publish.BadName"]
    assert duplicate.status_codes() == ["NetConnection.Connect.Success", "NetStream.Publish.BadName"]
    assert gate.refusals == [RefusalReason.BAD_TOKEN, RefusalReason.ALREADY_LIVE, RefusalReason.UNKNOWN_STREAM]
    assert len(gate.sinks[STREAM_ID]) == 1
    assert sink.close_reasons == [EndReason.UNPUBLISH]
    assert_same_packets(sample_flv, sink.path)

    # One log line per bad connection, naming its reason; secrets never logged.
    expected = dict(
        zip(
            locals_,
            [
                "unsupported RTMP version",
                "chunk size",
                "nesting too deep",
                "array count",
                "over the limit",
                "handshake timeout",
            ],
            strict=True,
        )
    )
    expected.update(
        {
            wrong_key_port: "publish refused (bad_token)",
            duplicate_port: "publish refused (already_live)",
            unknown_port: "publish refused (unknown_stream)",
        }
    )
    for local, reason in expected.items():
        lines = [
            r.getMessage()
            for r in caplog.records
            if f":{local} " in r.getMessage() + " " or f":{local}:" in r.getMessage()
        ]
        assert len(lines) == 1, (reason, lines)
        assert reason in lines[0], lines
    assert TOKEN not in caplog.text and "wrong" not in caplog.text
