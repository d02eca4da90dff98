"""Whose connections count together: an IPv4 address, an IPv6 /64."""

from __future__ import annotations

import pytest

from relay.ingest.peers import peer_key


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff:ffff:ffff:fffe", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::1", "::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
    ],
)
def test_peer_key(host: str, key: str) -> None:
    assert peer_key(host) == key


def test_one_64_is_one_peer_and_the_next_is_another() -> None:
    same = {peer_key(f"2001:db8:aa:bb:{i:x}::{i:x}") for i in range(1, 200)}
    assert same == {"2001:db8:aa:bb::/64"}
    assert peer_key("2001:db8:aa:bc::1") != peer_key("2001:db8:aa:bb::1")
