"""Client-side bytes for tests: handshakes (simple and FP9 digest), commands, and a reply parser.

A tiny sans-I/O RTMP client built on the same chunk writer/reader, so tests can talk to the server
session in memory or over a socket.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any

from relay.rtmp import amf0
from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.chunks import ChunkReader, ChunkWriter, MessageType, RawMessage
from relay.rtmp.handshake import (
    CLIENT_FULL_KEY,
    CLIENT_PARTIAL_KEY,
    HANDSHAKE_SIZE,
    make_digest_packet,
    make_digest_response,
)

FP9_VERSION = bytes([0x80, 0x00, 0x07, 0x02])  # what Flash Player 9+ puts in C1 bytes 4..7


def simple_c1(seed: int = 1) -> bytes:
    """A C1 of the simple form (zero version field), deterministic."""
    body = bytes((seed * 7 + i * 13) & 0xFF for i in range(HANDSHAKE_SIZE - 8))
    return struct.pack(">I", 1000) + b"\x00\x00\x00\x00" + body


def digest_c1(base: int = 8) -> bytes:
    """A C1 as an FP9 client builds it: version set, HMAC digest at the `base` layout's offset."""
    return make_digest_packet(
        struct.pack(">I", 1000) + FP9_VERSION, os.urandom(HANDSHAKE_SIZE), CLIENT_PARTIAL_KEY, base
    )


def digest_c2(server_digest: bytes) -> bytes:
    """The C2 an FP9 client answers with (signed over the server's S1 digest)."""
    return make_digest_response(server_digest, os.urandom(HANDSHAKE_SIZE), CLIENT_FULL_KEY)


def command(
    name: str, txid: float, obj: Any, *args: Any, stream_id: int = 0, csid: int = 3, writer: ChunkWriter | None = None
) -> bytes:
    """An AMF0 command message (type 20) as chunks."""
    payload = amf0.encode(name, txid, obj, *args)
    return (writer or ChunkWriter()).write(csid, MessageType.COMMAND_AMF0, stream_id, 0, payload)


def control(type_id: int, payload: bytes) -> bytes:
    """A protocol control message on chunk stream 2."""
    return ChunkWriter().write(2, type_id, 0, 0, payload)


def publish_script(name: str, app: str = "live") -> list[bytes]:
    """What ffmpeg sends after the handshake, up to and including publish (stream id 1)."""
    return [
        command("connect", 1.0, {"app": app, "type": "nonprivate", "tcUrl": f"rtmp://127.0.0.1/{app}"}),
        command("releaseStream", 2.0, None, name),
        command("FCPublish", 3.0, None, name),
        command("createStream", 4.0, None),
        command("publish", 5.0, None, name, "live", stream_id=1, csid=8),
    ]


@dataclass
class ServerReplies:
    """Parses what the server sends back: the handshake, then messages (commands decoded)."""

    handshake_done: bool = False
    s1: bytes = b""
    messages: list[RawMessage] = field(default_factory=list)
    commands: list[list[Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._buffer = ReceiveBuffer(1 << 24)
        self._reader = ChunkReader()

    def feed(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self.handshake_done:
            if len(self._buffer) < 1 + 2 * HANDSHAKE_SIZE:
                return
            self._buffer.consume(1)
            self.s1 = self._buffer.consume(HANDSHAKE_SIZE)
            self._buffer.consume(HANDSHAKE_SIZE)
            self.handshake_done = True
        while (message := self._reader.next_message(self._buffer)) is not None:
            self.messages.append(message)
            if message.type_id == MessageType.SET_CHUNK_SIZE:
                self._reader.set_chunk_size(struct.unpack(">I", message.payload)[0])
            elif message.type_id == MessageType.COMMAND_AMF0:
                self.commands.append(amf0.decode_all(message.payload))

    def status_codes(self, names: tuple[str, ...] = ("onStatus", "_result", "_error")) -> list[str]:
        """`code` of every info object of the named commands, in order."""
        codes = []
        for values in self.commands:
            if values[0] not in names:
                continue
            for value in values[2:]:
                if isinstance(value, dict) and "code" in value:
                    codes.append(value["code"])
        return codes
