"""What a client of the control API may hold before and between requests: connections, and the time it
takes to send a request's headers and its body.

aiohttp bounds the size of headers and bodies, and closes a keep-alive connection that stays idle for
`keepalive_timeout` (passed to its runner), but it waits for a request's headers and body as long as the
client likes. `ConnectionGuard` sits between the listening socket and aiohttp's protocol:

- it counts the open connections; at `max_connections` a new one takes the place of the connection that
  has been waiting for a request the longest (idle keep-alive, or headers still coming), so clients that
  open connections and send nothing cannot lock the API; only when every connection is inside a request
  (an event feed, a call being answered) is the new one closed at once;
- a connection must complete a request's headers within `header_timeout_seconds` of opening or of
  sending that request's first byte, or it is closed (slow-header clients);
- its middleware reads a request's body within `body_timeout_seconds` (after authentication, so only
  a client with a key can hold a connection that way), else answers 408 and closes the connection.

Refusals and cut connections are logged through a `ThrottledLog`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Middleware

from api.errors import Handler, generic_error
from relay.ratelimit import ThrottledLog

log = logging.getLogger("relay.api.limits")


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Bounds on the API's connections (settings `http_*` in relay.config)."""

    max_connections: int = 512
    """Open connections; keep it well above the event feeds a node allows (128 shared plus a few per client)."""
    header_timeout_seconds: float = 5.0
    """From a connection's opening, or from a request's first byte, to the end of that request's headers."""
    body_timeout_seconds: float = 10.0
    """From the end of the headers to the end of the body (bodies are at most 1 MiB)."""
    keepalive_timeout_seconds: float = 15.0
    """An idle keep-alive connection is closed after this (aiohttp's `keepalive_timeout`)."""


class _GuardedProtocol(asyncio.Protocol):
    """Passes everything to aiohttp's protocol for one connection, and tells the guard what it sees."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self.transport: asyncio.Transport | None = None
        self.refused = False
        self.busy = False
        """Inside a request (headers received, the handler running)."""
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio's classes
        self.transport = transport
        if not self._guard._admit(self):
            self.refused = True
            transport.abort()
            return
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused:
            return
        self._guard._on_data(self)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return None if self.refused else self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused:
            return
        self._guard._forget(self)
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self._inner.resume_writing()


class ConnectionGuard:
    """Owns the count of open API connections and which of them are waiting for a request.

    `wrap(factory)` makes the protocol factory for the listening socket; `middleware` (first in the app)
    tells it when a request is being handled; `body_middleware` (after authentication) bounds the body.
    """

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self._open: dict[asyncio.BaseTransport, _GuardedProtocol] = {}
        self._waiting: dict[_GuardedProtocol, None] = {}
        """Open connections not inside a request, longest waiting first (a dict keeps insertion order)."""
        self.refused = 0
        """Connections closed at once because every open one was inside a request."""
        self.evicted = 0
        """Connections closed to make room for a new one."""
        self.header_timeouts = 0
        """Connections closed because a request's headers did not arrive in time."""
        self.body_timeouts = 0
        """Requests answered 408 because their body did not arrive in time."""
        self._log = ThrottledLog(log, "API connections cut or refused")

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def wrap(self, factory: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """The protocol factory to listen with, around aiohttp's (the runner's `server`)."""
        return lambda: _GuardedProtocol(self, factory())

    # -- connections ---------------------------------------------------------------------------------

    def _admit(self, conn: _GuardedProtocol) -> bool:
        if len(self._open) >= self.limits.max_connections:
            victim = next(iter(self._waiting), None)
            if victim is None:
                self.refused += 1
                self._log.log(logging.WARNING, "refused", "API connection refused: %d open, all in requests", len(self))
                return False
            self.evicted += 1
            self._log.log(logging.WARNING, "evicted", "API connection waiting longest closed to make room")
            self._close(victim)
        assert conn.transport is not None
        self._open[conn.transport] = conn
        self._waiting[conn] = None
        self._arm_header_deadline(conn)
        return True

    def __len__(self) -> int:
        return len(self._open)

    def _on_data(self, conn: _GuardedProtocol) -> None:
        # The first bytes of a request on a waiting connection start its header clock.
        if not conn.busy and conn.header_deadline is None:
            self._arm_header_deadline(conn)

    def _arm_header_deadline(self, conn: _GuardedProtocol) -> None:
        loop = asyncio.get_running_loop()
        conn.header_deadline = loop.call_later(self.limits.header_timeout_seconds, self._headers_late, conn)

    def _headers_late(self, conn: _GuardedProtocol) -> None:
        conn.header_deadline = None
        if not conn.busy and conn.transport is not None and conn.transport in self._open:
            self.header_timeouts += 1
            self._log.log(logging.INFO, "header timeout", "API connection closed: request headers not in time")
            self._close(conn)

    def _close(self, conn: _GuardedProtocol) -> None:
        """Free the slot now (connection_lost comes later) and abort the socket."""
        self._forget(conn)
        assert conn.transport is not None
        conn.transport.abort()

    def _forget(self, conn: _GuardedProtocol) -> None:
        if conn.header_deadline is not None:
            conn.header_deadline.cancel()
            conn.header_deadline = None
        if conn.transport is not None:
            self._open.pop(conn.transport, None)
        self._waiting.pop(conn, None)

    # -- requests ------------------------------------------------------------------------------------

    @property
    def middleware(self) -> Middleware:
        """First in the app: marks the connection as inside a request while the handler runs."""

        @web.middleware
        async def inside_request(request: web.Request, handler: Handler) -> web.StreamResponse:
            transport = request.transport
            conn = self._open.get(transport) if transport is not None else None
            if conn is None:  # a connection the guard does not watch (a test's own site)
                return await handler(request)
            conn.busy = True
            self._waiting.pop(conn, None)
            if conn.header_deadline is not None:
                conn.header_deadline.cancel()
                conn.header_deadline = None
            try:
                return await handler(request)
            finally:
                conn.busy = False
                if conn.transport is not None and conn.transport in self._open:
                    self._waiting[conn] = None  # now the most recent to wait: evicted last

        return inside_request

    @property
    def body_middleware(self) -> Middleware:
        """After authentication: the body is read within `body_timeout_seconds`, or 408 and the connection closes."""

        @web.middleware
        async def body_in_time(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.body_exists:
                try:
                    async with asyncio.timeout(self.limits.body_timeout_seconds):
                        await request.read()  # kept by aiohttp: the handler's read() or json() gets it
                except TimeoutError:
                    self.body_timeouts += 1
                    self._log.log(logging.INFO, "body timeout", "API request body not in time: 408")
                    response = generic_error(408, "request body not received in time")
                    response.force_close()
                    # Sent and closed here: aiohttp would otherwise linger, reading the missing body.
                    await response.prepare(request)
                    await response.write_eof()
                    if request.transport is not None:
                        request.transport.close()  # after what is buffered (the answer) is sent
                    return response
            return await handler(request)

        return body_in_time


class GuardedSite(web.BaseSite):
    """A TCP site whose connections go through a `ConnectionGuard` (aiohttp's TCPSite, with our factory)."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._guard = guard

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self.port}"

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for)."""
        sockets = getattr(self._server, "sockets", None) or ()
        return int(sockets[0].getsockname()[1]) if sockets else self._port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._guard.wrap(server), self._host, self._port, backlog=self._backlog, reuse_address=True
        )
