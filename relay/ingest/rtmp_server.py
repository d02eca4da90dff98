"""The RTMP/RTMPS publishing server: the listening socket, connection limits and one task per connection.

Each connection is an asyncio protocol (`relay.ingest.rtmp_connection`) whose lifetime is one task owned
by the server; the bytes themselves are processed in the protocol's callbacks, not in that task.

Limits, checked at accept: `max_connections` in all and `max_connections_per_address` per peer key
(`relay.ingest.peers`: an IPv4 address, an IPv6 /64), and a budget of `max_unauthenticated_connections`
for connections that have not had a publish accepted yet. Anonymous connections are cheap to open and
cost us a slot each, so when any of these is full an anonymous connection is evicted to make room for
the newcomer; only when none could make room is the newcomer refused. The one evicted is the oldest of
the peer holding the most anonymous connections (of the newcomer's own peer when it is the peer's limit
that is full). Oldest first alone would let a flood faster than the budget per handshake time evict an
encoder during its own handshake; taken from the heaviest peer, a flood competes with itself, and evicts
a lone encoder only if it comes from as many peers as the budget holds connections. So anonymous
clients, however many and however slow, cannot keep an encoder out: each holds a slot at most
`preauth_timeout_seconds`, and a newcomer never waits for one to expire.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import Counter
from collections.abc import Callable

from relay.doors import DoorCounts, DoorCut, DoorRefusal
from relay.ingest.gate import PublishGate, RefusalReason, Transport
from relay.ingest.read_ticker import ReadTicker
from relay.ingest.rtmp_connection import RtmpConnection
from relay.ingest.rtmp_settings import RtmpServerSettings
from relay.ratelimit import ThrottledLog

__all__ = ["RtmpServer", "RtmpServerSettings"]

log = logging.getLogger("relay.ingest.rtmp")

RTMP_DOOR_REFUSALS = (
    DoorRefusal.MAX_CONNECTIONS,
    DoorRefusal.MAX_CONNECTIONS_PER_ADDRESS,
    DoorRefusal.MAX_UNAUTHENTICATED_CONNECTIONS,
)
"""The limits an RTMP(S) listener refuses a connection for, when no anonymous connection can make room."""


class RtmpServer:
    """Owns the listening socket and one task per connection; `close()` ends them all and waits.

    Use as ``async with RtmpServer(gate, settings) as server: ...`` or call start()/close().
    With `ssl_context` it is the RTMPS listener.
    """

    def __init__(
        self,
        gate: PublishGate,
        settings: RtmpServerSettings | None = None,
        ssl_context: ssl.SSLContext | None = None,
        on_refused: Callable[[Transport, RefusalReason], None] | None = None,
    ) -> None:
        self.gate = gate
        self._on_refused = on_refused
        """Told of the refusals decided here, before the gate (connection limits): for metrics."""
        self.settings = settings or RtmpServerSettings()
        self.ssl_context = ssl_context
        self.transport = Transport.RTMPS if ssl_context is not None else Transport.RTMP
        self._server: asyncio.Server | None = None
        self._ticker = ReadTicker(self.settings.merge_interval_seconds)
        """One timer for the reads of all its connections that merge them (`merge_interval_seconds`)."""
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[RtmpConnection] = set()
        self._anonymous: dict[RtmpConnection, None] = {}
        """Connections not publishing yet, oldest first (a dict keeps insertion order)."""
        self._per_address: dict[str, int] = {}
        self._closed = False
        self.accepted = 0
        """Connections taken in since start (refused ones not included)."""
        self._refused: Counter[DoorRefusal] = Counter(dict.fromkeys(RTMP_DOOR_REFUSALS, 0))
        self._cut: Counter[DoorCut] = Counter(dict.fromkeys(DoorCut, 0))
        """Counts for /metrics, every reason from 0 (the loop only)."""
        self._anonymous_log = ThrottledLog(log, f"rtmp {self.transport.value}: connections that never published")
        """Anonymous clients are many under a flood; each would otherwise write a line."""

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def connection_count(self) -> int:
        """Connections being served now."""
        return len(self._connections)

    @property
    def anonymous_count(self) -> int:
        """Connections being served now that have not had a publish accepted."""
        return len(self._anonymous)

    def door_counts(self) -> DoorCounts:
        """Open connections, and the connections refused and cut since start (on the server's loop)."""
        return DoorCounts(self.transport.value, len(self._connections), dict(self._refused), dict(self._cut))

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None or self._closed:
            raise RuntimeError("server already started or closed")
        self._server = await asyncio.get_running_loop().create_server(
            self._new_connection, self.settings.host, self.settings.port
        )
        log.info("rtmp %s listening on %s:%d", self.transport.value, self.settings.host, self.port)

    async def close(self) -> None:
        """Stop listening, end every connection (sinks closed as DROP) and wait; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
        self._ticker.close()

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _new_connection(self) -> RtmpConnection:
        return RtmpConnection(
            self.gate,
            self.settings,
            self.transport,
            admit=self._admit,
            ssl_context=self.ssl_context,
            on_publishing=self._published,
            log_anonymous_end=self._log_anonymous_end,
            ticker=self._ticker,
        )

    def _admit(self, connection: RtmpConnection) -> bool:
        """Whether an accepted connection is served (its task started); the connection aborts it if not."""
        if self._closed:
            return False
        refusal = self._make_room(connection.address, connection.peer)
        if refusal is not None:
            self._refused[refusal] += 1
            self._count(RefusalReason.CONNECTION_LIMIT)
            return False
        self.accepted += 1
        self._connections.add(connection)
        self._anonymous[connection] = None
        self._per_address[connection.address] = self._per_address.get(connection.address, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(connection), name=f"rtmp {connection.peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    def _make_room(self, address: str, peer: str) -> DoorRefusal | None:
        """None when a new connection from `address` fits, after evicting an anonymous one if that is
        needed; else the limit that is full."""
        settings = self.settings
        if self._per_address.get(address, 0) >= settings.max_connections_per_address:
            full, limit = "too many connections from this address", DoorRefusal.MAX_CONNECTIONS_PER_ADDRESS
            victim = next((c for c in self._anonymous if c.address == address and not c.at_gate), None)
        elif len(self._anonymous) >= settings.max_unauthenticated_connections:
            full, limit = "too many connections not publishing", DoorRefusal.MAX_UNAUTHENTICATED_CONNECTIONS
            victim = self._oldest_anonymous()
        elif len(self._connections) >= settings.max_connections:
            full, limit = "too many connections", DoorRefusal.MAX_CONNECTIONS
            victim = self._oldest_anonymous()
        else:
            return None
        if victim is None:
            self._anonymous_log.log(logging.WARNING, full, "rtmp %s %s: refused: %s", self.transport.value, peer, full)
            return limit
        self._forget(victim)
        victim.evict(full)
        self._count(RefusalReason.EVICTED)
        return None

    def _published(self, connection: RtmpConnection) -> None:
        self._anonymous.pop(connection, None)

    def _oldest_anonymous(self) -> RtmpConnection | None:
        """The oldest anonymous connection of the peer holding the most (at most the budget to scan)."""
        counts = Counter(c.address for c in self._anonymous if not c.at_gate)
        if not counts:
            return None
        most = max(counts.values())
        return next(c for c in self._anonymous if not c.at_gate and counts[c.address] == most)

    def _forget(self, connection: RtmpConnection) -> None:
        """Free the connection's slots (idempotent: eviction frees them before its task ends)."""
        if connection not in self._connections:
            return
        self._connections.discard(connection)
        self._anonymous.pop(connection, None)
        left = self._per_address.get(connection.address, 1) - 1
        if left:
            self._per_address[connection.address] = left
        else:
            self._per_address.pop(connection.address, None)

    def _log_anonymous_end(self, level: int, reason: str, peer: str, label: str) -> None:
        kind = reason.split(":", 1)[0]  # a few kinds, without the client's details
        self._anonymous_log.log(level, kind, "rtmp %s %s%s: %s", self.transport.value, peer, label, reason)

    def _count(self, reason: RefusalReason) -> None:
        if self._on_refused is not None:
            self._on_refused(self.transport, reason)

    async def _run(self, connection: RtmpConnection) -> None:
        try:
            await connection.run()
        finally:
            self._forget(connection)
            if connection.cut is not None:
                self._cut[connection.cut] += 1
