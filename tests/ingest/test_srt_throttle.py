"""The handshake-rate check in front of SRT admission, on a hand-driven clock: over its address's rate a
caller is refused with 1402 and the admission (the store read) is not asked."""

from __future__ import annotations

from relay.ingest.gate import PublishRefused, RefusalReason, Transport
from relay.ingest.srt_admission import SrtAdmit, admit_handshake
from relay.ratelimit import TokenBuckets
from relay.srt.handshake import Accept, Reject
from tests.fakes.clock import FakeClock


class CountingAdmission:
    """Knows stream 1 with token `tok`; counts how often it was asked (each ask is a store read)."""

    def __init__(self) -> None:
        self.checks = 0

    def check(self, streamid: str) -> SrtAdmit:
        self.checks += 1
        if streamid != "1#tok":
            raise PublishRefused(RefusalReason.BAD_TOKEN)
        return SrtAdmit(stream_id=1)


def test_over_the_rate_the_store_is_not_read_and_the_refusal_is_counted() -> None:
    clock = FakeClock()
    admission = CountingAdmission()
    throttle = TokenBuckets(per_second=1.0, burst=2, clock=clock.now)
    counted: list[tuple[Transport, RefusalReason]] = []

    def knock(streamid: str, host: str) -> int | None:
        decision = admit_handshake(
            admission, streamid, (host, 4000), throttle=throttle, on_refused=lambda t, r: counted.append((t, r))
        )
        return decision.code if isinstance(decision, Reject) else None

    assert [knock("1#bad", "192.0.2.1") for _ in range(5)] == [1403, 1403, 1402, 1402, 1402]
    assert admission.checks == 2
    assert counted == [(Transport.SRT, RefusalReason.RATE_LIMITED)] * 3
    assert knock("not a streamid", "192.0.2.1") == 1402  # even a malformed one costs a token
    assert knock("1#tok", "192.0.2.2") is None  # another address is not held back
    clock.advance(1.0)
    assert knock("1#tok", "192.0.2.1") is None  # a token back after a second


def test_an_ipv6_64_shares_one_bucket() -> None:
    clock = FakeClock()
    throttle = TokenBuckets(per_second=1.0, burst=2, clock=clock.now)
    admission = CountingAdmission()
    hosts = ["2001:db8:5:6::1", "2001:db8:5:6::2", "2001:db8:5:6:ffff::3"]
    codes = [admit_handshake(admission, "1#bad", (h, 4000), throttle=throttle) for h in hosts]
    assert [d.code for d in codes if isinstance(d, Reject)] == [1403, 1403, 1402]
    assert isinstance(admit_handshake(admission, "1#tok", ("2001:db8:5:7::1", 4000), throttle=throttle), Accept)


def test_without_a_throttle_or_a_peer_admission_is_unchanged() -> None:
    admission = CountingAdmission()
    assert isinstance(admit_handshake(admission, "1#tok", None), Accept)
    throttle = TokenBuckets(per_second=1.0, burst=1, clock=FakeClock().now)
    assert isinstance(admit_handshake(admission, "1#tok", None, throttle=throttle), Accept)
    refused = admit_handshake(admission, "1#tok", None, throttle=throttle)  # unknown peers share one bucket
    assert isinstance(refused, Reject) and refused.code == 1402
