"""What one client may use: streams, restreams per stream, running pushes; and the node's push cap.

Every active restream of a live stream is an ffmpeg (~15-20 MB, ~1 CPU s/min), so a client's use
is bounded. Defaults apply to every client; the operator overrides them per client with
`RELAY_CLIENT_LIMITS` / `--client-limits`, written `CLIENT:NAME=N,NAME=N;CLIENT:...`, e.g.
`2:streams=10,pushes=4;7:restreams_per_stream=50`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace

LIMIT_NAMES = ("streams", "restreams_per_stream", "pushes")


class LimitsError(ValueError):
    """A limits specification the relay cannot read; the message says where."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """One client's bounds."""

    streams: int = 100
    """Streams the client may define."""
    restreams_per_stream: int = 20
    """Restreams (destinations) one stream may have."""
    pushes: int = 20
    """Pushes of the client that may run at once (active restreams of live streams)."""


@dataclass(frozen=True, slots=True)
class Limits:
    """The defaults, the per-client overrides and the node-wide cap on running pushes."""

    defaults: ClientLimits = field(default_factory=ClientLimits)
    overrides: Mapping[int, ClientLimits] = field(default_factory=dict)
    node_pushes: int = 64
    """Pushes that may run on this node at once, shared fairly between clients."""

    def of(self, client_id: int) -> ClientLimits:
        return self.overrides.get(client_id, self.defaults)


def parse_client_limits(text: str, defaults: ClientLimits) -> dict[int, ClientLimits]:
    """`2:streams=10,pushes=4;7:restreams_per_stream=50` -> per-client limits (unnamed ones default)."""
    result: dict[int, ClientLimits] = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        client, sep, assignments = part.partition(":")
        if not sep or not client.strip().isdigit():
            raise LimitsError(f"{part!r}: expected CLIENT:NAME=N[,NAME=N]")
        values: dict[str, int] = {}
        for assignment in filter(None, (a.strip() for a in assignments.split(","))):
            name, eq, number = (s.strip() for s in assignment.partition("="))
            if not eq or name not in LIMIT_NAMES:
                raise LimitsError(f"{assignment!r}: expected one of {', '.join(LIMIT_NAMES)} = a number")
            if not number.isdigit() or int(number) > 1_000_000:
                raise LimitsError(f"{assignment!r}: expected a whole number from 0 to 1000000")
            values[name] = int(number)
        result[int(client)] = replace(result.get(int(client), defaults), **values)
    return result


def describe(limits: ClientLimits) -> str:
    return ", ".join(f"{f.name}={getattr(limits, f.name)}" for f in fields(limits))
