"""Where the relay may connect on a client's behalf: the destination policy against request forgery.

A restream makes the relay open a connection to wherever its URI points. Left alone, that lets any
API key reach what only the relay's host can: the API itself on 127.0.0.1, a cloud metadata service
on 169.254.169.254, databases on the private network; and ffmpeg's error ("Connection refused" or a
timeout) would tell an open port from a closed one. So for every client but the operator's own
(client 1), the address ranges in `_BUILT_IN` are refused, at two moments:

- when a restream's URI is accepted (`check_host`): an address written in the URI, in any form
  getaddrinfo would accept (`127.1`, `2130706433`, `0x7f000001`, `[::ffff:127.0.0.1]`), and the host
  names the operator denies. Names are not resolved there: what a name resolves to can change at any
  time, so the check that counts is the next one.
- right before each push starts (`resolve`): the host is resolved and EVERY address it resolves to is
  checked, since one answer may mix a public and a private address and two lookups may differ (DNS
  rebinding). The push then hands ffmpeg the checked address so that ffmpeg does not resolve again
  (RTMPS excepted, see relay/push/command.py). A refused destination is never connected to, so its
  error says nothing about ports.

The same check will guard pulled sources: it knows hosts, addresses and clients, not restreams.

How the operator's lists (RELAY_DESTINATION_ALLOW, RELAY_DESTINATION_DENY) combine, for each address:

1. the host name is on DENY: refused;
2. the most specific network entry of either list that contains the address decides (longest prefix;
   on a tie DENY wins); this holds for every client, the operator included;
3. the host name is on ALLOW: allowed (a trusted name escapes the built-in ranges, not DENY networks);
4. the client is the operator's: allowed;
5. the address is in a built-in range: refused, naming the range; anything else is allowed.

An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is judged as the IPv4 address it is; the IPv6 forms
that carry an IPv4 address to a gateway (IPv4-compatible, NAT64 `64:ff9b::/96`, 6to4, Teredo) must
pass both as themselves and as the IPv4 address inside.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Lookup = Callable[[str, int, int], Awaitable[Sequence[IPAddress]]]
"""(host, port, socket type) -> the addresses getaddrinfo gives, in its order."""

NAME_DENIED = "destination not allowed: the operator denies this host name"

LOOPBACK = "a loopback address"
PRIVATE = "a private network address"
LINK_LOCAL = "a link-local address"
SHARED = "a shared (carrier-grade NAT) address"
MULTICAST = "a multicast address"
UNSPECIFIED = "the unspecified address"
RESERVED = "a reserved address"
OPERATOR_DENIED = "an address the operator denies"

_BUILT_IN: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(network), label)
    for network, label in (
        ("0.0.0.0/8", UNSPECIFIED),  # "this network": connecting to 0.0.0.0 reaches the host itself
        ("10.0.0.0/8", PRIVATE),
        ("100.64.0.0/10", SHARED),
        ("127.0.0.0/8", LOOPBACK),
        ("169.254.0.0/16", LINK_LOCAL),  # cloud metadata services live here
        ("172.16.0.0/12", PRIVATE),
        ("192.0.0.0/24", RESERVED),
        ("192.0.2.0/24", RESERVED),
        ("192.168.0.0/16", PRIVATE),
        ("198.18.0.0/15", RESERVED),
        ("198.51.100.0/24", RESERVED),
        ("203.0.113.0/24", RESERVED),
        ("224.0.0.0/4", MULTICAST),
        ("240.0.0.0/4", RESERVED),  # 255.255.255.255 included
        ("::/128", UNSPECIFIED),
        ("::1/128", LOOPBACK),
        ("fe80::/10", LINK_LOCAL),
        ("fec0::/10", PRIVATE),  # site-local, deprecated but still routed by some
        ("fc00::/7", PRIVATE),  # unique local addresses (ULA)
        ("ff00::/8", MULTICAST),
    )
)
"""Ranges refused for clients other than the operator; whatever else Python does not call global
(documentation, benchmarking, discard prefixes...) is refused as reserved."""

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")


class DestinationRefused(Exception):
    """The policy refuses this destination; the message names the rule and is safe to show."""


class DestinationUnresolved(OSError):
    """The destination's host name did not resolve (or not in time); the message is safe to show."""


@dataclass(frozen=True, slots=True)
class HostRules:
    """One operator list: networks (an address is a /32 or /128) and host names, exact or `*.suffix`."""

    networks: tuple[IPNetwork, ...] = ()
    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    """From `*.example.com`: any name ending in `.example.com` (not example.com itself)."""

    def matches_name(self, name: str) -> bool:
        return name in self.names or any(name.endswith(suffix) for suffix in self.suffixes)

    def longest_prefix(self, address: IPAddress) -> int | None:
        """The prefix length of the most specific network containing `address`, None if none does."""
        lengths = [n.prefixlen for n in self.networks if n.version == address.version and address in n]
        return max(lengths) if lengths else None


def parse_rules(entries: Iterable[str]) -> HostRules:
    """An operator list from its entries (addresses, networks in CIDR form, host names, `*.suffix`).

    Raises ValueError naming the first entry that is none of those.
    """
    networks: list[IPNetwork] = []
    names: set[str] = set()
    suffixes: list[str] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        literal = literal_address(entry)
        if literal is not None:
            networks.append(ipaddress.ip_network(literal))
            continue
        try:
            networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            continue
        except ValueError:
            pass
        name = normalise_host(entry)
        wildcard = name.startswith("*.")
        label = name[2:] if wildcard else name
        if not label or not all(part and all(c.isalnum() or c in "-_" for c in part) for part in label.split(".")):
            raise ValueError(f"{raw!r} is not an address, a network or a host name")
        if wildcard:
            suffixes.append("." + label)
        else:
            names.add(label)
    return HostRules(tuple(networks), frozenset(names), tuple(suffixes))


def normalise_host(host: str) -> str:
    """The host as the rules compare it: lower case, no brackets, no trailing dot."""
    return host.strip("[]").rstrip(".").lower()


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes without any lookup, in every form getaddrinfo accepts:
    IPv6, dotted quad, and the inet_aton forms (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`)."""
    host = host.strip("[]")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host)
        except ValueError:
            return None
    return _inet_aton(host)


def _inet_aton(text: str) -> ipaddress.IPv4Address | None:
    # glibc's getaddrinfo takes any string inet_aton takes as an address: one to four parts, each
    # decimal, octal (leading 0) or hex (0x); the last part fills the bytes the others left.
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        if part[:2].lower() == "0x":
            digits, base, allowed = part[2:], 16, "0123456789abcdefABCDEF"
        elif len(part) > 1 and part[0] == "0":
            digits, base, allowed = part[1:], 8, "01234567"
        else:
            digits, base, allowed = part, 10, "0123456789"
        if not digits or any(c not in allowed for c in digits):
            return None
        values.append(int(digits, base))
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to a gateway or tunnel, if it does."""
    if address in _NAT64 or (address in _COMPAT and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def built_in_range(address: IPAddress) -> str | None:
    """The label of the built-in range `address` is in, None for a public address."""
    for network, label in _BUILT_IN:
        if network.version == address.version and address in network:
            return label
    return None if address.is_global else RESERVED


async def getaddrinfo_lookup(host: str, port: int, socket_type: int) -> list[IPAddress]:
    """The system resolver's answer, as ffmpeg would get it (getaddrinfo, in its order)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket_type)
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


@dataclass(frozen=True, slots=True)
class ResolvedHost:
    """A host and every address it resolved to, all of them allowed."""

    host: str
    addresses: tuple[IPAddress, ...]

    @property
    def address(self) -> IPAddress:
        """The one to connect to first: getaddrinfo's first, which puts unroutable ones last (RFC 6724)."""
        return self.addresses[0]

    def address_for(self, attempt: int) -> IPAddress:
        """The address for the `attempt`-th try (0 first), in turn: given one address, ffmpeg cannot fall
        back to the next itself (a name with a broken IPv6 route), so each retry takes the next one."""
        return self.addresses[attempt % len(self.addresses)]


class DestinationPolicy:
    """Owns the operator's allow and deny lists and who the operator is; answers whether a client may
    connect to a host (`check_host`, no lookup) and resolves and checks a host before a connection
    (`resolve`). The lookup is injected so the rules can be tested on any answer."""

    def __init__(
        self,
        operator_client_id: int,
        allow: HostRules | None = None,
        deny: HostRules | None = None,
        *,
        lookup: Lookup = getaddrinfo_lookup,
    ) -> None:
        self.operator_client_id = operator_client_id
        self.allow = allow or HostRules()
        self.deny = deny or HostRules()
        self._lookup = lookup

    def check_address(self, address: IPAddress, client_id: int | None, *, trusted_name: bool = False) -> str | None:
        """Why `client_id` may not connect to `address` (a label such as "a loopback address"), or None.

        `client_id` None is judged as a tenant. `trusted_name`: the host name is on the allow list.
        """
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        inner = _embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
        # The IPv4 address inside first: "a loopback address inside an IPv6 address" says more.
        candidates: list[IPAddress] = [address] if inner is None else [inner, address]
        for candidate in candidates:
            reason = self._check_one(candidate, client_id, trusted_name)
            if reason is not None:
                return reason if candidate is address else f"{reason} inside an IPv6 address"
        return None

    def _check_one(self, address: IPAddress, client_id: int | None, trusted_name: bool) -> str | None:
        allowed_at, denied_at = self.allow.longest_prefix(address), self.deny.longest_prefix(address)
        if denied_at is not None and (allowed_at is None or denied_at >= allowed_at):
            return OPERATOR_DENIED
        if allowed_at is not None or trusted_name or client_id == self.operator_client_id:
            return None
        return built_in_range(address)

    def check_host(self, host: str, client_id: int | None) -> str | None:
        """Why `client_id` may not use `host` as written (no lookup), or None: the message to show.

        An address in any numeric form is judged now; a name only if the operator denies it. What a
        name resolves to is judged by `resolve`, before each connection.
        """
        name = normalise_host(host)
        address = literal_address(name)
        if address is not None:
            reason = self.check_address(address, client_id)
            return None if reason is None else f"destination not allowed: the host is {reason}"
        return NAME_DENIED if self.deny.matches_name(name) else None

    async def resolve(
        self, host: str, port: int, client_id: int | None, *, socket_type: int, timeout_seconds: float
    ) -> ResolvedHost:
        """Resolve `host` and check every address; raises DestinationRefused or DestinationUnresolved."""
        name = normalise_host(host)
        literal = literal_address(name)
        if literal is not None:
            reason = self.check_address(literal, client_id)
            if reason is not None:
                raise DestinationRefused(f"destination not allowed: the host is {reason}")
            return ResolvedHost(host, (literal,))
        if self.deny.matches_name(name):
            raise DestinationRefused(NAME_DENIED)
        try:
            async with asyncio.timeout(timeout_seconds):
                found = await self._lookup(name, port, socket_type)
        except TimeoutError:
            raise DestinationUnresolved("cannot resolve the destination host: no answer in time") from None
        except (OSError, UnicodeError) as exc:
            detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else "lookup failed"
            raise DestinationUnresolved(f"cannot resolve the destination host: {detail}") from None
        addresses = tuple(dict.fromkeys(found))
        if not addresses:
            raise DestinationUnresolved("cannot resolve the destination host: no address")
        trusted = self.allow.matches_name(name)
        for address in addresses:
            reason = self.check_address(address, client_id, trusted_name=trusted)
            if reason is not None:
                raise DestinationRefused(f"destination not allowed: the host name resolves to {reason}")
        return ResolvedHost(host, addresses)
