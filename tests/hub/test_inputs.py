"""Main and backup inputs of one hub, on the fake clock: which one feeds the subscribers, when the hub
switches (the main drops, the main goes silent, the main comes back), and what a subscriber reads across
a switch (no end, timestamps going on, configuration sent again only when it differs)."""

from __future__ import annotations

import itertools

from relay.hub import EndCause, Hub, HubSettings, HubState, InputSwitched, LiveEnded, LiveEndReason, SwitchReason
from relay.ingest.gate import EndReason, IngestSink, SourceType, StreamInput
from relay.media.flv import classify
from relay.media.mpegts import MpegTsReader
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket
from tests.fakes.clock import FakeClock
from tests.hub.helpers import Recorder, audio, config_packets, drain, feed, tags, ts_packet, ts_pat, ts_pmt
from tests.hub.test_hub import FLV_HEAD, state_of

MAIN, BACKUP = StreamInput.MAIN, StreamInput.BACKUP


def make_hub(**kw: object) -> tuple[Hub, FakeClock, Recorder]:
    clock = FakeClock()
    rec = Recorder()
    settings = HubSettings(**kw)  # type: ignore[arg-type]
    return Hub(7, settings, clock, rec), clock, rec


def open_flv(hub: Hub, stream_input: StreamInput) -> IngestSink:
    return hub.open_session(ContainerFormat.FLV, SourceType.RTMP, stream_input=stream_input)


def marked(ts: int, mark: bytes, key: bool = False) -> MediaPacket:
    """A video packet whose payload says which encoder sent it."""
    return classify(MediaKind.VIDEO, ts, (b"\x17\x01" if key else b"\x27\x01") + b"\x00" * 3 + mark * 20)


def senders(data: bytes) -> list[tuple[int, bytes]]:
    """(timestamp, encoder mark) of each video media tag a subscriber read."""
    return [
        (p.timestamp_ms, p.payload[5:6]) for p in tags(FLV_HEAD + data) if p.kind is MediaKind.VIDEO and not p.config
    ]


class TsEncoder:
    """An SRT publisher's session: one TS reader for the whole connection, as the SRT ingest has."""

    def __init__(self, hub: Hub, stream_input: StreamInput) -> None:
        self.sink = hub.open_session(ContainerFormat.MPEGTS, SourceType.SRT, stream_input=stream_input)
        self._reader = MpegTsReader()

    def send(self, data: bytes) -> None:
        feed(self.sink, self._reader.feed(data, 0) + self._reader.flush(0))


def both_live(**kw: object) -> tuple[Hub, FakeClock, Recorder, IngestSink, IngestSink]:
    """Main (mark M, timestamps from 5000) live with a subscriber's worth of media, backup (B, from 100) standby."""
    hub, clock, rec = make_hub(**kw)
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(5000, b"M", key=True)])
    backup = open_flv(hub, BACKUP)
    feed(backup, [*config_packets(), marked(100, b"B", key=True)])
    return hub, clock, rec, main, backup


def test_the_main_feeds_while_both_publish_and_the_backup_is_held_back() -> None:
    hub, clock, rec, main, backup = both_live()
    sub = hub.subscribe()
    drain(sub)
    for i in range(1, 5):
        clock.advance(0.033)
        main.write(marked(5000 + 33 * i, b"M"))
        backup.write(marked(100 + 33 * i, b"B"))
    assert {mark for _, mark in senders(drain(sub))} == {b"M"}
    assert hub.input is MAIN and hub.inputs == {MAIN, BACKUP}
    assert rec.kinds() == ["LiveStarted"]


def test_a_dropped_main_is_followed_by_the_backup_at_its_next_keyframe_without_ending_subscribers() -> None:
    hub, clock, rec, main, backup = both_live(resume_gap_ms=33)
    sub = hub.subscribe()
    drain(sub)
    clock.advance(0.033)
    main.write(marked(5033, b"M"))
    drain(sub)
    main.close(EndReason.DROP)
    assert hub.state is HubState.RESUMING and sub.end_cause is None
    clock.advance(0.033)
    backup.write(marked(166, b"B"))  # not a keyframe: nothing goes out
    assert drain(sub) == b""
    clock.advance(0.3)
    feed(backup, [marked(200, b"B", key=True), marked(233, b"B")])
    assert sub.end_cause is None
    assert senders(drain(sub)) == [(5066, b"B"), (5099, b"B")]  # rebased after the main's last one
    assert state_of(hub) is HubState.LIVE and hub.input is BACKUP
    assert rec.events[-1] == InputSwitched(7, BACKUP, SwitchReason.DROPPED, 5066 - 200)
    clock.advance(60)  # the grace timer was cancelled
    assert hub.live and sub.end_cause is None


def test_a_silent_main_is_left_for_the_backup_s_keyframe_that_came_after_its_last_packet() -> None:
    hub, clock, rec, main, backup = both_live(input_silence_seconds=1.0)
    sub = hub.subscribe()
    drain(sub)
    clock.advance(0.1)
    main.write(marked(5100, b"M"))  # the main's last packet, then silence (connected, sending nothing)
    drain(sub)
    clock.advance(0.2)
    backup.write(marked(300, b"B", key=True))  # arrived after the main's last packet: held
    for i in range(1, 30):
        clock.advance(0.033)
        backup.write(marked(300 + 33 * i, b"B"))
        if i * 0.033 + 0.2 < 1.0:
            assert hub.input is MAIN, "switched before the main was silent for a second"
    assert hub.input is BACKUP and sub.end_cause is None
    got = senders(drain(sub))
    assert got[0][1] == b"B" and got[0][0] == 5133  # from the held keyframe on, rebased
    assert all(b > a for (a, _), (b, _) in itertools.pairwise(got))
    assert rec.events[-1] == InputSwitched(7, BACKUP, SwitchReason.SILENT, 5133 - 300)


def test_a_silent_main_waits_for_a_backup_keyframe_newer_than_its_last_packet() -> None:
    hub, clock, _, main, backup = both_live(input_silence_seconds=1.0)
    sub = hub.subscribe()
    drain(sub)
    clock.advance(0.1)
    main.write(marked(5100, b"M"))
    drain(sub)
    for i in range(1, 40):  # the backup's GOP began before the main went quiet: not replayed
        clock.advance(0.033)
        backup.write(marked(100 + 33 * i, b"B"))
    assert hub.input is MAIN and drain(sub) == b""
    backup.write(marked(2000, b"B", key=True))
    assert hub.input is BACKUP
    assert [mark for _, mark in senders(drain(sub))] == [b"B"]


def test_the_main_takes_over_again_at_its_first_keyframe_when_it_returns() -> None:
    hub, clock, rec, main, backup = both_live()
    sub = hub.subscribe()
    drain(sub)
    main.close(EndReason.DROP)
    clock.advance(0.1)
    feed(backup, [marked(200, b"B", key=True), marked(233, b"B")])
    returning = open_flv(hub, MAIN)
    feed(returning, [*config_packets(), marked(0, b"M"), marked(10, b"M")])  # no keyframe yet
    backup.write(marked(266, b"B"))
    assert hub.input is BACKUP
    feed(returning, [marked(33, b"M", key=True), marked(66, b"M")])
    backup.write(marked(300, b"B"))  # held back again
    assert hub.input is MAIN and sub.end_cause is None
    got = senders(drain(sub))
    assert [mark for _, mark in got] == [b"B", b"B", b"B", b"M", b"M"]
    assert all(b > a for (a, _), (b, _) in itertools.pairwise(got)), got
    assert rec.events[-1] == InputSwitched(7, MAIN, SwitchReason.PREFERRED, got[3][0] - 33)


def test_the_backup_alone_feeds_and_gives_way_to_a_main_that_starts_later() -> None:
    hub, clock, rec = make_hub()
    backup = open_flv(hub, BACKUP)
    feed(backup, [*config_packets(), marked(0, b"B", key=True)])
    assert hub.input is BACKUP and rec.kinds() == ["LiveStarted"]
    sub = hub.subscribe()
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(0, b"M", key=True)])
    assert hub.input is MAIN
    got = [(p.payload[5:6], p.keyframe) for p in tags(drain(sub)) if p.kind is MediaKind.VIDEO and not p.config]
    assert got == [(b"B", True), (b"M", True)]
    main.close(EndReason.UNPUBLISH)  # the main stops on purpose: the backup still publishes, it takes over
    clock.advance(0.5)
    backup.write(marked(500, b"B", key=True))
    assert hub.input is BACKUP and hub.live and sub.end_cause is None


def test_different_sequence_headers_of_the_same_codec_are_sent_before_the_backup_s_media() -> None:
    hub, _, _ = make_hub()
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(1000, b"M", key=True)])
    other_sps = b"\x17\x00\x00\x00\x00\x01\x4d\x00\x1f"
    backup = open_flv(hub, BACKUP)
    feed(backup, config_packets(video_config=other_sps))
    sub = hub.subscribe()
    drain(sub)
    main.close(EndReason.DROP)
    backup.write(marked(50, b"B", key=True))
    got = tags(FLV_HEAD + drain(sub))
    assert sub.end_cause is None
    assert got[0].config and got[0].payload == other_sps  # only the header that differs, before the media
    assert [p.config for p in got] == [True, False]
    assert tags(drain(hub.subscribe()))[1].payload == other_sps  # and a joiner gets the backup's


def test_another_codec_on_the_backup_restarts_the_subscribers() -> None:
    hub, _, rec = make_hub()
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(1000, b"M", key=True)])
    hevc = b"\x1c\x00\x00\x00\x00\x01"  # codec id 12 (HEVC, the legacy FLV way)
    backup = open_flv(hub, BACKUP)
    feed(backup, config_packets(video_config=hevc))
    sub = hub.subscribe()
    main.close(EndReason.DROP)
    backup.write(classify(MediaKind.VIDEO, 50, b"\x1c\x01\x00\x00\x00" + b"B" * 20))
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert rec.kinds()[-2:] == ["SourceChanged", "InputSwitched"]
    assert rec.events[-1] == InputSwitched(7, BACKUP, SwitchReason.DROPPED, 0, restarted=True)
    assert hub.input is BACKUP and hub.state is HubState.LIVE


def test_an_srt_backup_of_an_rtmp_main_restarts_the_subscribers() -> None:
    hub, _, rec = make_hub()
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(1000, b"M", key=True)])
    backup = TsEncoder(hub, BACKUP)
    backup.send(ts_pat(0) + ts_pmt(0))
    sub = hub.subscribe()
    main.close(EndReason.DROP)
    backup.send(ts_packet(0x100, 0, b"k", rai=True))
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert hub.container is ContainerFormat.MPEGTS and hub.input is BACKUP
    assert rec.events[-1] == InputSwitched(7, BACKUP, SwitchReason.DROPPED, 0, restarted=True)


def test_ts_inputs_with_the_same_tables_switch_with_the_bytes_unchanged() -> None:
    hub, _, rec = make_hub()
    main = TsEncoder(hub, MAIN)
    main.send(ts_pat(0) + ts_pmt(0) + ts_packet(0x100, 0, b"m", rai=True))
    backup = TsEncoder(hub, BACKUP)
    backup.send(ts_pat(7) + ts_pmt(3))
    sub = hub.subscribe()
    drain(sub)
    main.sink.close(EndReason.DROP)
    backup.send(ts_packet(0x100, 4, b"b", rai=True))
    assert sub.end_cause is None
    assert drain(sub) == ts_packet(0x100, 4, b"b", rai=True)
    assert isinstance(rec.events[-1], InputSwitched) and not rec.events[-1].restarted


def test_the_grace_period_starts_only_when_both_inputs_are_gone() -> None:
    hub, clock, rec, main, backup = both_live(grace_period_seconds=10)
    sub = hub.subscribe()
    main.close(EndReason.DROP)
    clock.advance(0.5)
    backup.write(marked(200, b"B", key=True))
    clock.advance(30)
    assert hub.live and sub.end_cause is None
    backup.close(EndReason.DROP)
    assert hub.state is HubState.GRACE
    clock.advance(10.1)
    assert sub.end_cause is EndCause.SOURCE_LOST
    assert rec.events[-1] == LiveEnded(7, LiveEndReason.GRACE_EXPIRED)


def test_a_backup_that_never_sends_a_keyframe_is_started_over_when_the_grace_period_ends() -> None:
    hub, clock, _, main, backup = both_live(grace_period_seconds=5)
    sub = hub.subscribe()
    main.close(EndReason.DROP)
    feed(backup, [marked(200, b"B"), audio(210)])
    clock.advance(5.1)
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert hub.state is HubState.LIVE and hub.input is BACKUP


def test_both_unpublished_ends_the_stream() -> None:
    hub, _, rec, main, backup = both_live()
    sub = hub.subscribe()
    backup.close(EndReason.UNPUBLISH)
    assert hub.input is MAIN and hub.live
    main.close(EndReason.UNPUBLISH)
    assert sub.end_cause is EndCause.UNPUBLISHED
    assert rec.events[-1] == LiveEnded(7, LiveEndReason.UNPUBLISHED)
    assert hub.input is None and hub.inputs == frozenset()


def test_an_rtmp_main_after_an_srt_backup_takes_over_with_a_restart() -> None:
    hub, _, rec = make_hub()
    backup = TsEncoder(hub, BACKUP)
    backup.send(ts_pat(0) + ts_pmt(0) + ts_packet(0x100, 0, b"b", rai=True))
    sub = hub.subscribe()
    main = open_flv(hub, MAIN)
    feed(main, [*config_packets(), marked(0, b"M", key=True)])
    assert sub.end_cause is EndCause.SOURCE_CHANGED
    assert hub.input is MAIN and hub.container is ContainerFormat.FLV
    assert rec.events[-1] == InputSwitched(7, MAIN, SwitchReason.PREFERRED, 0, restarted=True)


def test_a_returning_main_s_read_in_one_call_takes_over_at_its_keyframe_and_feeds_the_rest() -> None:
    # An RTMP ingest hands a read's media over in one write_many: a standby's packets go one by one through
    # the switch rules, so a keyframe in the middle of the list switches there, and what follows it feeds.
    hub, clock, rec, main, backup = both_live()
    sub = hub.subscribe()
    drain(sub)
    main.close(EndReason.DROP)
    clock.advance(0.1)
    with backup.batch():
        backup.write_many([marked(200, b"B", key=True), marked(233, b"B")])
    returning = open_flv(hub, MAIN)
    with returning.batch():
        returning.write_many([*config_packets(), marked(0, b"M"), marked(33, b"M", key=True), marked(66, b"M")])
    assert hub.input is MAIN and sub.end_cause is None
    got = senders(drain(sub))
    assert [mark for _, mark in got] == [b"B", b"B", b"M", b"M"]
    assert all(b > a for (a, _), (b, _) in itertools.pairwise(got)), got
    assert rec.events[-1] == InputSwitched(7, MAIN, SwitchReason.PREFERRED, got[2][0] - 33)
