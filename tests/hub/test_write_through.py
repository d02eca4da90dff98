"""A subscriber that writes live chunks straight to its reader's pipe (`Subscriber.write_through`).

The writer stands for the push's stdin transport: it takes bytes while it holds nothing back and refuses
otherwise. What the reader ends up with must be exactly what the queue alone would have given it, in the
same order, with the same end-of-stream rules.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from relay.hub import EndCause, Hub, HubSettings, Subscriber
from relay.ingest.gate import EndReason, IngestSink, SourceType
from relay.media.flv import flv_header
from relay.media.packets import ContainerFormat, MediaPacket
from tests.fakes.clock import FakeClock
from tests.hub.helpers import Recorder, audio, config_packets, drain, feed, tags, video


class Pipe:
    """A pipe's transport as the writer sees it: `accepting` says whether it holds nothing back."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.accepting = True

    def __call__(self, data: bytes) -> bool:
        if not self.accepting:
            return False
        self.writes.append(data)
        return True


def _written(pipe: Pipe) -> list[list[int]]:
    """The timestamps of the FLV tags in each write the pipe took."""
    return [[p.timestamp_ms for p in tags(flv_header() + w)] for w in pipe.writes]


def live_hub(
    may_deliver: Callable[[], bool] | None = None, settings: HubSettings | None = None
) -> tuple[FakeClock, Hub, IngestSink]:
    """A live FLV hub with an RTMP publisher: its configuration and a first keyframe fed, no subscriber yet."""
    clock = FakeClock()
    hub = Hub(7, settings or HubSettings(), clock, Recorder(), may_deliver=may_deliver)
    sink = hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
    feed(sink, [*config_packets(), video(0, key=True)])
    return clock, hub, sink


def writing_through(may_deliver: Callable[[], bool] | None = None) -> tuple[FakeClock, IngestSink, Subscriber, Pipe]:
    """A live hub's subscriber past its late-joiner burst (always queued, never written through), writing
    through to a pipe."""
    clock, hub, sink = live_hub(may_deliver)
    sub = hub.subscribe()
    assert drain(sub).startswith(flv_header())
    pipe = Pipe()
    sub.write_through(pipe)
    return clock, sink, sub, pipe


def test_chunks_of_one_loop_turn_go_out_in_one_write_in_order() -> None:
    clock, sink, sub, pipe = writing_through()
    feed(sink, [audio(10), video(33), audio(30)])
    assert pipe.writes == []  # nothing until the loop's next turn
    clock.advance(0)
    assert len(pipe.writes) == 1
    assert [p.timestamp_ms for p in tags(flv_header() + pipe.writes[0])] == [10, 33, 30]
    assert sub.queued_bytes == 0 and sub.read_bytes == len(pipe.writes[0])


async def test_a_pipe_that_holds_back_gets_the_rest_through_the_queue_in_order() -> None:
    clock, sink, sub, pipe = writing_through()
    feed(sink, [audio(10)])
    clock.advance(0)
    pipe.accepting = False  # the pipe is full: its transport buffers, the reader must wait for it
    feed(sink, [video(33), audio(40)])
    clock.advance(0)
    feed(sink, [video(66)])  # queued behind them, never written ahead of them
    clock.advance(0)
    pipe.accepting = True
    assert len(pipe.writes) == 1
    queued = await sub.read()
    assert [p.timestamp_ms for p in tags(flv_header() + queued)] == [33, 40, 66]
    feed(sink, [audio(70)])  # queue empty again: straight through
    clock.advance(0)
    assert [p.timestamp_ms for p in tags(flv_header() + pipe.writes[-1])] == [70]


async def test_the_end_of_the_stream_comes_after_what_was_offered() -> None:
    _, sink, sub, pipe = writing_through()
    feed(sink, [audio(10), video(33)])
    sub.end(EndCause.UNPUBLISHED)  # before the loop's turn: written first, then the reader sees the end
    assert [p.timestamp_ms for p in tags(flv_header() + b"".join(pipe.writes))] == [10, 33]
    assert await sub.read() == b""


async def test_a_discarded_end_throws_away_what_was_not_written() -> None:
    clock, sink, sub, pipe = writing_through()
    feed(sink, [audio(10)])
    sub.end(EndCause.HUB_CLOSED, discard=True)
    clock.advance(0)
    assert pipe.writes == [] and await sub.read() == b""


async def test_a_reader_that_stops_writing_through_finds_the_chunks_in_its_queue() -> None:
    _, sink, sub, pipe = writing_through()
    feed(sink, [audio(10), video(33)])
    pipe.accepting = False
    sub.write_through(None)
    assert [p.timestamp_ms for p in tags(flv_header() + await sub.read())] == [10, 33]


class Lease:
    """The engine's answer to `may_deliver`: whether the node may still send the stream."""

    def __init__(self) -> None:
        self.valid = True

    def __call__(self) -> bool:
        return self.valid


def fenced_writing_through() -> tuple[FakeClock, IngestSink, Subscriber, Pipe, Lease]:
    lease = Lease()
    return (*writing_through(may_deliver=lease), lease)


def test_a_write_armed_before_the_lease_lapsed_sends_nothing() -> None:
    """A node frozen between a packet's arrival and the loop's next turn: when it runs again, the write
    armed for that turn comes before any timer could tell the lease is gone, and must not go out."""
    clock, sink, sub, pipe, lease = fenced_writing_through()
    feed(sink, [audio(10)])
    clock.advance(0)
    assert len(pipe.writes) == 1
    feed(sink, [video(33), audio(40)])  # arrived while the lease held
    lease.valid = False  # ... and the loop's next turn comes after the deadline
    clock.advance(0)
    assert len(pipe.writes) == 1
    assert (sub.end_cause, sub.discarded, sub.queued_bytes) == (EndCause.HUB_CLOSED, True, 0)


async def test_a_reader_woken_before_the_lease_lapsed_reads_the_end() -> None:
    _, sink, sub, _, lease = fenced_writing_through()
    sub.write_through(None)
    feed(sink, [video(33), audio(40)])  # queued, the reader woken
    lease.valid = False
    assert await sub.read() == b""
    assert (sub.end_cause, sub.discarded) == (EndCause.HUB_CLOSED, True)


async def test_a_tail_still_to_deliver_when_the_lease_lapsed_is_thrown_away() -> None:
    """The publisher ended (the queue's tail is delivered before the end) but the lease lapsed first: the
    tail goes nowhere, and the reader is told the hub closed with a discard (the push kills its ffmpeg)."""
    _, sink, sub, _, lease = fenced_writing_through()
    sub.write_through(None)
    feed(sink, [video(33), audio(40)])
    sub.end(EndCause.UNPUBLISHED)
    lease.valid = False
    assert await sub.read() == b""
    assert (sub.end_cause, sub.discarded) == (EndCause.HUB_CLOSED, True)


def write_through_pipes(hub: Hub, count: int) -> list[Pipe]:
    """`count` new subscribers of `hub`, caught up and writing through to a pipe each."""
    return [pipe for _, pipe in writing_subscribers(hub, count)]


def writing_subscribers(hub: Hub, count: int) -> list[tuple[Subscriber, Pipe]]:
    """`write_through_pipes` with each pipe's subscriber."""
    pairs = []
    for _ in range(count):
        sub = hub.subscribe()
        drain(sub)
        pipe = Pipe()
        sub.write_through(pipe)
        pairs.append((sub, pipe))
    return pairs


def test_every_subscriber_of_a_hub_is_written_by_one_callback_a_turn() -> None:
    # At 16 destinations a timer per subscriber and per publisher read was 16 asyncio timers pushed on and
    # popped off the loop's heap for every read; the hub arms one for all of them.
    clock, hub, sink = live_hub()
    pipes = write_through_pipes(hub, 16)
    feed(sink, [audio(10), video(33)])
    assert clock.pending() == [0.0]
    clock.advance(0)
    for pipe in pipes:
        assert _written(pipe) == [[10, 33]]


def test_a_publisher_read_is_written_to_each_subscriber_when_it_ends_with_no_timer() -> None:
    # The timer made every publisher read cost a second loop turn; the ingest's batch writes at its end.
    clock, hub, sink = live_hub()
    clock.advance(0)
    pipes = write_through_pipes(hub, 3)
    with sink.batch():
        with sink.batch():  # reentrant: the outermost end writes
            feed(sink, [video(33)])
        feed(sink, [audio(10)])
        assert clock.pending() == [] and all(not pipe.writes for pipe in pipes)
    assert clock.pending() == []
    for pipe in pipes:
        assert _written(pipe) == [[33, 10]]
    feed(sink, [audio(40)])  # outside a batch (a packet the gate's task hands over): the next turn
    assert clock.pending() == [0.0]
    clock.advance(0)
    assert [len(pipe.writes) for pipe in pipes] == [2, 2, 2]


def _reads(sink: IngestSink, packets: list[MediaPacket]) -> None:
    """Each packet in a publisher's read (a batch) of its own, as an RTMP publisher's messages come."""
    for packet in packets:
        with sink.batch():
            feed(sink, [packet])


def test_a_video_frame_after_an_audio_packet_waits_for_the_next_packet_in_the_same_write() -> None:
    # A push's ffmpeg sends a packet only once it has the next one; writing the frame with that next packet
    # leaves the frame's departure as it was and saves a pipe write a frame, in the relay and in the push.
    clock, hub, sink = live_hub()
    clock.advance(0)
    pipes = write_through_pipes(hub, 2)
    _reads(sink, [audio(23), video(33)])
    assert [_written(pipe) for pipe in pipes] == [[[23]], [[23]]]  # the frame waits
    _reads(sink, [audio(46), audio(69), video(66), audio(92)])
    assert [_written(pipe) for pipe in pipes] == [[[23], [33, 46], [69], [66, 92]]] * 2
    assert clock.pending() == []  # no timer for a held frame


def test_two_video_frames_in_a_row_are_not_held_together() -> None:
    # 60 fps beside 43 audio packets a second: the first frame leaves the push when the second arrives, so
    # holding the second would hold back the first.
    clock, hub, sink = live_hub()
    clock.advance(0)
    (pipe,) = write_through_pipes(hub, 1)
    _reads(sink, [audio(5), video(16), video(33), audio(28), video(50)])
    assert _written(pipe) == [[5], [16, 33], [28]]
    _reads(sink, [video(66)])
    assert _written(pipe) == [[5], [16, 33], [28], [50, 66]]


def test_a_held_frame_is_written_before_the_end_of_the_stream() -> None:
    _, sink, sub, pipe = writing_through()
    _reads(sink, [audio(23), video(33)])
    assert _written(pipe) == [[23]]
    sink.close(EndReason.UNPUBLISH)
    assert _written(pipe) == [[23], [33]]
    assert sub.end_cause is EndCause.UNPUBLISHED


def test_a_video_only_stream_is_never_held() -> None:
    clock, hub, sink = live_hub()
    clock.advance(0)
    (pipe,) = write_through_pipes(hub, 1)
    _reads(sink, [video(33), video(66)])  # video only: every read written at its end
    assert _written(pipe) == [[33], [66]]


def test_a_held_frame_goes_with_the_next_read_that_brings_a_packet_whatever_that_read_ends_with() -> None:
    # An encoder that sends an audio packet and a frame in each read ended every read with a frame that
    # followed audio: held at every read's end, nothing was written for seconds (tests/e2e caught it).
    clock, hub, sink = live_hub()
    clock.advance(0)
    (pipe,) = write_through_pipes(hub, 1)
    for at in (0, 33, 66, 100):
        with sink.batch():
            feed(sink, [audio(at + 10), video(at + 33)])
    assert _written(pipe) == [[10, 33, 43, 66], [76, 99, 110, 133]]
    with sink.batch():
        pass  # a read inside a message: no packet, the held frame waits on
    assert len(pipe.writes) == 2
    with sink.batch():
        feed(sink, [audio(143)])
    assert _written(pipe)[2:] == [[143]]
    assert clock.pending() == []


def merged_writes(seconds: float, subscribers: int) -> tuple[FakeClock, IngestSink, list[tuple[Subscriber, Pipe]]]:
    """A live hub with `merge_interval_seconds` and that many caught-up subscribers writing through."""
    clock, hub, sink = live_hub(settings=HubSettings(merge_interval_seconds=seconds))
    clock.advance(0)
    return clock, sink, writing_subscribers(hub, subscribers)


def test_merged_writes_go_at_most_once_an_interval_with_everything_in_between() -> None:
    # RELAY_MERGE_INTERVAL_MS: one pipe write a destination for what came in the interval, instead of one a
    # frame. An RTMP publisher is read that often too, so its reads come an interval apart and each is
    # written at its end; reads that come sooner (other sources) wait for the interval's end.
    clock, sink, subscribers = merged_writes(0.1, 3)
    pipes = [pipe for _, pipe in subscribers]
    _reads(sink, [audio(23)])
    assert [_written(pipe) for pipe in pipes] == [[[23]]] * 3  # nothing written for an interval: at once
    clock.advance(0.04)
    _reads(sink, [video(33), audio(46)])
    clock.advance(0.03)
    _reads(sink, [video(66)])  # held frames' rules change nothing
    assert [len(pipe.writes) for pipe in pipes] == [1, 1, 1] and clock.pending() == [pytest.approx(0.03)]
    clock.advance(0.031)
    assert [_written(pipe) for pipe in pipes] == [[[23], [33, 46, 66]]] * 3
    assert clock.pending() == []
    clock.advance(0.1)
    with sink.batch():  # a read an interval after the last write: written at its end
        feed(sink, [audio(100), video(133)])
    assert [_written(pipe)[2:] for pipe in pipes] == [[[100, 133]]] * 3 and clock.pending() == []


def test_a_read_merged_by_its_reader_is_written_at_its_end_with_what_waited_for_the_interval() -> None:
    # A plain RTMP connection waits the interval between its reads itself (RtmpConnection._merge_reads) and
    # says so (`batch(merged=True)`): a read of it that comes sooner than the hub's interval (the rest of a
    # full buffer) is written at once, and with it what another read left waiting; nothing stays armed.
    clock, sink, subscribers = merged_writes(0.1, 2)
    pipes = [pipe for _, pipe in subscribers]
    _reads(sink, [audio(23)])
    clock.advance(0.01)
    _reads(sink, [video(33)])  # not merged by its reader: waits for the hub's interval
    assert clock.pending() == [pytest.approx(0.09)]
    clock.advance(0.01)
    with sink.batch(merged=True):
        feed(sink, [audio(46), video(66)])
    assert [_written(pipe) for pipe in pipes] == [[[23], [33, 46, 66]]] * 2
    assert clock.pending() == []
    with sink.batch(merged=True):
        feed(sink, [audio(70)])  # right after a write: at once too
    assert [_written(pipe)[2:] for pipe in pipes] == [[[70]]] * 2
    with sink.batch():
        feed(sink, [video(99)])  # the flag ended with its batch: this one waits again
    assert clock.pending() == [pytest.approx(0.1)]


def test_merged_writes_of_media_outside_a_read_reach_every_subscriber_together() -> None:
    clock, sink, subscribers = merged_writes(0.1, 3)
    feed(sink, [audio(10)])  # outside a batch: the loop's next turn, for all of them
    clock.advance(0)
    feed(sink, [video(33)])
    clock.advance(0)
    assert [_written(pipe) for _, pipe in subscribers] == [[[10]]] * 3
    clock.advance(0.1)
    assert [_written(pipe) for _, pipe in subscribers] == [[[10], [33]]] * 3


def test_a_merged_write_is_not_kept_from_a_subscriber_that_ends_or_a_hub_that_closes() -> None:
    clock, sink, ((sub, first), (_, second)) = merged_writes(0.25, 2)
    _reads(sink, [audio(10)])
    _reads(sink, [audio(23), video(33)])  # within the interval: waiting
    sub.end(EndCause.UNSUBSCRIBED)  # it writes what it holds before the reader sees the end
    assert _written(first) == [[10], [23, 33]] and _written(second) == [[10]]
    sink.close(EndReason.UNPUBLISH)
    assert _written(second) == [[10], [23, 33]]
    assert clock.pending() == []  # the hub's timer went with the live stream


def test_merged_writes_keep_a_pipe_that_holds_back_in_order_through_the_queue() -> None:
    clock, sink, ((sub, pipe),) = merged_writes(0.1, 1)
    _reads(sink, [audio(10)])
    pipe.accepting = False
    _reads(sink, [video(33), audio(40)])
    clock.advance(0.1)  # refused: queued for the reader
    _reads(sink, [video(66)])  # behind them in the queue, never merged ahead of them
    clock.advance(0.1)
    assert _written(pipe) == [[10]] and clock.pending() == []
    assert [p.timestamp_ms for p in tags(flv_header() + drain(sub))] == [33, 40, 66]
