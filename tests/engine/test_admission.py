"""Publish admission alone, on a store of plain records: keys, tokens, state, the takeover rule, counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from relay.engine.admission import Admission, StreamKey, parse_srt_stream_key, parse_stream_key, split_stream_key
from relay.ingest.gate import (
    EndReason,
    PublisherHandle,
    PublishRefused,
    PublishRequest,
    RefusalReason,
    StreamInput,
    Transport,
)
from relay.media.packets import ContainerFormat
from relay.store.models import StreamRecord

TOKEN = "s3cret-token"


class Streams:
    """The two reads admission makes, over a dict."""

    def __init__(self, *streams: StreamRecord) -> None:
        self.by_id = {stream.id: stream for stream in streams}

    async def get_stream(self, stream_id: int, client_id: int | None = None) -> StreamRecord | None:
        return self.by_id.get(stream_id)

    def get_stream_blocking(self, stream_id: int) -> StreamRecord | None:
        return self.by_id.get(stream_id)


@dataclass
class Publisher:
    transport: Transport = Transport.RTMP
    peer: str = "127.0.0.1:50000"
    idle: float = 0.0

    def idle_seconds(self) -> float:
        return self.idle

    def disconnect(self, reason: EndReason) -> None:
        raise AssertionError("admission decides; it never disconnects anyone itself")


def stream(stream_id: int = 7, *, active: bool = True, passphrase: str | None = None) -> StreamRecord:
    return StreamRecord(
        id=stream_id,
        client_id=1,
        name="show",
        active=active,
        token=TOKEN,
        created_at=datetime.now(UTC),
        srt_passphrase=passphrase,
        srt_latency_ms=200,
    )


def request(key: str, transport: Transport = Transport.RTMP) -> PublishRequest:
    container = ContainerFormat.MPEGTS if transport is Transport.SRT else ContainerFormat.FLV
    return PublishRequest(stream_key=key, container=container, publisher=Publisher(transport))


def admission(
    *streams: StreamRecord, current: PublisherHandle | None = None, on: StreamInput = StreamInput.MAIN
) -> Admission:
    """`current` publishes on input `on` (the main unless told)."""
    return Admission(
        Streams(*streams),
        lambda stream_id, stream_input: current if stream_input is on else None,
        takeover_idle_seconds=4.0,
    )


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("7?abc", (7, "abc")),
        ("live/7?abc", (7, "abc")),
        ("7#abc", (7, "abc")),
        ("7%23a%2Fc", (7, "a/c")),
    ],
)
def test_stream_keys_name_a_stream_and_carry_its_token(key: str, expected: tuple[int, str]) -> None:
    assert split_stream_key(key) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("7?abc", StreamKey(7, StreamInput.MAIN, "abc")),
        ("in/123b?abc", StreamKey(123, StreamInput.BACKUP, "abc")),
        ("123b%23abc", StreamKey(123, StreamInput.BACKUP, "abc")),
    ],
)
def test_a_b_after_the_id_names_the_backup_input(key: str, expected: StreamKey) -> None:
    assert parse_stream_key(key) == expected


@pytest.mark.parametrize(
    ("streamid", "expected"),
    [
        ("123b#abc", StreamKey(123, StreamInput.BACKUP, "abc")),
        ("#!::r=123b#abc,m=publish", StreamKey(123, StreamInput.BACKUP, "abc")),
        ("123#abc", StreamKey(123, StreamInput.MAIN, "abc")),
    ],
)
def test_an_srt_streamid_names_the_backup_input_likewise(streamid: str, expected: StreamKey) -> None:
    assert parse_srt_stream_key(streamid) == expected


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("7", RefusalReason.BAD_REQUEST),
        ("x?abc", RefusalReason.UNKNOWN_STREAM),
        ("7bb?abc", RefusalReason.UNKNOWN_STREAM),
        ("b?abc", RefusalReason.UNKNOWN_STREAM),
        ("1234567890123456789?abc", RefusalReason.UNKNOWN_STREAM),
    ],
)
def test_malformed_keys_are_refused(key: str, reason: RefusalReason) -> None:
    with pytest.raises(PublishRefused) as refused:
        split_stream_key(key)
    assert refused.value.reason is reason


async def test_the_right_token_of_an_active_stream_is_admitted() -> None:
    admitted = await admission(stream()).admit(request(f"7?{TOKEN}"))
    assert admitted.stream.id == 7
    assert admitted.replaces is None


@pytest.mark.parametrize(
    ("streams", "key", "reason"),
    [
        ((), f"7?{TOKEN}", RefusalReason.UNKNOWN_STREAM),
        ((stream(),), "7?wrong", RefusalReason.BAD_TOKEN),
        ((stream(active=False),), f"7?{TOKEN}", RefusalReason.INACTIVE),
    ],
)
async def test_refusals_are_counted_by_transport_and_reason(
    streams: tuple[StreamRecord, ...], key: str, reason: RefusalReason
) -> None:
    gate = admission(*streams)
    with pytest.raises(PublishRefused) as refused:
        await gate.admit(request(key))
    assert refused.value.reason is reason
    assert TOKEN not in str(refused.value)
    assert gate.refusals == {("rtmp", reason.value): 1}


async def test_a_sending_publisher_keeps_its_stream_and_a_silent_one_is_taken_over() -> None:
    sending = Publisher(idle=0.5)
    with pytest.raises(PublishRefused) as refused:
        await admission(stream(), current=sending).admit(request(f"7?{TOKEN}"))
    assert refused.value.reason is RefusalReason.ALREADY_LIVE

    silent = Publisher(idle=4.5)
    admitted = await admission(stream(), current=silent).admit(request(f"7?{TOKEN}"))
    assert admitted.replaces is silent


async def test_the_takeover_rule_applies_per_input() -> None:
    sending_main = Publisher(idle=0.1)
    admitted = await admission(stream(), current=sending_main).admit(request(f"7b?{TOKEN}"))
    assert (admitted.input, admitted.replaces) == (StreamInput.BACKUP, None)
    sending_backup = Publisher(idle=0.1)
    gate = admission(stream(), current=sending_backup, on=StreamInput.BACKUP)
    with pytest.raises(PublishRefused) as refused:
        await gate.admit(request(f"7b?{TOKEN}"))
    assert refused.value.reason is RefusalReason.ALREADY_LIVE
    assert (await gate.admit(request(f"7?{TOKEN}"))).input is StreamInput.MAIN
    with pytest.raises(PublishRefused):
        gate.check(f"7b#{TOKEN}")
    assert gate.check(f"7#{TOKEN}").stream_id == 7


async def test_nothing_is_admitted_once_the_node_stops() -> None:
    gate = admission(stream())
    gate.stop_accepting()
    with pytest.raises(PublishRefused) as refused:
        await gate.admit(request(f"7?{TOKEN}"))
    assert refused.value.reason is RefusalReason.UNAVAILABLE
    assert gate.refusals == {("rtmp", "unavailable"): 1}


def test_srt_handshakes_get_the_stream_s_passphrase_and_latency() -> None:
    gate = admission(stream(passphrase="pass-phrase-1"))
    admit = gate.check(f"#!::r=7#{TOKEN},m=publish")
    assert (admit.stream_id, admit.passphrase, admit.latency_ms) == (7, "pass-phrase-1", 200)
    with pytest.raises(PublishRefused) as refused:
        gate.check("7#wrong")
    assert refused.value.reason is RefusalReason.BAD_TOKEN
    with pytest.raises(PublishRefused):
        admission(stream(), current=Publisher(Transport.SRT, idle=0.1)).check(f"7#{TOKEN}")
    assert gate.refusals == {("srt", "bad_token"): 1}


def test_refusals_decided_by_an_ingest_server_are_counted_too() -> None:
    gate = admission()
    gate.refused(Transport.RTMPS, RefusalReason.CONNECTION_LIMIT)
    assert gate.refusals == {("rtmps", "connection_limit"): 1}
