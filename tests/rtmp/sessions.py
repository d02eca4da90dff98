"""Helpers that drive a ServerSession in memory the way the asyncio server does."""

from __future__ import annotations

import struct

from relay.media.packets import MediaKind
from relay.rtmp import amf0
from relay.rtmp.chunks import ChunkWriter, MessageType
from relay.rtmp.events import NEED_DATA, ConnectRequested, Event, PublishRequested
from relay.rtmp.session import ServerSession
from relay.rtmp.states import SessionState
from tests.rtmp.wire import publish_script, simple_c1

VIDEO_CONFIG = bytes.fromhex("1700000000") + b"\x01\x42\xc0\x0d\xff\xe1\x00\x00"
VIDEO_KEY = bytes.fromhex("1701000000") + b"\x00\x00\x00\x02\x65\x88"
AUDIO_CONFIG = b"\xaf\x00\x12\x10"
AUDIO_FRAME = b"\xaf\x01" + b"\x21" * 20
METADATA = amf0.encode("onMetaData", amf0.EcmaArray({"width": 320.0, "height": 240.0, "framerate": 25.0}))


def handshake() -> bytes:
    return b"\x03" + simple_c1() + simple_c1(2)


def media(kind: MediaKind, timestamp: int, payload: bytes, csid: int = 6, writer: ChunkWriter | None = None) -> bytes:
    return (writer or ChunkWriter()).write(csid, int(kind), 1, timestamp, payload)


def set_data_frame(timestamp: int = 0) -> bytes:
    return ChunkWriter().write(4, MessageType.DATA_AMF0, 1, timestamp, amf0.encode("@setDataFrame") + METADATA)


def publishing_session_bytes(name: str = "12?tok") -> bytes:
    """A complete, valid publish: handshake, commands, metadata, config and a few frames."""
    out = [handshake(), *publish_script(name), set_data_frame()]
    out.append(media(MediaKind.VIDEO, 0, VIDEO_CONFIG))
    out.append(media(MediaKind.AUDIO, 0, AUDIO_CONFIG, csid=4))
    for index in range(5):
        out.append(media(MediaKind.VIDEO, 40 * index, VIDEO_KEY + bytes(300)))
        out.append(media(MediaKind.AUDIO, 23 * index, AUDIO_FRAME, csid=4))
    out.append(ChunkWriter().write(3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode("FCUnpublish", 6.0, None, name)))
    out.append(ChunkWriter().write(3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode("deleteStream", 7.0, None, 1.0)))
    return b"".join(out)


def drain(session: ServerSession, *, accept: bool = True) -> list[Event]:
    """All events available now; connect and publish are accepted (or the publish rejected)."""
    events: list[Event] = []
    while (event := session.next_event()) is not NEED_DATA:
        events.append(event)
        if isinstance(event, ConnectRequested):
            session.accept_connect()
        elif isinstance(event, PublishRequested):
            if accept:
                session.accept_publish()
            else:
                session.reject_publish()
        if session.state is SessionState.CLOSED:
            break
    return events


def feed(session: ServerSession, data: bytes, step: int | None = None, *, accept: bool = True) -> list[Event]:
    events: list[Event] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        session.receive_data(piece)
        events += drain(session, accept=accept)
    return events


def u32(value: int) -> bytes:
    return struct.pack(">I", value)
