"""The hub's state table alone (as h11's test_state.py tests its ConnectionState): every legal change goes
through, any other raises IllegalTransition; then the hub itself walks the changes it takes."""

from __future__ import annotations

import itertools

import pytest

from relay.hub import Hub, HubSettings, HubState
from relay.hub.hub import TRANSITIONS
from relay.ingest.gate import EndReason, IngestSink, SourceType
from relay.media.packets import ContainerFormat
from relay.transitions import IllegalTransition, check_transition
from tests.fakes.clock import FakeClock
from tests.hub.helpers import Recorder, config_packets, feed, video

H = HubState

LEGAL = [
    (H.IDLE, H.LIVE),  # a publisher opened
    (H.LIVE, H.IDLE),  # unpublished, kicked, hub closed
    (H.LIVE, H.GRACE),  # the publisher dropped
    (H.LIVE, H.RESUMING),  # the feeding input ended while the other publishes (tests/hub/test_inputs.py)
    (H.GRACE, H.IDLE),  # grace expired, hub closed
    (H.GRACE, H.RESUMING),  # a publisher came back
    (H.RESUMING, H.IDLE),
    (H.RESUMING, H.LIVE),  # its first media: same configuration or a new source
    (H.RESUMING, H.GRACE),  # the returning publisher dropped too
    (H.RESUMING, H.RESUMING),  # listed; likewise reached through GRACE
]


@pytest.mark.parametrize(("old", "new"), LEGAL)
def test_every_legal_change_goes_through(old: HubState, new: HubState) -> None:
    check_transition(TRANSITIONS, "hub 7", old, new)


def test_every_other_change_is_illegal() -> None:
    for old, new in itertools.product(HubState, HubState):
        if (old, new) in LEGAL:
            continue
        with pytest.raises(IllegalTransition) as raised:
            check_transition(TRANSITIONS, "hub 7", old, new)
        assert (raised.value.machine, raised.value.old, raised.value.new) == ("hub 7", old, new)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (H.IDLE, H.GRACE),  # nothing to wait for
        (H.IDLE, H.RESUMING),
        (H.IDLE, H.IDLE),  # staying put is legal only where the table says so
        (H.LIVE, H.LIVE),
        (H.GRACE, H.LIVE),  # back to live only through a returning publisher's first media
        (H.GRACE, H.GRACE),
    ],
)
def test_the_hub_raises_on_an_illegal_change(old: HubState, new: HubState) -> None:
    hub = Hub(7, HubSettings(), FakeClock(), Recorder())
    hub._state = old
    with pytest.raises(IllegalTransition, match=f"hub 7: illegal transition {old.value} -> {new.value}"):
        hub._transition(new)
    assert hub.state is old


def test_the_hub_walks_its_table() -> None:
    clock = FakeClock()
    hub = Hub(7, HubSettings(grace_period_seconds=10), clock, Recorder())
    walked = [hub.state]

    def step() -> None:
        if hub.state is not walked[-1]:
            walked.append(hub.state)

    def open_flv() -> IngestSink:
        sink = hub.open_session(ContainerFormat.FLV, SourceType.RTMP)
        step()
        return sink

    sink = open_flv()  # IDLE -> LIVE
    feed(sink, [*config_packets(), video(0, key=True)])
    sink.close(EndReason.DROP)  # LIVE -> GRACE
    step()
    sink = open_flv()  # GRACE -> RESUMING
    sink.close(EndReason.DROP)  # RESUMING -> GRACE
    step()
    sink = open_flv()  # GRACE -> RESUMING
    feed(sink, [*config_packets(), video(0, key=True)])  # RESUMING -> LIVE
    step()
    sink.close(EndReason.UNPUBLISH)  # LIVE -> IDLE
    step()
    sink = open_flv()
    sink.close(EndReason.DROP)
    step()
    clock.advance(10.1)  # GRACE -> IDLE
    step()
    sink = open_flv()
    sink.close(EndReason.DROP)
    step()
    open_flv().close(EndReason.UNPUBLISH)  # RESUMING -> IDLE
    step()
    assert walked == [
        H.IDLE,
        H.LIVE,
        H.GRACE,
        H.RESUMING,
        H.GRACE,
        H.RESUMING,
        H.LIVE,
        H.IDLE,
        H.LIVE,
        H.GRACE,
        H.IDLE,
        H.LIVE,
        H.GRACE,
        H.RESUMING,
        H.IDLE,
    ]
    assert all((a, b) in LEGAL for a, b in itertools.pairwise(walked))
