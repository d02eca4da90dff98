from __future__ import annotations

import itertools
import struct

import pytest

from relay.media.flv import classify
from relay.media.packets import MediaKind, MediaPacket
from relay.rtmp import amf0
from relay.rtmp.chunks import ChunkLimits, ChunkWriter, MessageType, encode_chunk_header
from relay.rtmp.errors import LocalProtocolError, ProtocolError
from relay.rtmp.events import (
    NEED_DATA,
    CloseRequested,
    ConnectRequested,
    HandshakeDone,
    MediaReceived,
    MetadataReceived,
    PublishRequested,
    Unpublished,
)
from relay.rtmp.session import ServerSession, SessionConfig
from relay.rtmp.states import SessionState
from relay.transitions import IllegalTransition
from tests.rtmp.sessions import (
    AUDIO_CONFIG,
    METADATA,
    VIDEO_CONFIG,
    VIDEO_KEY,
    drain,
    feed,
    handshake,
    media,
    publishing_session_bytes,
    set_data_frame,
    u32,
)
from tests.rtmp.wire import ServerReplies, command, control, digest_c1, publish_script

OUT_CHUNK_SIZE = SessionConfig().out_chunk_size


def published(name: str = "12?tok") -> tuple[ServerSession, ServerReplies]:
    session = ServerSession()
    replies = ServerReplies()
    feed(session, handshake() + b"".join(publish_script(name)))
    replies.feed(session.data_to_send())
    assert session.state is SessionState.PUBLISHING
    return session, replies


def test_full_publish_conversation() -> None:
    session = ServerSession()
    replies = ServerReplies()
    events = feed(session, handshake() + b"".join(publish_script("12?tok")))
    replies.feed(session.data_to_send())
    assert events == [
        HandshakeDone(False),
        ConnectRequested(
            "live", "rtmp://127.0.0.1/live", {"app": "live", "type": "nonprivate", "tcUrl": "rtmp://127.0.0.1/live"}
        ),
        PublishRequested(1, "12?tok", "live"),
    ]
    types = [m.type_id for m in replies.messages]
    assert types[:3] == [MessageType.WINDOW_ACK_SIZE, MessageType.SET_PEER_BANDWIDTH, MessageType.SET_CHUNK_SIZE]
    # ffmpeg publishes in the chunk size announced here: large, so that a frame is one chunk, not several.
    assert replies.messages[2].payload == u32(OUT_CHUNK_SIZE) and OUT_CHUNK_SIZE == 60000
    names = [c[0] for c in replies.commands]
    assert names == ["_result", "_result", "onFCPublish", "_result", "onStatus"]
    assert replies.commands[0][3]["code"] == "NetConnection.Connect.Success"
    assert replies.commands[3][1:] == [4.0, None, 1.0]  # createStream -> stream id 1
    assert replies.commands[4][3]["code"] == "NetStream.Publish.Start"
    begin = [m for m in replies.messages if m.type_id == MessageType.USER_CONTROL]
    assert begin[0].payload == b"\x00\x00" + u32(1)  # Stream Begin 1
    onstatus = [m for m in replies.messages if m.type_id == MessageType.COMMAND_AMF0][-1]
    assert onstatus.stream_id == 1


def test_media_and_metadata_events() -> None:
    session, _ = published()
    data = (
        set_data_frame(0)
        + media(MediaKind.VIDEO, 0, VIDEO_CONFIG)
        + media(MediaKind.AUDIO, 0, AUDIO_CONFIG, 4)
        + media(MediaKind.VIDEO, 40, VIDEO_KEY)
        + ChunkWriter().write(4, MessageType.DATA_AMF0, 1, 50, METADATA)
        + ChunkWriter().write(4, MessageType.DATA_AMF0, 1, 60, amf0.encode("onCuePoint", {"n": 1.0}))
    )
    events = feed(session, data)
    assert events[0] == MetadataReceived(
        MediaPacket(MediaKind.DATA, 0, METADATA, config=True), {"width": 320.0, "height": 240.0, "framerate": 25.0}
    )
    assert events[1] == MediaReceived(classify(MediaKind.VIDEO, 0, VIDEO_CONFIG))
    assert events[1].packet.config
    assert events[2] == MediaReceived(classify(MediaKind.AUDIO, 0, AUDIO_CONFIG))
    assert events[3] == MediaReceived(MediaPacket(MediaKind.VIDEO, 40, VIDEO_KEY, keyframe=True))
    assert isinstance(events[4], MetadataReceived) and events[4].packet.payload == METADATA
    assert events[5] == MediaReceived(MediaPacket(MediaKind.DATA, 60, amf0.encode("onCuePoint", {"n": 1.0})))


def test_whole_byte_by_byte_and_trailing_give_the_same_events() -> None:
    data = publishing_session_bytes()
    whole_session = ServerSession(random_source=lambda n: bytes(n))
    whole = feed(whole_session, data)
    whole_out = whole_session.data_to_send()
    stepped_session = ServerSession(random_source=lambda n: bytes(n))
    stepped = feed(stepped_session, data, step=1)
    assert stepped == whole
    assert stepped_session.data_to_send() == whole_out
    assert isinstance(whole[-1], Unpublished) and whole[-1].command == "FCUnpublish"
    trailing_session = ServerSession(random_source=lambda n: bytes(n))
    assert feed(trailing_session, data + b"\x06\x00\x00") == whole


def test_nothing_comes_out_before_the_last_byte_of_a_message() -> None:
    session, _ = published()
    data = media(MediaKind.VIDEO, 0, VIDEO_KEY + bytes(500))
    for index in range(len(data) - 1):
        session.receive_data(data[index : index + 1])
        assert session.next_event() is NEED_DATA
    session.receive_data(data[-1:])
    assert isinstance(session.next_event(), MediaReceived)


@pytest.mark.parametrize(
    "ending",
    [
        [command("FCUnpublish", 6.0, None, "12?tok"), command("deleteStream", 7.0, None, 1.0)],
        [command("deleteStream", 6.0, None, 1.0)],
        [command("closeStream", 0.0, None, stream_id=1, csid=8)],
    ],
)
def test_deliberate_unpublish(ending: list[bytes]) -> None:
    session, _ = published()
    events = feed(session, b"".join(ending))
    assert [type(e) for e in events] == [Unpublished]
    replies = ServerReplies(handshake_done=True)
    replies.feed(session.data_to_send())
    assert "NetStream.Unpublish.Success" in replies.status_codes()
    assert session.state is SessionState.CONNECTED
    # Stray media after unpublish is dropped, not an error.
    assert feed(session, media(MediaKind.VIDEO, 0, VIDEO_KEY)) == []


def test_acknowledgements_follow_the_clients_window() -> None:
    session, _ = published()
    feed(session, control(MessageType.WINDOW_ACK_SIZE, u32(1000)))
    start = session.bytes_received
    replies = ServerReplies(handshake_done=True)
    replies.feed(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00" + u32(OUT_CHUNK_SIZE))  # the session's
    sequence = []
    for _ in range(6):
        feed(session, media(MediaKind.AUDIO, 0, b"\xaf\x01" + bytes(498), csid=4))
        replies.feed(session.data_to_send())
    for message in replies.messages:
        if message.type_id == MessageType.ACKNOWLEDGEMENT:
            sequence.append(struct.unpack(">I", message.payload)[0])
    # The first ack covers everything so far; then one per window's worth of bytes.
    assert len(sequence) >= 2 and sequence[0] > start
    assert all(b - a >= 1000 for a, b in itertools.pairwise(sequence))
    assert sequence[-1] <= session.bytes_received


def test_no_acknowledgements_without_a_window() -> None:
    session, _ = published()
    feed(session, media(MediaKind.AUDIO, 0, b"\xaf\x01" + bytes(9000), csid=4))
    replies = ServerReplies(handshake_done=True)
    replies.feed(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00" + u32(OUT_CHUNK_SIZE) + session.data_to_send())
    assert not [m for m in replies.messages if m.type_id == MessageType.ACKNOWLEDGEMENT]


def test_ping_request_gets_a_ping_response() -> None:
    session, _ = published()
    feed(session, control(MessageType.USER_CONTROL, b"\x00\x06" + u32(123456)))
    replies = ServerReplies(handshake_done=True)
    replies.feed(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00" + u32(OUT_CHUNK_SIZE) + session.data_to_send())
    pongs = [m.payload for m in replies.messages if m.type_id == MessageType.USER_CONTROL]
    assert pongs == [b"\x00\x07" + u32(123456)]


def test_client_chunk_size_applies_to_following_chunks() -> None:
    session, _ = published()
    body = VIDEO_KEY + bytes(10_000)
    events = feed(
        session,
        control(MessageType.SET_CHUNK_SIZE, u32(4096)) + media(MediaKind.VIDEO, 0, body, writer=ChunkWriter(4096)),
    )
    assert events == [MediaReceived(classify(MediaKind.VIDEO, 0, body))]


@pytest.mark.parametrize("value", [0, 0x80000000, 0x7FFFFFFF, (1 << 20) + 1])
def test_bad_chunk_size_is_a_protocol_error(value: int) -> None:
    session, _ = published()
    with pytest.raises(ProtocolError):
        feed(session, control(MessageType.SET_CHUNK_SIZE, u32(value)))
    with pytest.raises(LocalProtocolError):  # the session is dead after a protocol error
        session.next_event()


def test_abort_message() -> None:
    session, _ = published()
    partial = media(MediaKind.VIDEO, 0, bytes(300))[:140]
    events = feed(session, partial + control(MessageType.ABORT, u32(6)) + media(MediaKind.VIDEO, 5, VIDEO_KEY))
    assert events == [MediaReceived(classify(MediaKind.VIDEO, 5, VIDEO_KEY))]


def test_aggregate_message_is_split_into_tags() -> None:
    session, _ = published()
    tags = b""
    for ts, kind, body in [(1000, 9, VIDEO_KEY), (1020, 8, b"\xaf\x01xx")]:
        tags += bytes([kind]) + len(body).to_bytes(3, "big") + (ts & 0xFFFFFF).to_bytes(3, "big") + b"\x00"
        tags += b"\x00\x00\x00" + body + u32(11 + len(body))
    events = feed(session, ChunkWriter().write(6, MessageType.AGGREGATE, 1, 5000, tags))
    assert events == [
        MediaReceived(classify(MediaKind.VIDEO, 5000, VIDEO_KEY)),
        MediaReceived(classify(MediaKind.AUDIO, 5020, b"\xaf\x01xx")),
    ]


def test_play_is_refused() -> None:
    session = ServerSession()
    events = feed(
        session,
        handshake()
        + publish_script("x")[0]
        + command("createStream", 2.0, None)
        + command("play", 3.0, None, "12?tok", stream_id=1, csid=8),
    )
    assert isinstance(events[-1], CloseRequested) and events[-1].reason == "play refused"
    replies = ServerReplies()
    replies.feed(session.data_to_send())
    assert replies.status_codes()[-1] == "NetStream.Play.Failed"
    assert session.state is SessionState.CLOSED
    session.receive_data(b"more bytes are ignored")
    assert session.next_event() is NEED_DATA


def test_rejected_publish_says_bad_name() -> None:
    session = ServerSession()
    feed(session, handshake() + b"".join(publish_script("12?bad")), accept=False)
    replies = ServerReplies()
    replies.feed(session.data_to_send())
    assert replies.status_codes()[-1] == "NetStream.Publish.BadName"
    assert session.state is SessionState.CLOSED


def test_reject_connect() -> None:
    session = ServerSession()
    session.receive_data(handshake() + publish_script("x")[0])
    assert isinstance(session.next_event(), HandshakeDone)
    assert isinstance(session.next_event(), ConnectRequested)
    session.reject_connect()
    replies = ServerReplies()
    replies.feed(session.data_to_send())
    assert replies.commands[-1][0] == "_error"
    assert replies.status_codes() == ["NetConnection.Connect.Rejected"]


def test_unknown_command_with_transaction_gets_an_error() -> None:
    session, _ = published()
    feed(session, command("getStreamLength", 9.0, None, "x"))
    replies = ServerReplies(handshake_done=True)
    replies.feed(b"\x02\x00\x00\x00\x00\x00\x04\x01\x00\x00\x00\x00" + u32(OUT_CHUNK_SIZE) + session.data_to_send())
    assert replies.commands[-1][:2] == ["_error", 9.0]


@pytest.mark.parametrize(
    "script",
    [
        [command("createStream", 1.0, None)],  # before connect
        [*publish_script("x")[:1], command("connect", 2.0, {"app": "a"})],  # connect twice
        [*publish_script("x")[:1], command("publish", 2.0, None, "x", "live", stream_id=1)],  # no createStream
        [*publish_script("x")[:4], command("publish", 5.0, None, "", stream_id=1)],  # empty name
        [ChunkWriter().write(3, MessageType.COMMAND_AMF0, 0, 0, amf0.encode(1.0, 2.0))],  # no name
        [ChunkWriter().write(3, MessageType.COMMAND_AMF3, 0, 0, b"\x11\x06")],  # real AMF3
    ],
)
def test_illegal_command_sequences(script: list[bytes]) -> None:
    with pytest.raises(ProtocolError):
        feed(ServerSession(), handshake() + b"".join(script))


def test_amf3_command_wrapper_with_amf0_body_is_accepted() -> None:
    session = ServerSession()
    payload = b"\x00" + amf0.encode("connect", 1.0, {"app": "live"})
    events = feed(session, handshake() + ChunkWriter().write(3, MessageType.COMMAND_AMF3, 0, 0, payload))
    assert isinstance(events[-1], ConnectRequested) and events[-1].app == "live"


def test_our_own_misuse_is_a_local_error() -> None:
    session = ServerSession()
    with pytest.raises(IllegalTransition):  # an illegal move of ours in the state table
        session.accept_publish()
    session.receive_data(handshake() + publish_script("x")[0])
    session.next_event()
    session.next_event()  # ConnectRequested, not yet answered
    with pytest.raises(LocalProtocolError):
        session.next_event()


def test_digest_handshake_through_the_session() -> None:
    session = ServerSession()
    session.receive_data(b"\x03" + digest_c1(772))
    assert session.next_event() is NEED_DATA
    assert len(session.data_to_send()) == 1 + 2 * 1536
    session.receive_data(bytes(1536))
    assert session.next_event() == HandshakeDone(True)


def test_receive_buffer_cap() -> None:
    session = ServerSession(SessionConfig(max_buffered_bytes=4096))
    session.receive_data(bytes(4096))
    with pytest.raises(ProtocolError, match="buffer"):
        session.receive_data(b"\x03")


def test_too_many_streams() -> None:
    session = ServerSession(SessionConfig(max_streams=2))
    script = publish_script("x")[:1] + [command("createStream", float(i), None) for i in range(2, 5)]
    with pytest.raises(ProtocolError, match="createStream"):
        feed(session, handshake() + b"".join(script))


def test_republish_on_the_same_connection() -> None:
    session, _ = published()
    feed(session, command("FCUnpublish", 6.0, None, "12?tok"))
    events = feed(session, command("publish", 7.0, None, "12?tok", "live", stream_id=1, csid=8))
    assert events == [PublishRequested(1, "12?tok", "live")]
    assert session.state is SessionState.PUBLISHING
    assert drain(session) == []


PREAUTH = SessionConfig(
    chunk_limits=ChunkLimits(max_message_bytes=1 << 20, max_partial_bytes=2 << 20),
    preauth_chunk_limits=ChunkLimits(max_message_bytes=1024, max_partial_bytes=2048),
)


def test_an_anonymous_peer_cannot_announce_a_large_message() -> None:
    # Refused on the header alone: nothing of the body is waited for or held.
    for stage in (handshake(), handshake() + publish_script("x")[0]):
        session = ServerSession(PREAUTH)
        feed(session, stage)
        session.receive_data(encode_chunk_header(0, 3, length=1025, type_id=MessageType.COMMAND_AMF0))
        with pytest.raises(ProtocolError, match="over the limit"):
            drain(session)
    session = ServerSession(PREAUTH)
    halves = [encode_chunk_header(0, csid, length=1000, type_id=MessageType.VIDEO) for csid in (4, 5, 6)]
    session.receive_data(handshake() + b"".join(h + b"v" * 128 for h in halves))
    with pytest.raises(ProtocolError, match="partial"):
        drain(session)


def test_accepting_the_publish_raises_the_limits_before_the_media_behind_it() -> None:
    big_key = VIDEO_KEY + bytes(200_000)
    session = ServerSession(PREAUTH)
    assert session.chunk_limits == PREAUTH.preauth_chunk_limits
    # The client pipelines a large keyframe right behind its publish: it is read with the raised limits.
    events = feed(session, handshake() + b"".join(publish_script("12?tok")) + media(MediaKind.VIDEO, 0, big_key))
    assert session.chunk_limits == PREAUTH.chunk_limits
    assert [e.packet.payload for e in events if isinstance(e, MediaReceived)] == [big_key]


def test_a_refused_publish_keeps_the_preauth_limits() -> None:
    session = ServerSession(PREAUTH)
    feed(session, handshake() + b"".join(publish_script("12?bad")), accept=False)
    assert session.chunk_limits == PREAUTH.preauth_chunk_limits


def _take_all(session: ServerSession) -> list[object]:
    """What `take_media` gives until NEED_DATA: each call's packets (a list, when any), then its event;
    connect and publish are accepted, as `drain` does."""
    out: list[object] = []
    while True:
        packets: list[MediaPacket] = []
        event = session.take_media(packets)
        if packets:
            out.append(packets)
        if event is NEED_DATA:
            return out
        out.append(event)
        if isinstance(event, ConnectRequested):
            session.accept_connect()
        elif isinstance(event, PublishRequested):
            session.accept_publish()


def test_take_media_gives_the_media_between_two_events_in_one_list() -> None:
    session, _ = published()
    cue = amf0.encode("onCuePoint", {"n": 1.0})
    data = (
        set_data_frame(0)
        + media(MediaKind.VIDEO, 0, VIDEO_CONFIG)
        + media(MediaKind.AUDIO, 0, AUDIO_CONFIG, 4)
        + media(MediaKind.VIDEO, 40, VIDEO_KEY)
        + ChunkWriter().write(4, MessageType.DATA_AMF0, 1, 60, cue)
        + media(MediaKind.AUDIO, 63, b"\xaf\x01aa", 4)
        + ChunkWriter().write(7, MessageType.VIDEO, 2, 70, VIDEO_KEY)  # not the published stream: dropped
    )
    session.receive_data(data)
    got = _take_all(session)
    assert isinstance(got[0], MetadataReceived)
    assert got[1:] == [
        [
            classify(MediaKind.VIDEO, 0, VIDEO_CONFIG),
            classify(MediaKind.AUDIO, 0, AUDIO_CONFIG),
            MediaPacket(MediaKind.VIDEO, 40, VIDEO_KEY, keyframe=True),
        ],
        MediaReceived(MediaPacket(MediaKind.DATA, 60, cue)),  # data messages stay events
        [classify(MediaKind.AUDIO, 63, b"\xaf\x01aa")],
    ]


def test_take_media_and_next_event_give_the_same_media_in_the_same_order() -> None:
    frames = [
        media(MediaKind.VIDEO, ts, VIDEO_KEY) if ts % 40 == 0 else media(MediaKind.AUDIO, ts, b"\xaf\x01" * 90, 4)
        for ts in range(0, 2000, 20)
    ]
    data = b"".join([handshake(), *publish_script("12?tok"), set_data_frame(), *frames])
    events = feed(ServerSession(random_source=lambda n: bytes(n)), data, step=997)
    taken = ServerSession(random_source=lambda n: bytes(n))
    flattened: list[object] = []
    for start in range(0, len(data), 997):
        taken.receive_data(data[start : start + 997])
        for item in _take_all(taken):
            flattened += [MediaReceived(packet) for packet in item] if isinstance(item, list) else [item]
    assert flattened == events
    assert sum(isinstance(e, MediaReceived) for e in events) == 100
