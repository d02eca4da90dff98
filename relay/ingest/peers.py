"""Whose connections count together in the per-address limits of the ingest servers.

An IPv4 peer is its address. An IPv6 peer is its /64: one subscriber line (and so one attacker) is
usually given at least a /64, and counting single addresses would hand it 2^64 budgets. An IPv4-mapped
IPv6 address (a dual-stack listener) is the IPv4 address it maps.
"""

from __future__ import annotations

import ipaddress

IPV6_PREFIX_BITS = 64


def peer_key(host: str) -> str:
    """The key a peer's connections and handshakes are counted under (`host` without a port)."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])  # a link-local address may carry a zone
    except ValueError:
        return host  # not an IP address (a Unix socket, "?"): its own key
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, IPV6_PREFIX_BITS), strict=False))
    return str(ip)
