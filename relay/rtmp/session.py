"""The server side of one RTMP connection, sans-I/O: bytes in, events out, replies as bytes.

Use::

    session.receive_data(data)
    while (event := session.next_event()) is not NEED_DATA:
        ...  # ConnectRequested -> accept_connect(); PublishRequested -> accept_publish() ...
    transport.write(session.data_to_send())

The session answers what needs no decision by itself (createStream, pings, acknowledgements per the
client's window, releaseStream/FCPublish, refusing play) and asks its user only about connect and
publish.  Commands are checked against one transition table (relay.rtmp.states): a peer's illegal move
raises ProtocolError (their fault: the server closes that connection), an illegal move of our own code
raises the relay's IllegalTransition (our bug).
"""

from __future__ import annotations

import os
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from relay.media.flv import classify
from relay.media.packets import MediaKind, MediaPacket
from relay.rtmp import amf0
from relay.rtmp.buffer import ReceiveBuffer
from relay.rtmp.chunks import ChunkLimits, ChunkReader, ChunkWriter, MessageType, RawMessage
from relay.rtmp.errors import LocalProtocolError, ProtocolError
from relay.rtmp.events import (
    NEED_DATA,
    CloseRequested,
    ConnectRequested,
    Event,
    HandshakeDone,
    MediaReceived,
    Need,
    PublishRequested,
    Unpublished,
)
from relay.rtmp.handshake import HandshakeState, ServerHandshake
from relay.rtmp.media import data_event, split_aggregate, strip_amf3_format
from relay.rtmp.states import Move, SessionState, next_state

_U32 = struct.Struct(">I")
_U16 = struct.Struct(">H")

CONTROL_CSID = 2
COMMAND_CSID = 3
STREAM_CSID = 5

USER_CONTROL_STREAM_BEGIN = 0
USER_CONTROL_SET_BUFFER_LENGTH = 3
USER_CONTROL_PING_REQUEST = 6
USER_CONTROL_PING_RESPONSE = 7

_MAX_NAME_BYTES = 4096

_MEDIA_KINDS: dict[int, MediaKind] = {MessageType.AUDIO: MediaKind.AUDIO, MessageType.VIDEO: MediaKind.VIDEO}
"""The media message types; a lookup per message instead of an Enum call (MediaKind(type_id))."""


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Limits and announced values of a server session."""

    chunk_limits: ChunkLimits = field(default_factory=ChunkLimits)
    """Bounds of the chunk reader once a publish is accepted."""
    preauth_chunk_limits: ChunkLimits | None = None
    """Bounds until a publish is accepted, while the peer is anonymous: the commands of a publish need a
    few hundred bytes, so an anonymous peer need not make us hold megabytes. None: `chunk_limits` from
    the start. Accepting a publish widens them to `chunk_limits` (never narrows)."""
    amf_limits: amf0.AmfLimits = field(default_factory=amf0.AmfLimits)
    """Bounds of every AMF0 decode."""
    max_buffered_bytes: int = 1 << 20
    """Unparsed bytes the session may hold; the user feeds less than this between drains."""
    out_chunk_size: int = 60000
    """Our outgoing chunk size, announced after connect. A publishing ffmpeg (7.1 and Debian's 5.1 alike) sends
    with the chunk size the server announces (it answers a Set Chunk Size with the same, and never sends one
    of its own otherwise: 128 bytes), so this is also the size of the chunks its media arrives in (GStreamer's
    rtmp2sink keeps its own, 128; see `ChunkReader`'s continuations): at 60000 (SRS's default) most
    messages of a 1080p30 stream come as one chunk, where at 4096 a frame was ~5, each a trip through the
    chunk reader's Python. `python -m bench.relay_cpu --wake-costs`, two alternating rounds: a read of the
    publisher 430 / 530 µs instead of 540 / 590 (no destination), 515 / 543 µs instead of 626 / 695 (one)."""
    window_ack_size: int = 5_000_000
    """Window Acknowledgement Size we announce (how often the client acks us)."""
    peer_bandwidth: int = 5_000_000
    """Set Peer Bandwidth we announce."""
    max_streams: int = 8
    """createStream calls allowed per connection."""


def _status(level: str, code: str, description: str) -> dict[str, Any]:
    return {"level": level, "code": code, "description": description}


class ServerSession:
    """Owns the protocol state of one publishing client: handshake, chunk stream, commands."""

    def __init__(
        self,
        config: SessionConfig | None = None,
        *,
        epoch_ms: int = 0,
        random_source: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.config = config or SessionConfig()
        self.state = SessionState.HANDSHAKE
        self.publish_stream_id: int | None = None
        """The message stream being published, once a publish was accepted."""
        self.bytes_received = 0
        """Total bytes fed in (what acknowledgements report)."""
        self._buffer = ReceiveBuffer(self.config.max_buffered_bytes)
        self._handshake = ServerHandshake(epoch_ms=epoch_ms, random_source=random_source)
        self._reader = ChunkReader(self.config.preauth_chunk_limits or self.config.chunk_limits)
        self._writer = ChunkWriter()
        self._out = bytearray()
        self._events: deque[Event] = deque()
        self._ack_window = 0
        self._last_ack = 0
        self._streams: set[int] = set()
        self._next_stream_id = 1
        self._pending_txid = 0.0
        self._pending_stream_id = 0

    # -- state table -------------------------------------------------------------------------------

    def _move(self, move: Move) -> None:
        self.state = next_state(self.state, move)

    # -- bytes in / out ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Feed bytes received from the client; acknowledgements due are queued for sending."""
        if self.state is SessionState.ERROR:
            raise LocalProtocolError("session already failed")
        if self.state is SessionState.CLOSED:
            return  # the user is closing; what the client still sends does not matter
        try:
            self._buffer.append(data)
        except ProtocolError:
            self.state = SessionState.ERROR
            raise
        self.bytes_received += len(data)
        if self._ack_window and self.bytes_received - self._last_ack >= self._ack_window:
            self._last_ack = self.bytes_received
            self._send_control(MessageType.ACKNOWLEDGEMENT, _U32.pack(self.bytes_received & 0xFFFFFFFF))

    def data_to_send(self) -> bytes:
        """Bytes to write to the client now (and forget)."""
        if not self._out:
            return b""  # most reads of a publish answer nothing
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def chunk_limits(self) -> ChunkLimits:
        """The chunk reader's bounds now (the pre-auth ones until a publish is accepted)."""
        return self._reader.limits

    @property
    def buffered_bytes(self) -> int:
        """Bytes held by the session: unparsed input plus partial messages."""
        return len(self._buffer) + self._reader.partial_bytes

    @property
    def inside_message(self) -> bool:
        """The peer stopped inside a message (part of a chunk header, or of a message's body, is here):
        the rest is due before the message gives an event."""
        return len(self._buffer) > 0 or self._reader.in_message

    def next_event(self) -> Event | Need:
        """The next event, or NEED_DATA. Raises ProtocolError if the client broke the protocol."""
        return self.take_media(None)

    def take_media(self, packets: list[MediaPacket] | None) -> Event | Need:
        """`next_event`, but the audio and video messages of the stream being published are appended to
        `packets` (the packet each `MediaReceived` would carry, in order) instead of coming one event each:
        what a read brought, in one call. Returns the first other event, or NEED_DATA; the packets appended
        came before it (and stay in `packets` when a protocol error is raised). An aggregate message's media
        still comes as `MediaReceived` events."""
        if self.state in (SessionState.CONNECT_PENDING, SessionState.PUBLISH_PENDING):
            raise LocalProtocolError(f"answer the pending request first ({self.state.value})")
        if self.state is SessionState.ERROR:
            raise LocalProtocolError("session already failed")
        try:
            return self._next_event(packets)
        except ProtocolError:
            self.state = SessionState.ERROR
            raise

    def _next_event(self, packets: list[MediaPacket] | None) -> Event | Need:
        if self._events:
            return self._events.popleft()
        if self.state is SessionState.CLOSED:
            return NEED_DATA
        if self.state is SessionState.HANDSHAKE:
            self._out += self._handshake.receive(self._buffer)
            if self._handshake.state is HandshakeState.WAIT_C2:
                self._out += self._handshake.receive(self._buffer)
            if self._handshake.state is not HandshakeState.DONE:
                return NEED_DATA
            self._move(Move.HANDSHAKE_DONE)
            return HandshakeDone(self._handshake.digest_form)
        reader, buffer = self._reader, self._buffer
        while True:
            message = reader.next_message(buffer)
            if message is None:
                return NEED_DATA
            if packets is not None and (kind := _MEDIA_KINDS.get(message.type_id)) is not None:
                if self.state is SessionState.PUBLISHING and message.stream_id == self.publish_stream_id:
                    packets.append(classify(kind, message.timestamp, message.payload))
                continue  # media outside a publish is dropped (`_handle`)
            self._handle(message)
            if self._events:
                return self._events.popleft()
            if self._closed():
                return NEED_DATA

    def _closed(self) -> bool:
        # A method, not an inline test: handlers change the state behind mypy's narrowing.
        return self.state is SessionState.CLOSED

    # -- decisions -----------------------------------------------------------------------------------

    def accept_connect(self) -> None:
        """Answer connect with success (and our window, bandwidth and chunk size)."""
        self._move(Move.ACCEPT_CONNECT)
        self._send_control(MessageType.WINDOW_ACK_SIZE, _U32.pack(self.config.window_ack_size))
        self._send_control(MessageType.SET_PEER_BANDWIDTH, _U32.pack(self.config.peer_bandwidth) + b"\x02")
        self._send_control(MessageType.SET_CHUNK_SIZE, _U32.pack(self.config.out_chunk_size))
        self._writer.chunk_size = self.config.out_chunk_size
        self._send_command(
            0,
            "_result",
            self._pending_txid,
            {"fmsVer": "FMS/3,0,1,123", "capabilities": 31.0},
            {**_status("status", "NetConnection.Connect.Success", "Connection succeeded."), "objectEncoding": 0.0},
        )

    def reject_connect(self, description: str = "Connection rejected.") -> None:
        """Answer connect with an error; then close the connection."""
        self._move(Move.REJECT)
        self._send_command(
            0, "_error", self._pending_txid, None, _status("error", "NetConnection.Connect.Rejected", description)
        )

    def accept_publish(self) -> None:
        """Start the stream: Stream Begin and onStatus NetStream.Publish.Start."""
        self._move(Move.ACCEPT_PUBLISH)
        # Before any media is parsed: what the client sent right behind its publish is read with these.
        self._reader.raise_limits(self.config.chunk_limits)
        stream_id = self._pending_stream_id
        self.publish_stream_id = stream_id
        begin = _U16.pack(USER_CONTROL_STREAM_BEGIN) + _U32.pack(stream_id)
        self._send_control(MessageType.USER_CONTROL, begin)
        self._send_status(stream_id, "status", "NetStream.Publish.Start", "Publishing started.")

    def reject_publish(self, code: str = "NetStream.Publish.BadName", description: str = "Publish refused.") -> None:
        """Refuse the publish with onStatus `code` (level error); then close the connection."""
        self._move(Move.REJECT)
        self._send_status(self._pending_stream_id, "error", code, description)

    # -- output helpers ------------------------------------------------------------------------------

    def _send_control(self, type_id: MessageType, payload: bytes) -> None:
        self._out += self._writer.write(CONTROL_CSID, type_id, 0, 0, payload)

    def _send_command(self, stream_id: int, *values: Any) -> None:
        csid = COMMAND_CSID if stream_id == 0 else STREAM_CSID
        self._out += self._writer.write(csid, MessageType.COMMAND_AMF0, stream_id, 0, amf0.encode(*values))

    def _send_status(self, stream_id: int, level: str, code: str, description: str) -> None:
        self._send_command(stream_id, "onStatus", 0.0, None, _status(level, code, description))

    # -- incoming messages ---------------------------------------------------------------------------

    def _handle(self, message: RawMessage) -> None:
        type_id = message.type_id
        payload = message.payload
        kind = _MEDIA_KINDS.get(type_id)
        if kind is not None:
            if self.state is SessionState.PUBLISHING and message.stream_id == self.publish_stream_id:
                self._events.append(MediaReceived(classify(kind, message.timestamp, payload)))
            return  # media outside a publish (e.g. right after unpublish) is dropped, as servers do
        if type_id == MessageType.DATA_AMF0 or type_id == MessageType.DATA_AMF3:
            if type_id == MessageType.DATA_AMF3:
                payload = strip_amf3_format(payload)
            if self.state is SessionState.PUBLISHING and message.stream_id == self.publish_stream_id:
                self._data(message.timestamp, payload)
            return
        if type_id == MessageType.COMMAND_AMF0 or type_id == MessageType.COMMAND_AMF3:
            if type_id == MessageType.COMMAND_AMF3:
                payload = strip_amf3_format(payload)
            self._command(message.stream_id, payload)
            return
        if type_id == MessageType.SET_CHUNK_SIZE:
            self._reader.set_chunk_size(_u32_field(payload, "Set Chunk Size"))
        elif type_id == MessageType.ABORT:
            self._reader.abort(_u32_field(payload, "Abort"))
        elif type_id == MessageType.WINDOW_ACK_SIZE:
            self._ack_window = _u32_field(payload, "Window Acknowledgement Size")
        elif type_id == MessageType.USER_CONTROL:
            self._user_control(payload)
        elif type_id == MessageType.AGGREGATE:
            if self.state is SessionState.PUBLISHING and message.stream_id == self.publish_stream_id:
                self._aggregate(message.timestamp, payload)
        # Acknowledgement, Set Peer Bandwidth, shared objects: nothing to do for a publish-only server.

    def _user_control(self, payload: bytes) -> None:
        if len(payload) < 2:
            raise ProtocolError("User Control message too short")
        event_type = _U16.unpack_from(payload)[0]
        if event_type == USER_CONTROL_PING_REQUEST:
            if len(payload) < 6:
                raise ProtocolError("Ping request too short")
            self._send_control(MessageType.USER_CONTROL, _U16.pack(USER_CONTROL_PING_RESPONSE) + payload[2:6])

    def _aggregate(self, timestamp: int, payload: bytes) -> None:
        for kind, ts, body in split_aggregate(timestamp, payload):
            if kind is MediaKind.DATA:
                self._data(ts, body)
            else:
                self._events.append(MediaReceived(classify(kind, ts, body)))

    def _data(self, timestamp: int, payload: bytes) -> None:
        event = data_event(timestamp, payload, self.config.amf_limits)
        if event is not None:
            self._events.append(event)

    def _command(self, stream_id: int, payload: bytes) -> None:
        values = amf0.decode_all(payload, self.config.amf_limits)
        if not values or not isinstance(values[0], str):
            raise ProtocolError("command without a name")
        name: str = values[0]
        txid = values[1] if len(values) > 1 and isinstance(values[1], float) else 0.0
        command_object = values[2] if len(values) > 2 else None
        args = values[3:]
        if self.state is SessionState.AWAIT_CONNECT:
            if name != "connect":
                raise ProtocolError("command before connect")
            if not isinstance(command_object, dict):
                raise ProtocolError("connect without a command object")
            app = command_object.get("app", "")
            tc_url = command_object.get("tcUrl", "")
            self._move(Move.CONNECT)
            self._pending_txid = txid
            self._events.append(
                ConnectRequested(
                    app if isinstance(app, str) else "", tc_url if isinstance(tc_url, str) else "", dict(command_object)
                )
            )
            return
        if name == "connect":
            raise ProtocolError("connect sent twice")
        handler = self._COMMANDS.get(name)
        if handler is not None:
            handler(self, stream_id, txid, args)
        elif name in ("_result", "_error", "onBWDone", "_checkbw", "receiveAudio", "receiveVideo"):
            pass  # replies to calls we never make, or hints meant for players
        elif txid:
            self._send_command(
                stream_id, "_error", txid, None, _status("error", "NetConnection.Call.Failed", "Unknown command.")
            )

    def _cmd_release_stream(self, stream_id: int, txid: float, args: list[Any]) -> None:
        if txid:
            self._send_command(0, "_result", txid, None, amf0.AmfSpecial.UNDEFINED)

    def _cmd_fc_publish(self, stream_id: int, txid: float, args: list[Any]) -> None:
        self._send_command(0, "onFCPublish", 0.0, None, {"code": "NetStream.Publish.Start", "description": "FCPublish"})

    def _cmd_create_stream(self, stream_id: int, txid: float, args: list[Any]) -> None:
        if len(self._streams) >= self.config.max_streams:
            raise ProtocolError("too many createStream calls")
        new_id = self._next_stream_id
        self._next_stream_id += 1
        self._streams.add(new_id)
        self._send_command(0, "_result", txid, None, float(new_id))

    def _cmd_publish(self, stream_id: int, txid: float, args: list[Any]) -> None:
        if stream_id not in self._streams:
            raise ProtocolError("publish on a stream that was not created")
        name = args[0] if args else None
        if not isinstance(name, str) or not name or len(name.encode()) > _MAX_NAME_BYTES:
            raise ProtocolError("publish without a valid name")
        publish_type = args[1] if len(args) > 1 and isinstance(args[1], str) else "live"
        self._move(Move.PUBLISH)
        self._pending_stream_id = stream_id
        self._events.append(PublishRequested(stream_id, name, publish_type))

    def _end_publish(self, command: str) -> None:
        stream_id = self.publish_stream_id
        assert stream_id is not None
        self._move(Move.UNPUBLISH)
        self.publish_stream_id = None
        self._send_status(stream_id, "status", "NetStream.Unpublish.Success", "Stream unpublished.")
        self._events.append(Unpublished(stream_id, command))

    def _cmd_fc_unpublish(self, stream_id: int, txid: float, args: list[Any]) -> None:
        self._send_command(
            0, "onFCUnpublish", 0.0, None, {"code": "NetStream.Unpublish.Success", "description": "FCUnpublish"}
        )
        if self.state is SessionState.PUBLISHING:
            self._end_publish("FCUnpublish")

    def _cmd_delete_stream(self, stream_id: int, txid: float, args: list[Any]) -> None:
        target = int(args[0]) if args and isinstance(args[0], float) and 0 <= args[0] < 2**32 else stream_id
        if self.state is SessionState.PUBLISHING and target == self.publish_stream_id:
            self._end_publish("deleteStream")
        self._streams.discard(target)

    def _cmd_close_stream(self, stream_id: int, txid: float, args: list[Any]) -> None:
        if self.state is SessionState.PUBLISHING and stream_id == self.publish_stream_id:
            self._end_publish("closeStream")

    def _cmd_play(self, stream_id: int, txid: float, args: list[Any]) -> None:
        # This relay only ingests; a player gets a clear refusal instead of silence.
        self._send_status(stream_id, "error", "NetStream.Play.Failed", "Playback is not offered here.")
        self._move(Move.REJECT)
        self._events.append(CloseRequested("play refused"))

    _COMMANDS: dict[str, Callable[[ServerSession, int, float, list[Any]], None]] = {
        "releaseStream": _cmd_release_stream,
        "FCPublish": _cmd_fc_publish,
        "createStream": _cmd_create_stream,
        "publish": _cmd_publish,
        "FCUnpublish": _cmd_fc_unpublish,
        "deleteStream": _cmd_delete_stream,
        "closeStream": _cmd_close_stream,
        "play": _cmd_play,
    }


def _u32_field(payload: bytes, what: str) -> int:
    if len(payload) < 4:
        raise ProtocolError(f"{what} message too short")
    value: int = _U32.unpack_from(payload)[0]
    if what == "Set Chunk Size" and value & 0x80000000:
        raise ProtocolError("negative chunk size")
    return value
