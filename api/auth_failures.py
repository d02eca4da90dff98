"""Failed API authentications: counted by reason, logged at most once a minute per address, and slowed
down per address after a burst.

API keys are 256-bit random strings, so guessing one is hopeless; what a stream of wrong keys costs is
a store look-up each (on the store's one worker thread, which also serves every definition write) and
log lines. So after `failures_before_delay` failures within `failure_window_seconds` from one address,
its further *failed* attempts are answered after `delay_seconds`, until it has failed nothing for a
whole window: a client that loops on a bad key goes from hundreds of attempts a second to one per
delay per connection, however it spaces them. A correct key is never
delayed, from any address, so nobody can lock a tenant out by failing from the tenant's address.
Refusals stay 401 (never 429: the Gcore SDK retries 429 by itself).

IPv6 addresses count per /64 (one host usually holds a whole /64, so per-address counting would let
it rotate addresses freely). Everything is bounded: at most `max_addresses` entries (least recently
failed dropped first, and each dropped once it has been quiet for a log interval) and at most
`max_held_answers` refusals waiting at once; beyond that a refusal is answered at once and its
connection closed, so that held sockets can never use up the process's file descriptors.

No key material is kept, logged or counted: only the address, the time and the reason.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from relay.config import Settings
from relay.hub.clock import Clock

log = logging.getLogger("relay.api.auth")

UNKNOWN_ADDRESS = "unknown"


class AuthFailureReason(StrEnum):
    """Why a request was not authenticated (the `reason` label of relay_api_auth_failures_total)."""

    MISSING = "missing"
    """No Authorization header (or an empty one)."""
    MALFORMED = "malformed"
    """A header that is not `APIKey <key>`."""
    UNKNOWN = "unknown"
    """A key the store does not know."""
    REVOKED = "revoked"
    """A key that was revoked."""


@dataclass(frozen=True, slots=True)
class AuthFailureSettings:
    """When failures from one address are slowed down, and the bounds on what is remembered."""

    failures_before_delay: int = 10
    failure_window_seconds: float = 10.0
    delay_seconds: float = 1.0
    """0 turns the delay off (failures are still counted and logged)."""
    log_interval_seconds: float = 60.0
    """At most one log line per address per interval; it carries the count since the previous one."""
    max_addresses: int = 4096
    max_held_answers: int = 128

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthFailureSettings:
        return cls(
            failures_before_delay=settings.api_auth_failures_before_delay,
            failure_window_seconds=settings.api_auth_failure_window_seconds,
            delay_seconds=settings.api_auth_failure_delay_seconds,
        )


def address_group(remote: str | None) -> str:
    """What failures are counted by: the IPv4 address, or the /64 network of an IPv6 address."""
    if not remote:
        return UNKNOWN_ADDRESS
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return UNKNOWN_ADDRESS
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # a dual-stack socket shows IPv4 clients as ::ffff:a.b.c.d
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network(((int(address) >> 64) << 64, 64)))
    return str(address)


@dataclass(slots=True)
class _AddressFailures:
    """What is remembered about one address: its latest failure times and what is not yet logged."""

    recent: deque[float]
    """The last `failures_before_delay` failure times (a deque with that maxlen)."""
    last_failure: float
    slowed_until: float = float("-inf")
    """Failures before this time are held back; each one held pushes it a window further."""
    logged_at: float | None = None
    unlogged: Counter[AuthFailureReason] = field(default_factory=Counter)
    """Failures since the last log line about this address, by reason."""


class AuthFailures:
    """Owns the node's failed-authentication counters and the per-address windows (bounded)."""

    def __init__(self, clock: Clock, settings: AuthFailureSettings | None = None) -> None:
        self._clock = clock
        self.settings = settings or AuthFailureSettings()
        self._addresses: OrderedDict[str, _AddressFailures] = OrderedDict()
        self._totals: Counter[AuthFailureReason] = Counter()
        self._held = 0

    @property
    def totals(self) -> dict[AuthFailureReason, int]:
        """Failures since start, by reason (every reason present)."""
        return {reason: self._totals[reason] for reason in AuthFailureReason}

    def __len__(self) -> int:
        """How many addresses are remembered."""
        return len(self._addresses)

    def record(self, remote: str | None, reason: AuthFailureReason) -> float:
        """Count one failure from `remote`; returns how long to wait before answering it (0: at once)."""
        settings = self.settings
        now = self._clock.now()
        self._totals[reason] += 1
        self._forget_quiet(now)
        group = address_group(remote)
        entry = self._addresses.get(group)
        if entry is None:
            entry = _AddressFailures(deque(maxlen=max(0, settings.failures_before_delay)), now)
            self._addresses[group] = entry
            while len(self._addresses) > max(1, settings.max_addresses):
                self._addresses.popitem(last=False)
        else:
            self._addresses.move_to_end(group)
        recent = entry.recent
        # The burst is the failures *before* this one: the (N+1)th failure within the window waits.
        slowed = (
            recent.maxlen == 0
            or now < entry.slowed_until
            or (len(recent) == recent.maxlen and now - recent[0] < settings.failure_window_seconds)
        )
        if slowed:
            entry.slowed_until = now + settings.failure_window_seconds
        recent.append(now)
        entry.last_failure = now
        entry.unlogged[reason] += 1
        delay = settings.delay_seconds if slowed else 0.0
        if entry.logged_at is None or now - entry.logged_at >= settings.log_interval_seconds:
            self._log(group, entry, now, delay)
        return delay

    def _log(self, group: str, entry: _AddressFailures, now: float, delay: float) -> None:
        count = sum(entry.unlogged.values())
        reasons = ", ".join(f"{reason.value} {n}" for reason, n in sorted(entry.unlogged.items()))
        log.warning(
            "%d failed API authentication%s from %s%s (%s)%s",
            count,
            "" if count == 1 else "s",
            group,
            "" if entry.logged_at is None else f" in the last {now - entry.logged_at:.0f} s",
            reasons,
            f"; its failures are answered after {delay:g} s" if delay else "",
            extra={"address": group, "failures": count},
        )
        entry.logged_at = now
        entry.unlogged.clear()

    def _forget_quiet(self, now: float) -> None:
        """Drop addresses quiet for longer than both the window and the log interval (oldest first)."""
        quiet_seconds = max(self.settings.failure_window_seconds, self.settings.log_interval_seconds)
        while self._addresses:
            group, entry = next(iter(self._addresses.items()))
            if now - entry.last_failure <= quiet_seconds:
                break
            del self._addresses[group]

    async def hold(self, seconds: float) -> bool:
        """Wait `seconds` before a refusal goes out; False, at once, if too many refusals wait already."""
        if self._held >= self.settings.max_held_answers:
            return False
        self._held += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            self._held -= 1
        return True


class AuthFailureCollector(Collector):
    """relay_api_auth_failures_total{reason}: the node's failed authentications (no key material)."""

    def __init__(self, failures: AuthFailures) -> None:
        self._failures = failures

    def collect(self) -> Iterator[Metric]:
        counter = CounterMetricFamily(
            "relay_api_auth_failures",
            "API requests refused for a missing, malformed, unknown or revoked key (whole node), by reason",
            labels=["reason"],
        )
        for reason, count in self._failures.totals.items():
            counter.add_metric([reason.value], float(count))
        yield counter


AUTH_FAILURES = web.AppKey("auth_failures", AuthFailures)
