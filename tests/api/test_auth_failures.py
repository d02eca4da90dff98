"""Failed authentications (api/auth_failures.py) on a hand-driven clock: the burst, the delay, IPv6 /64s,
the rate-limited log line and the bounds on what is remembered."""

from __future__ import annotations

import logging

import pytest

from api.auth_failures import (
    UNKNOWN_ADDRESS,
    AuthFailureReason,
    AuthFailures,
    AuthFailureSettings,
    address_group,
)
from tests.fakes.clock import FakeClock

UNKNOWN = AuthFailureReason.UNKNOWN
SETTINGS = AuthFailureSettings(failures_before_delay=10, failure_window_seconds=10.0, delay_seconds=1.5)


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "relay.api.auth"]


@pytest.mark.parametrize(
    "remote,group",
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),  # IPv4 on a dual-stack socket
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        (None, UNKNOWN_ADDRESS),
        ("not an address", UNKNOWN_ADDRESS),
    ],
)
def test_addresses_are_grouped_ipv4_alone_and_ipv6_by_64(remote: str | None, group: str) -> None:
    assert address_group(remote) == group


def test_the_failure_after_a_burst_waits_until_the_window_has_passed() -> None:
    clock = FakeClock()
    failures = AuthFailures(clock, SETTINGS)
    delays = []
    for _ in range(10):
        delays.append(failures.record("203.0.113.7", UNKNOWN))
        clock.advance(0.1)
    assert delays == [0.0] * 10
    assert failures.record("203.0.113.7", UNKNOWN) == 1.5  # the 11th within 10 s
    assert failures.record("198.51.100.1", UNKNOWN) == 0.0  # another address is not concerned
    # Once slowed, failing less often is not enough: only a whole window without failures ends it.
    for _ in range(20):
        clock.advance(5.0)
        assert failures.record("203.0.113.7", UNKNOWN) == 1.5
    clock.advance(10.0)
    assert failures.record("203.0.113.7", UNKNOWN) == 0.0


def test_failures_spread_out_are_never_delayed() -> None:
    clock = FakeClock()
    failures = AuthFailures(clock, SETTINGS)
    for _ in range(50):  # a scraper with a stale key, every 1.1 s
        assert failures.record("203.0.113.7", AuthFailureReason.REVOKED) == 0.0
        clock.advance(1.1)


def test_an_ipv6_host_cannot_escape_by_changing_address_within_its_64() -> None:
    clock = FakeClock()
    failures = AuthFailures(clock, SETTINGS)
    for host in range(1, 11):
        assert failures.record(f"2001:db8:1:2::{host:x}", UNKNOWN) == 0.0
    assert failures.record("2001:db8:1:2:ffff::99", UNKNOWN) == 1.5
    assert failures.record("2001:db8:1:3::1", UNKNOWN) == 0.0  # the next /64 is someone else


def test_one_log_line_per_address_per_interval_with_the_count(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = FakeClock()
    failures = AuthFailures(clock, AuthFailureSettings(log_interval_seconds=60.0))
    failures.record("203.0.113.7", AuthFailureReason.MISSING)
    assert lines(caplog) == ["1 failed API authentication from 203.0.113.7 (missing 1)"]
    for _ in range(29):
        clock.advance(2.0)
        failures.record("203.0.113.7", UNKNOWN)
    failures.record("198.51.100.1", UNKNOWN)
    assert len(lines(caplog)) == 2  # nothing more from the first address within the minute
    clock.advance(2.0)  # 60 s after its first line
    failures.record("203.0.113.7", AuthFailureReason.REVOKED)
    assert lines(caplog)[2] == (
        "30 failed API authentications from 203.0.113.7 in the last 60 s (revoked 1, unknown 29)"
    )
    record = [r for r in caplog.records if r.name == "relay.api.auth"][2]
    assert (record.__dict__["address"], record.__dict__["failures"]) == ("203.0.113.7", 30)


def test_the_log_line_says_when_an_address_is_slowed(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    failures = AuthFailures(clock, AuthFailureSettings(failures_before_delay=2, log_interval_seconds=0.0))
    for _ in range(3):
        failures.record("203.0.113.7", UNKNOWN)
    assert lines(caplog)[-1].endswith("; its failures are answered after 1 s")


def test_counts_by_reason_cover_every_reason() -> None:
    failures = AuthFailures(FakeClock())
    for reason in (UNKNOWN, UNKNOWN, AuthFailureReason.MALFORMED):
        failures.record("203.0.113.7", reason)
    assert failures.totals == {
        AuthFailureReason.MISSING: 0,
        AuthFailureReason.MALFORMED: 1,
        AuthFailureReason.UNKNOWN: 2,
        AuthFailureReason.REVOKED: 0,
    }


def test_what_is_remembered_is_bounded_and_expires() -> None:
    clock = FakeClock()
    failures = AuthFailures(clock, AuthFailureSettings(max_addresses=3, log_interval_seconds=60.0))
    for n in range(100):
        failures.record(f"198.51.100.{n}", UNKNOWN)
        assert len(failures) <= 3
    clock.advance(61.0)
    failures.record("203.0.113.7", UNKNOWN)
    assert len(failures) == 1  # the quiet ones are gone


def test_every_failure_waits_when_the_burst_is_zero() -> None:
    failures = AuthFailures(FakeClock(), AuthFailureSettings(failures_before_delay=0, delay_seconds=0.5))
    assert failures.record("203.0.113.7", UNKNOWN) == 0.5
    off = AuthFailures(FakeClock(), AuthFailureSettings(failures_before_delay=0, delay_seconds=0.0))
    assert off.record("203.0.113.7", UNKNOWN) == 0.0


async def test_held_answers_are_bounded() -> None:
    failures = AuthFailures(FakeClock(), AuthFailureSettings(max_held_answers=0))
    assert await failures.hold(10.0) is False  # answered at once, not after 10 s
    assert await AuthFailures(FakeClock()).hold(0.0) is True
