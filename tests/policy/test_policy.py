"""The destination policy as tables: every denied form, public addresses, the operator, the operator's
lists and how they combine, and the resolve-and-check before a connection (relay/policy.py)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence

import pytest

from relay.policy import (
    LINK_LOCAL,
    LOOPBACK,
    MULTICAST,
    NAME_DENIED,
    OPERATOR_DENIED,
    PRIVATE,
    RESERVED,
    SHARED,
    UNSPECIFIED,
    DestinationPolicy,
    DestinationRefused,
    DestinationUnresolved,
    IPAddress,
    literal_address,
    parse_rules,
)

OPERATOR = 1
TENANT = 2


def teredo(client: str) -> str:
    """A Teredo address whose (obfuscated) client is `client`."""
    server = int(ipaddress.IPv4Address("65.54.227.120"))
    obfuscated = ~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (0x8000 << 48) | obfuscated))


DENIED: list[tuple[str, str]] = [
    # loopback, in every form getaddrinfo accepts
    ("127.0.0.1", LOOPBACK),
    ("127.255.255.254", LOOPBACK),
    ("127.1", LOOPBACK),
    ("127.0.1", LOOPBACK),
    ("2130706433", LOOPBACK),
    ("0x7f000001", LOOPBACK),
    ("0X7F000001", LOOPBACK),
    ("0x7f.1", LOOPBACK),
    ("0177.0.0.1", LOOPBACK),
    ("017700000001", LOOPBACK),
    ("127.0x0.0.1", LOOPBACK),
    ("::1", LOOPBACK),
    ("[::1]", LOOPBACK),
    ("0:0:0:0:0:0:0:1", LOOPBACK),
    # unspecified: connecting to it reaches this host
    ("0.0.0.0", UNSPECIFIED),
    ("0", UNSPECIFIED),
    ("0.1.2.3", UNSPECIFIED),
    ("::", UNSPECIFIED),
    # private networks (RFC 1918, ULA, site-local)
    ("10.0.0.1", PRIVATE),
    ("172.16.0.1", PRIVATE),
    ("172.31.255.255", PRIVATE),
    ("192.168.1.1", PRIVATE),
    ("fc00::1", PRIVATE),
    ("fd12:3456::1", PRIVATE),
    ("fec0::1", PRIVATE),
    # link-local: the cloud metadata service
    ("169.254.169.254", LINK_LOCAL),
    ("fe80::1", LINK_LOCAL),
    # shared address space (CGNAT)
    ("100.64.0.1", SHARED),
    ("100.127.255.254", SHARED),
    # multicast
    ("224.0.0.1", MULTICAST),
    ("239.255.255.250", MULTICAST),
    ("ff02::1", MULTICAST),
    # reserved: future use, broadcast, documentation, benchmarking, discard
    ("240.0.0.1", RESERVED),
    ("255.255.255.255", RESERVED),
    ("4294967295", RESERVED),
    ("192.0.2.1", RESERVED),
    ("198.18.0.1", RESERVED),
    ("2001:db8::1", RESERVED),
    ("100::1", RESERVED),
    # IPv4-mapped: judged as the IPv4 address it is
    ("::ffff:127.0.0.1", LOOPBACK),
    ("[::ffff:7f00:1]", LOOPBACK),
    ("::ffff:169.254.169.254", LINK_LOCAL),
    ("::ffff:10.0.0.1", PRIVATE),
    # forms that carry an IPv4 address to a gateway
    ("::127.0.0.1", LOOPBACK + " inside an IPv6 address"),
    ("64:ff9b::a9fe:a9fe", LINK_LOCAL + " inside an IPv6 address"),
    ("64:ff9b::10.1.2.3", PRIVATE + " inside an IPv6 address"),
    ("2002:7f00:1::", LOOPBACK + " inside an IPv6 address"),
    ("2002:c0a8:101::1", PRIVATE + " inside an IPv6 address"),
    (teredo("127.0.0.1"), LOOPBACK + " inside an IPv6 address"),
]

PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "134744072",  # 8.8.8.8 as one number: a public address in an odd form is still public
    "0x8080808",
    "2606:4700:4700::1111",
    "[2a00:1450:4001:80b::200e]",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
    "100.63.255.255",
    "100.128.0.1",
    "172.32.0.1",
    "a.rtmp.youtube.com",  # names are judged when resolved, not as written
    "localhost",
]


@pytest.mark.parametrize(("host", "label"), DENIED)
def test_tenants_are_refused_every_denied_form(host: str, label: str) -> None:
    policy = DestinationPolicy(OPERATOR)
    assert policy.check_host(host, TENANT) == f"destination not allowed: the host is {label}"
    assert policy.check_host(host, None) is not None  # no owner known: judged as a tenant


@pytest.mark.parametrize(("host", "label"), DENIED)
def test_the_operator_is_not_bound_by_the_built_in_ranges(host: str, label: str) -> None:
    assert DestinationPolicy(OPERATOR).check_host(host, OPERATOR) is None


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_and_names_are_allowed(host: str) -> None:
    assert DestinationPolicy(OPERATOR).check_host(host, TENANT) is None


@pytest.mark.parametrize(
    "text",
    [
        *("127.1", "2130706433", "0x7f000001", "0177.0.0.1", "0x7f.1", "127.0.1", "0", "00000127.1", "4294967295"),
        *("1.2.3.4.5", "999.1.1.1", "127.1.", "08.1.1.1", "0x", "1..2", "4294967296", "0x100000000", "a.b"),
    ],
)
def test_numeric_forms_read_as_inet_aton_reads_them(text: str) -> None:
    # glibc's getaddrinfo takes exactly what inet_aton takes (no lookup): the policy must agree on
    # every such string, or a form it does not know would slip through as a "name".
    try:
        expected: str | None = socket.inet_ntoa(socket.inet_aton(text))
    except OSError:
        expected = None
    address = literal_address(text)
    assert (str(address) if address is not None else None) == expected


@pytest.mark.parametrize(
    ("allow", "deny", "host", "client", "refused"),
    [
        # ALLOW widens for tenants
        ("10.0.0.0/8", "", "10.1.2.3", TENANT, False),
        ("192.168.1.20", "", "192.168.1.20", TENANT, False),
        ("192.168.1.20", "", "192.168.1.21", TENANT, True),
        ("fd00::/8", "", "fd00::5", TENANT, False),
        # the most specific entry wins, on a tie DENY
        ("10.1.0.0/16", "10.0.0.0/8", "10.1.2.3", TENANT, False),
        ("10.1.0.0/16", "10.0.0.0/8", "10.2.0.1", TENANT, True),
        ("10.0.0.0/8", "10.1.2.3", "10.1.2.3", TENANT, True),
        ("10.0.0.0/8", "10.0.0.0/8", "10.1.2.3", TENANT, True),
        # DENY narrows, for everyone: the operator too
        ("", "169.254.169.254", "169.254.169.254", OPERATOR, True),
        ("", "8.8.8.0/24", "8.8.8.8", TENANT, True),
        ("", "8.8.8.0/24", "8.8.4.4", TENANT, False),
        # IPv4-mapped forms meet the IPv4 entries
        ("", "169.254.169.254", "::ffff:169.254.169.254", OPERATOR, True),
        # allow-list mode: deny everything, allow a few
        ("8.8.8.0/24", "0.0.0.0/0, ::/0", "8.8.8.8", TENANT, False),
        ("8.8.8.0/24", "0.0.0.0/0, ::/0", "1.1.1.1", TENANT, True),
        ("8.8.8.0/24", "0.0.0.0/0, ::/0", "2606:4700:4700::1111", TENANT, True),
        # entries in numeric forms
        ("", "127.1", "127.0.0.1", OPERATOR, True),
        # host names on DENY are refused as written
        ("", "*.internal", "db.internal", TENANT, True),
        ("", "*.internal", "internal", TENANT, False),
        ("", "metadata.google.internal", "METADATA.google.internal.", OPERATOR, True),
    ],
)
def test_operator_lists(allow: str, deny: str, host: str, client: int, refused: bool) -> None:
    policy = DestinationPolicy(OPERATOR, parse_rules(allow.split(",")), parse_rules(deny.split(",")))
    reason = policy.check_host(host, client)
    assert (reason is not None) == refused, reason
    if reason is not None and literal_address(host) is None:
        assert reason == NAME_DENIED
    elif reason is not None:  # an address the operator denies, or in a range it did not lift
        assert reason.startswith("destination not allowed: the host is ")


def test_a_denied_network_names_the_operator() -> None:
    policy = DestinationPolicy(OPERATOR, deny=parse_rules(["169.254.169.254"]))
    assert policy.check_host("169.254.169.254", OPERATOR) == f"destination not allowed: the host is {OPERATOR_DENIED}"


@pytest.mark.parametrize("entry", ["10.0.0.0/33", "bad name", "under_score!", "*.", "*", "a..b", "http://x"])
def test_malformed_entries_are_refused(entry: str) -> None:
    with pytest.raises(ValueError, match="is not an address, a network or a host name"):
        parse_rules([entry])


def answers(*rounds: Sequence[str]) -> tuple[list[tuple[str, int, int]], DestinationPolicy]:
    """A policy whose lookup gives one answer per call, in order (a DNS server that changes its mind)."""
    calls: list[tuple[str, int, int]] = []
    queue = [[ipaddress.ip_address(a) for a in answer] for answer in rounds]

    async def lookup(host: str, port: int, socket_type: int) -> list[IPAddress]:
        calls.append((host, port, socket_type))
        return queue.pop(0)

    return calls, DestinationPolicy(OPERATOR, lookup=lookup)


async def test_every_resolved_address_is_checked() -> None:
    calls, policy = answers(["8.8.8.8", "10.0.0.7"])
    with pytest.raises(DestinationRefused) as refused:
        await policy.resolve("mixed.example", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert str(refused.value) == f"destination not allowed: the host name resolves to {PRIVATE}"
    assert calls == [("mixed.example", 1935, socket.SOCK_STREAM)]


async def test_each_start_resolves_again_so_rebinding_is_caught() -> None:
    _, policy = answers(["8.8.8.8"], ["127.0.0.1"])
    first = await policy.resolve("rebind.example", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert first.address == ipaddress.ip_address("8.8.8.8")
    with pytest.raises(DestinationRefused, match="resolves to a loopback address"):
        await policy.resolve("rebind.example", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)


async def test_the_first_answer_is_the_one_to_connect_to_and_the_operator_may_reach_anything() -> None:
    _, policy = answers(["127.0.0.1", "::1"])
    resolved = await policy.resolve("localhost", 1935, OPERATOR, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert resolved.address == ipaddress.ip_address("127.0.0.1") and len(resolved.addresses) == 2


async def test_a_trusted_name_escapes_the_built_in_ranges_but_not_deny_networks() -> None:
    async def lookup(host: str, port: int, socket_type: int) -> list[IPAddress]:
        return [ipaddress.ip_address("192.168.1.5")]

    allow = parse_rules(["media.lan"])
    policy = DestinationPolicy(OPERATOR, allow, lookup=lookup)
    resolved = await policy.resolve("media.lan", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert str(resolved.address) == "192.168.1.5"
    with pytest.raises(DestinationRefused, match="resolves to a private"):
        await policy.resolve("other.lan", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    strict = DestinationPolicy(OPERATOR, allow, parse_rules(["192.168.1.5"]), lookup=lookup)
    with pytest.raises(DestinationRefused, match="an address the operator denies"):
        await strict.resolve("media.lan", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)


async def test_literals_and_denied_names_are_judged_without_a_lookup() -> None:
    async def lookup(host: str, port: int, socket_type: int) -> list[IPAddress]:
        raise AssertionError("no lookup for an address or a denied name")

    policy = DestinationPolicy(OPERATOR, deny=parse_rules(["*.corp"]), lookup=lookup)
    with pytest.raises(DestinationRefused, match="the host is a loopback address"):
        await policy.resolve("2130706433", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    with pytest.raises(DestinationRefused) as refused:
        await policy.resolve("db.corp", 1935, OPERATOR, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert str(refused.value) == NAME_DENIED
    resolved = await policy.resolve("[2606:4700::1]", 443, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1)
    assert str(resolved.address) == "2606:4700::1"


async def test_lookup_failures_are_unresolved_not_refused() -> None:
    async def failing(host: str, port: int, socket_type: int) -> list[IPAddress]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def silent(host: str, port: int, socket_type: int) -> list[IPAddress]:
        await asyncio.Event().wait()
        return []

    with pytest.raises(DestinationUnresolved, match="cannot resolve the destination host: Name or service not known"):
        await DestinationPolicy(OPERATOR, lookup=failing).resolve(
            "nx.example", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=1
        )
    with pytest.raises(DestinationUnresolved, match="no answer in time"):
        await DestinationPolicy(OPERATOR, lookup=silent).resolve(
            "slow.example", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=0.05
        )


async def test_the_system_resolver_sees_localhost_as_loopback() -> None:
    # The real getaddrinfo, as the pushes use it: `localhost` is a name that resolves to loopback.
    policy = DestinationPolicy(OPERATOR)
    with pytest.raises(DestinationRefused, match="resolves to a loopback address"):
        await policy.resolve("localhost", 1935, TENANT, socket_type=socket.SOCK_STREAM, timeout_seconds=5)
    resolved = await policy.resolve("localhost", 1935, OPERATOR, socket_type=socket.SOCK_STREAM, timeout_seconds=5)
    assert resolved.address.is_loopback
