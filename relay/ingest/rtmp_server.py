"""The RTMP/RTMPS publishing server: the listening socket, connection limits and one task per connection.

Each connection is one task owned by the server; what it does is in `relay.ingest.rtmp_connection`.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable

from relay.ingest.gate import PublishGate, RefusalReason, Transport
from relay.ingest.rtmp_connection import RtmpConnection
from relay.ingest.rtmp_settings import RtmpServerSettings

__all__ = ["RtmpServer", "RtmpServerSettings"]

log = logging.getLogger("relay.ingest.rtmp")


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
        self._tasks: set[asyncio.Task[None]] = set()
        self._connections: set[RtmpConnection] = set()
        self._per_address: dict[str, int] = {}
        self._closed = False

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

    async def start(self) -> None:
        """Start listening."""
        if self._server is not None or self._closed:
            raise RuntimeError("server already started or closed")
        self._server = await asyncio.start_server(
            self._on_client,
            self.settings.host,
            self.settings.port,
            ssl=self.ssl_context,
            ssl_handshake_timeout=self.settings.handshake_timeout_seconds if self.ssl_context else None,
            limit=self.settings.read_chunk_bytes,
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

    async def __aenter__(self) -> RtmpServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        address = str(peername[0]) if peername else "?"
        peer = f"{address}:{peername[1]}" if peername else "?"
        if self._closed:
            writer.transport.abort()
            return
        if len(self._connections) >= self.settings.max_connections:
            log.warning("rtmp %s %s: refused: too many connections", self.transport.value, peer)
            self._refuse(writer)
            return
        if self._per_address.get(address, 0) >= self.settings.max_connections_per_address:
            log.warning("rtmp %s %s: refused: too many connections from this address", self.transport.value, peer)
            self._refuse(writer)
            return
        connection = RtmpConnection(self.gate, self.settings, self.transport, reader, writer, peer, address)
        self._connections.add(connection)
        self._per_address[address] = self._per_address.get(address, 0) + 1
        task = asyncio.get_running_loop().create_task(self._run(connection), name=f"rtmp {peer}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _refuse(self, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()
        if self._on_refused is not None:
            self._on_refused(self.transport, RefusalReason.CONNECTION_LIMIT)

    async def _run(self, connection: RtmpConnection) -> None:
        try:
            await connection.run()
        finally:
            self._connections.discard(connection)
            left = self._per_address.get(connection.address, 1) - 1
            if left:
                self._per_address[connection.address] = left
            else:
                self._per_address.pop(connection.address, None)
