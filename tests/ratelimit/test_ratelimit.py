"""Token buckets per key and the throttled log, on a hand-driven clock."""

from __future__ import annotations

import logging
import threading

import pytest

from relay.ratelimit import ThrottledLog, TokenBuckets
from tests.fakes.clock import FakeClock


def test_a_key_gets_its_burst_then_its_rate() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_second=2.0, burst=3, clock=clock.now)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]
    assert buckets.take("b")  # another key has its own bucket
    clock.advance(0.5)
    assert [buckets.take("a") for _ in range(2)] == [True, False]  # one token back per half second
    clock.advance(60)
    assert [buckets.take("a") for _ in range(4)] == [True, True, True, False]  # never more than the burst


def test_the_table_is_bounded_and_forgets_the_least_recently_used() -> None:
    clock = FakeClock()
    buckets = TokenBuckets(per_second=1.0, burst=1, max_keys=3, clock=clock.now)
    for key in ("a", "b", "c"):
        assert buckets.take(key)
    assert not buckets.take("a")  # "a" is now the most recently used
    assert buckets.take("d")  # a fourth key: "b" is forgotten
    assert len(buckets) == 3
    assert buckets.take("b")  # forgotten, so full again: the limit errs towards letting through
    assert not buckets.take("a")
    for index in range(1000):
        buckets.take(f"flood-{index}")
    assert len(buckets) == 3


def test_buckets_are_safe_across_threads() -> None:
    buckets = TokenBuckets(per_second=0.001, burst=500, clock=lambda: 0.0)
    allowed: list[bool] = []
    lock = threading.Lock()

    def hammer() -> None:
        got = [buckets.take("x") for _ in range(200)]
        with lock:
            allowed.extend(got)

    threads = [threading.Thread(target=hammer) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(allowed) == 500


def test_bad_parameters_are_refused() -> None:
    for kwargs in ({"per_second": 0.0, "burst": 1}, {"per_second": 1.0, "burst": 0}):
        with pytest.raises(ValueError):
            TokenBuckets(**kwargs)  # type: ignore[arg-type]


def test_the_log_writes_its_budget_then_sums_up_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.throttled")
    clock = FakeClock()
    throttled = ThrottledLog(
        logging.getLogger("test.throttled"), "refusals", max_lines=2, window_seconds=10, clock=clock.now
    )
    for index in range(50):
        throttled.log(logging.INFO, "1403" if index % 5 else "1404", "refused %d", index)
    assert [r.getMessage() for r in caplog.records] == ["refused 0", "refused 1"]
    clock.advance(5)
    throttled.flush()  # the window is not over: nothing yet
    assert len(caplog.records) == 2
    clock.advance(5)
    throttled.log(logging.INFO, "1403", "refused %d", 50)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[2:] == ["refusals: 48 more not logged in the last 10 s (1403 x39, 1404 x9)", "refused 50"]
    assert caplog.records[2].levelno == logging.WARNING
    clock.advance(10)
    throttled.flush()  # that window held nothing back: no summary
    assert len(caplog.records) == 4


def test_a_quiet_window_ends_with_a_summary_at_flush(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="test.throttled")
    clock = FakeClock()
    throttled = ThrottledLog(logging.getLogger("test.throttled"), "x", max_lines=0, window_seconds=1, clock=clock.now)
    throttled.log(logging.INFO, "a", "never written")
    clock.advance(2)
    throttled.flush()
    assert [r.getMessage() for r in caplog.records] == ["x: 1 more not logged in the last 2 s (a x1)"]
