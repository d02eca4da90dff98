from __future__ import annotations

import pytest

from relay.hub import (
    EndCause,
    Hub,
    HubSettings,
    HubState,
    LiveEnded,
    LiveEndReason,
    SourceResumed,
    SubscriberLimits,
)
from relay.ingest.gate import EndReason, SourceType
from relay.media.flv import FLV_HEADER_SIZE, flv_header
from relay.media.mpegts import MpegTsReader
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from tests.fakes.clock import FakeClock
from tests.hub.helpers import (
    AUDIO_CONFIG,
    Recorder,
    audio,
    config_packets,
    drain,
    feed,
    tags,
    ts_packet,
    ts_pat,
    ts_pmt,
    video,
)

FLV_HEAD = flv_header()


def state_of(hub: Hub) -> HubState:
    """The hub's state, read afresh (an earlier `assert hub.state is X` would narrow it for the type checker)."""
    return hub.state


def make_hub(**kw: object) -> tuple[Hub, FakeClock, Recorder]:
    clock = FakeClock()
    rec = Recorder()
    settings = HubSettings(**kw)  # type: ignore[arg-type]
    return Hub(7, settings, clock, rec), clock, rec


def open_flv(hub: Hub):  # type: ignore[no-untyped-def]
    return hub.open_session(ContainerFormat.FLV, SourceType.RTMP)


def test_late_joiner_gets_header_config_and_gop() -> None:
    hub, _, rec = make_hub()
    sink = open_flv(hub)
    feed(sink, config_packets())
    feed(sink, [video(0, key=True), audio(10), video(33), video(66, key=True), audio(70), video(100)])
    sub = hub.subscribe()
    data = drain(sub)
    assert data[:3] == b"FLV" and data[4] == 0x05
    got = tags(data)
    assert [p.kind for p in got[:3]] == [MediaKind.DATA, MediaKind.VIDEO, MediaKind.AUDIO]
    assert got[1].config and got[2].config
    assert [(p.kind, p.timestamp_ms) for p in got[3:]] == [
        (MediaKind.VIDEO, 66),
        (MediaKind.AUDIO, 70),
        (MediaKind.VIDEO, 100),
    ]
    assert got[3].keyframe
    sink.write(video(133))
    assert [p.timestamp_ms for p in tags(FLV_HEAD + drain(sub))] == [133]
    assert rec.kinds() == ["LiveStarted"]


def test_subscriber_overflow_skips_to_next_keyframe_and_keeps_config() -> None:
    limits = SubscriberLimits(max_bytes=2000, max_seconds=100, overflow_restart_count=3)
    hub, _, _ = make_hub(subscriber=limits)
    sink = open_flv(hub)
    feed(sink, config_packets())
    sub = hub.subscribe()
    feed(sink, [video(0, key=True)] + [video(33 * i) for i in range(1, 30)])
    assert sub.queued_bytes <= 2000
    assert sub.overflows == 1
    sink.write(video(2000, key=True))
    data = drain(sub)
    got = tags(data)
    # The FLV header and the configuration survived the flush; media restarts on the keyframe.
    assert data[:3] == b"FLV"
    assert [p.config for p in got[:3]] == [True, True, True]
    media = [p for p in got if not p.config]
    assert media[0].keyframe
    assert media[-1].timestamp_ms == 2000


def test_subscriber_overflow_by_seconds() -> None:
    limits = SubscriberLimits(max_bytes=10**9, max_seconds=1.0)
    hub, _, _ = make_hub(subscriber=limits)
    sink = open_flv(hub)
    sub = hub.subscribe()
    feed(sink, [video(0, key=True)] + [video(100 * i) for i in range(1, 15)])
    assert sub.overflows == 1
    assert sub.queued_seconds <= 1.0


def test_repeated_overflow_ends_subscriber_for_restart() -> None:
    limits = SubscriberLimits(
        max_bytes=1000, max_seconds=100, overflow_restart_count=3, overflow_restart_window_seconds=10
    )
    hub, clock, rec = make_hub(subscriber=limits)
    sink = open_flv(hub)
    sub = hub.subscribe()
    other = hub.subscribe()
    for n in range(3):
        for packet in [video(n * 1000, key=True)] + [video(n * 1000 + i) for i in range(1, 20)]:
            sink.write(packet)
            drain(other)
        clock.advance(1)
    assert sub.end_cause is EndCause.OVERFLOW
    assert other.end_cause is None  # the fast one is untouched
    assert rec.kinds() == ["LiveStarted"]  # the push learns it from its subscriber's end, not from the hub
    assert hub.subscriber_count == 1


def test_skip_to_keyframe_asked_by_the_push_drops_the_backlog_but_never_ends_the_subscriber() -> None:
    limits = SubscriberLimits(overflow_restart_count=3, overflow_restart_window_seconds=10)
    hub, _, _ = make_hub(subscriber=limits)
    sink = open_flv(hub)
    feed(sink, config_packets())
    sub = hub.subscribe()
    for n in range(5):  # its destination is behind live again and again: skipped each time, kept
        feed(sink, [video(n * 1000, key=True)] + [video(n * 1000 + 33 * i) for i in range(1, 20)])
        assert sub.queued_seconds > 0.5
        sub.skip_to_keyframe()
        assert sub.queued_seconds == 0
        sink.write(video(n * 1000 + 700))  # not a keyframe: still skipping
    assert sub.end_cause is None and sub.overflows == 5
    sink.write(video(9000, key=True))
    media = [p for p in tags(drain(sub)) if not p.config]
    assert [p.timestamp_ms for p in media] == [9000] and media[0].keyframe


def test_overflows_spread_out_do_not_end_subscriber() -> None:
    limits = SubscriberLimits(
        max_bytes=1000, max_seconds=100, overflow_restart_count=3, overflow_restart_window_seconds=10
    )
    hub, clock, _ = make_hub(subscriber=limits)
    sink = open_flv(hub)
    sub = hub.subscribe()
    for n in range(5):
        feed(sink, [video(n * 1000, key=True)] + [video(n * 1000 + i) for i in range(1, 20)])
        clock.advance(6)
    assert sub.end_cause is None
    assert sub.overflows == 5


def test_gop_cache_is_bounded() -> None:
    hub, _, _ = make_hub(gop_cache_max_bytes=5000)
    sink = open_flv(hub)
    feed(sink, [video(0, key=True)] + [video(i, size=400) for i in range(1, 100)])
    assert hub.gop_cache_bytes <= 5000
    sink.write(video(200, key=True))
    assert 0 < hub.gop_cache_bytes <= 5000


def test_audio_only_stream_caches_bounded_and_serves_joiners() -> None:
    hub, _, _ = make_hub(gop_cache_max_bytes=1000)
    sink = open_flv(hub)
    sink.write(audio(0).__class__(MediaKind.AUDIO, 0, AUDIO_CONFIG, config=True))
    feed(sink, [audio(i * 23, size=50) for i in range(200)])
    assert 0 < hub.gop_cache_bytes <= 1000
    sub = hub.subscribe()
    data = drain(sub)
    assert data[4] == 0x04  # audio only in the FLV header
    got = tags(data)
    assert got[0].config and all(p.kind is MediaKind.AUDIO for p in got)
    assert len(got) > 2


def test_audio_only_subscriber_overflow_recovers_on_audio() -> None:
    limits = SubscriberLimits(max_bytes=2000, max_seconds=100, overflow_restart_count=100)
    hub, _, _ = make_hub(subscriber=limits)
    sink = open_flv(hub)
    sub = hub.subscribe()
    feed(sink, [audio(i * 23, size=100) for i in range(100)])
    assert sub.overflows >= 1 and sub.queued_bytes > 0


@pytest.mark.parametrize("reason", [EndReason.UNPUBLISH, EndReason.KICKED])
async def test_unpublish_ends_subscribers_after_draining(reason: EndReason) -> None:
    hub, _, rec = make_hub()
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(0, key=True)])
    sub = hub.subscribe()
    sink.close(reason)
    assert sub.end_cause is EndCause.UNPUBLISHED
    assert (await sub.read())[:3] == b"FLV"
    assert await sub.read() == b""
    assert hub.state is HubState.IDLE and hub.gop_cache_bytes == 0
    expected = LiveEndReason.KICKED if reason is EndReason.KICKED else LiveEndReason.UNPUBLISHED
    assert rec.events[-1] == LiveEnded(7, expected)


@pytest.mark.parametrize("discard", [False, True])
async def test_a_subscriber_ended_says_whether_its_queue_was_thrown_away(discard: bool) -> None:
    """`discard` (a node that lost the stream's lease closes its hub so): nothing queued is read, and the push,
    told so by `Subscriber.discarded`, kills its ffmpeg instead of letting it flush (relay/push/process.py)."""
    hub, _, _ = make_hub()
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(0, key=True)])
    sub = hub.subscribe()
    sub.end(EndCause.HUB_CLOSED, discard=discard)
    assert sub.end_cause is EndCause.HUB_CLOSED and sub.discarded is discard
    if not discard:
        assert (await sub.read())[:3] == b"FLV"
    assert await sub.read() == b""


def test_drop_and_resume_same_config_rebases_timestamps() -> None:
    hub, clock, rec = make_hub(grace_period_seconds=10, resume_gap_ms=33)
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(5000, key=True), audio(5010), video(5033)])
    sub = hub.subscribe()
    before = tags(drain(sub))
    sink.close(EndReason.DROP)
    assert hub.live and hub.state is HubState.GRACE
    clock.advance(5)
    sink2 = open_flv(hub)
    feed(sink2, [*config_packets(), video(0, key=True), audio(10), video(33)])
    assert sub.end_cause is None
    assert state_of(hub) is HubState.LIVE
    assert isinstance(rec.events[-1], SourceResumed)
    assert before
    after = tags(FLV_HEAD + drain(sub))
    # No repeated configuration, timestamps continue after the last one.
    assert all(not p.config for p in after)
    assert [p.timestamp_ms for p in after] == [5066, 5076, 5099]
    clock.advance(20)  # the grace timer was cancelled
    assert hub.live


def test_drop_and_resume_with_changed_config_restarts_subscribers() -> None:
    hub, _clock, rec = make_hub()
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(0, key=True)])
    sub = hub.subscribe()
    sink.close(EndReason.DROP)
    sink2 = open_flv(hub)
    feed(sink2, config_packets(video_config=b"\x17\x00\x00\x00\x00\x01\x4d\x00\x1f"))
    assert sub.end_cause is None  # undecided until media arrives
    sink2.write(video(0, key=True))
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert rec.kinds()[-1] == "SourceChanged"
    late = hub.subscribe()
    got = tags(drain(late))
    assert got[1].payload.startswith(b"\x17\x00\x00\x00\x00\x01\x4d")
    assert [p.timestamp_ms for p in got if not p.config] == [0]


def test_grace_expiry_ends_stream_and_empties_cache() -> None:
    hub, clock, rec = make_hub(grace_period_seconds=10)
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(0, key=True), video(33)])
    sub = hub.subscribe()
    sink.close(EndReason.DROP)
    clock.advance(9.9)
    assert sub.end_cause is None
    clock.advance(0.2)
    assert sub.end_cause is EndCause.SOURCE_LOST
    assert rec.events[-1] == LiveEnded(7, LiveEndReason.GRACE_EXPIRED)
    assert not hub.live and hub.gop_cache_bytes == 0
    sink2 = open_flv(hub)
    feed(sink2, config_packets())
    fresh = hub.subscribe()
    assert all(p.config for p in tags(drain(fresh)))  # no stale GOP
    assert sink2 is not None


def test_takeover_by_new_publisher_resumes() -> None:
    hub, _, rec = make_hub()
    sink = open_flv(hub)
    feed(sink, [*config_packets(), video(100, key=True)])
    sub = hub.subscribe()
    drain(sub)
    sink2 = open_flv(hub)
    sink.write(video(133))  # the old connection is ignored now
    sink.close(EndReason.UNPUBLISH)
    feed(sink2, [*config_packets(), video(0, key=True)])
    assert sub.end_cause is None
    assert "PublisherDropped" in rec.kinds() and rec.kinds()[-1] == "SourceResumed"
    assert [p.timestamp_ms for p in tags(FLV_HEAD + drain(sub))] == [133]


def test_subscribe_when_idle_ends_at_once() -> None:
    hub, _, _ = make_hub()
    sub = hub.subscribe()
    assert sub.end_cause is EndCause.SOURCE_LOST


def ts_packets(data: bytes) -> list[MediaPacket]:
    """What the SRT ingest hands the hub for these TS bytes."""
    reader = MpegTsReader()
    return reader.feed(data, 0) + reader.flush(0)


def test_ts_resume_ignores_continuity_counters_and_keeps_bytes() -> None:
    hub, _, rec = make_hub()
    sink = hub.open_session(ContainerFormat.MPEGTS, SourceType.SRT)
    feed(sink, ts_packets(ts_pat(0) + ts_pmt(0) + ts_packet(0x100, 0, b"k", rai=True)))
    sub = hub.subscribe()
    head = drain(sub)
    assert head[:188] == ts_pat(0) and head[188:376] == ts_pmt(0) and len(head) == 3 * 188
    sink.close(EndReason.DROP)
    sink2 = hub.open_session(ContainerFormat.MPEGTS, SourceType.SRT)
    feed(sink2, ts_packets(ts_pat(5) + ts_pmt(9) + ts_packet(0x100, 3, b"k2", rai=True)))
    assert sub.end_cause is None and rec.kinds()[-1] == "SourceResumed"
    assert drain(sub) == ts_packet(0x100, 3, b"k2", rai=True)  # bytes unchanged
    sink2.close(EndReason.DROP)
    sink3 = hub.open_session(ContainerFormat.MPEGTS, SourceType.SRT)
    feed(sink3, ts_packets(ts_pat(0) + ts_pmt(0, stream_type=0x24) + ts_packet(0x100, 0, rai=True)))
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert FLV_HEADER_SIZE == 9
