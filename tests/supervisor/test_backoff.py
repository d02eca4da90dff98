"""Backoff alone: exponential growth with jitter, and the fast-retry window after a running push breaks."""

from __future__ import annotations

from relay.supervisor.backoff import Backoff
from relay.supervisor.settings import SupervisorSettings


def test_backoff_retries_fast_after_a_running_push_breaks_then_grows() -> None:
    settings = SupervisorSettings(
        restart_initial_delay_seconds=0.5,
        restart_jitter_ratio=0.0,
        fast_retry_min_run_seconds=5.0,
        fast_retry_window_seconds=15.0,
    )
    backoff = Backoff(settings, rand=lambda: 0.5)
    # Never got running: plain exponential growth.
    assert [backoff.next_delay(0.0, now) for now in (0.0, 1.0, 2.0)] == [0.5, 1.0, 2.0]
    # It then ran for a minute and broke: every retry within the window comes at the initial delay.
    backoff.reset()
    now = 100.0
    delays = [backoff.next_delay(60.0, now)]
    while now < 114.0:
        now += delays[-1]
        delays.append(backoff.next_delay(0.0, now))
    assert len(delays) == 29 and set(delays) == {0.5}
    # Past the window the delay grows again (a long outage does not mean a retry storm).
    later = [backoff.next_delay(0.0, 116.0 + i) for i in range(4)]
    assert later == [0.5, 1.0, 2.0, 4.0]
    # A destination that drops us seconds after each connect gets no fast window.
    flapping = Backoff(settings, rand=lambda: 0.5)
    assert [flapping.next_delay(2.0, float(t)) for t in range(4)] == [0.5, 1.0, 2.0, 4.0]


def test_jitter_stays_within_its_ratio_and_under_the_cap() -> None:
    settings = SupervisorSettings(
        restart_initial_delay_seconds=1.0, restart_max_delay_seconds=30.0, restart_jitter_ratio=0.2
    )
    low, high = Backoff(settings, rand=lambda: 0.0), Backoff(settings, rand=lambda: 1.0)
    assert [low.next_delay(0.0, 0.0) for _ in range(3)] == [0.8, 1.6, 3.2]
    assert [round(high.next_delay(0.0, 0.0), 6) for _ in range(3)] == [1.2, 2.4, 4.8]
    for _ in range(10):
        assert high.next_delay(0.0, 0.0) <= 30.0
    assert high.cap_delay() == 30.0
