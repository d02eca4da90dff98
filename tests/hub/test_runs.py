"""A publisher read's media as runs: framed into one chunk per run, cut before each keyframe and around each
configuration packet, cached and offered once per subscriber (`Hub._end_run`).

What a reader gets must not change with the unit: the same tags in the same order, a late joiner starting
on the last keyframe even when it came in the middle of a read, a subscriber that overflowed resuming on
the first keyframe after it (not on the read that carries it), configuration kept through a flush.
"""

from __future__ import annotations

from relay.hub import Hub, HubSettings, SubscriberLimits
from relay.ingest.gate import IngestSink, SourceType
from relay.media.flv import flv_header
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from tests.fakes.clock import FakeClock
from tests.hub.helpers import AUDIO_CONFIG, Recorder, audio, config_packets, drain, feed, tags, video

FLV_HEAD = flv_header()


def live(**settings: object) -> tuple[Hub, IngestSink]:
    hub = Hub(7, HubSettings(**settings), FakeClock(), Recorder())  # type: ignore[arg-type]
    return hub, hub.open_session(ContainerFormat.FLV, SourceType.RTMP)


def read(sink: IngestSink, packets: list[MediaPacket]) -> None:
    """One publisher read: its packets in one batch, as the ingests write them."""
    with sink.batch():
        feed(sink, packets)


def media(data: bytes) -> list[tuple[MediaKind, int]]:
    return [(p.kind, p.timestamp_ms) for p in tags(data) if not p.config]


def test_a_read_reaches_each_subscriber_as_the_same_tags_in_one_chunk_a_run() -> None:
    hub, sink = live()
    read(sink, [*config_packets(), video(0, key=True)])
    subs = [hub.subscribe() for _ in range(3)]
    for sub in subs:
        drain(sub)
    read(sink, [audio(10), video(33), audio(33), video(66)])
    # One run, one chunk: every subscriber holds the one bytes object the hub framed.
    assert [len(sub._queue) for sub in subs] == [1, 1, 1]
    assert subs[0]._queue[0].data is subs[2]._queue[0].data
    got = drain(subs[0])
    assert media(FLV_HEAD + got) == [
        (MediaKind.AUDIO, 10),
        (MediaKind.VIDEO, 33),
        (MediaKind.AUDIO, 33),
        (MediaKind.VIDEO, 66),
    ]
    assert drain(subs[1]) == got


def test_a_late_joiner_starts_on_a_keyframe_that_came_in_the_middle_of_a_read() -> None:
    hub, sink = live()
    read(sink, [*config_packets(), video(0, key=True), audio(10)])
    read(sink, [video(33), audio(40), video(66, key=True), audio(70), video(100)])
    joiner = hub.subscribe()
    got = tags(drain(joiner))
    assert [p.config for p in got[:3]] == [True, True, True]
    assert [(p.kind, p.timestamp_ms, p.keyframe) for p in got[3:]] == [
        (MediaKind.VIDEO, 66, True),
        (MediaKind.AUDIO, 70, False),
        (MediaKind.VIDEO, 100, False),
    ]


def test_a_subscriber_that_overflowed_resumes_on_the_keyframe_inside_a_read() -> None:
    hub, sink = live(subscriber=SubscriberLimits(max_bytes=3000, max_seconds=100, overflow_restart_count=9))
    read(sink, [*config_packets(), video(0, key=True)])
    sub = hub.subscribe()
    for i in range(1, 8):
        read(sink, [video(33 * i, size=400), audio(33 * i + 1)])
    assert sub.overflows == 1
    read(sink, [video(300, size=400), audio(301), video(333, key=True), audio(334), video(366)])
    got = tags(drain(sub))
    assert [p.config for p in got[:3]] == [True, True, True]  # the header and configuration survived the flush
    assert [(p.timestamp_ms, p.keyframe) for p in got[3:]] == [(333, True), (334, False), (366, False)]


def test_a_configuration_packet_inside_a_read_goes_alone_and_survives_a_flush() -> None:
    hub, sink = live(subscriber=SubscriberLimits(max_bytes=3000, max_seconds=100, overflow_restart_count=9))
    read(sink, [*config_packets(), video(0, key=True)])
    sub = hub.subscribe()
    drain(sub)
    new_audio_config = MediaPacket(MediaKind.AUDIO, 50, AUDIO_CONFIG[:-1] + b"\x99", config=True)
    read(sink, [video(33, size=400), new_audio_config, audio(50)])
    assert [c.config for c in sub._queue] == [False, True, False]
    for i in range(2, 10):
        read(sink, [video(33 * i, size=400)])  # overflows: the queue is flushed to its configuration
    assert sub.overflows >= 1
    queued = tags(FLV_HEAD + drain(sub))
    assert [p.payload for p in queued if p.config] == [new_audio_config.payload]
    # A joiner gets the new configuration in its header.
    assert new_audio_config.payload in [p.payload for p in tags(drain(hub.subscribe())) if p.config]


def test_an_audio_only_read_is_one_run_a_joiner_and_a_skipping_subscriber_may_start_on() -> None:
    hub, sink = live(subscriber=SubscriberLimits(max_bytes=1500, max_seconds=100, overflow_restart_count=99))
    read(sink, [MediaPacket(MediaKind.AUDIO, 0, AUDIO_CONFIG, config=True)])
    sub = hub.subscribe()
    drain(sub)
    for i in range(20):
        read(sink, [audio(i * 69, size=100), audio(i * 69 + 23, size=100), audio(i * 69 + 46, size=100)])
    assert sub.overflows >= 1 and sub.queued_bytes > 0  # it carries on with the next read's audio
    assert media(FLV_HEAD + drain(sub))[-1] == (MediaKind.AUDIO, 19 * 69 + 46)
    got = tags(drain(hub.subscribe()))
    assert got[0].config and len(got) > 3 and got[-1].timestamp_ms == 19 * 69 + 46
