"""A small impairing proxy of ours, for what `tc tbf` cannot do on a kernel without netem.

TCP (`tcp_impair`): every byte forwarded after `delay_seconds` (order kept: a long fat pipe), or never
read at all (`zero_window`: the peer's window closes, its sends block), or closed late
(`hold_close_seconds`: the server's close reaches the client after a while), or reset (`reset_on_connect`:
the connection is accepted then closed with RST; `reset_after_bytes`: RST once that many bytes went
upstream). `stall()` / `resume()` stop and restart forwarding on open connections.

UDP (`udp_impair`, for SRT): each datagram in either direction is dropped with probability `loss`,
delayed by `delay_seconds`, and with probability `reorder` held back behind the next one. Randomness is
seeded (`seed`), so a failing run can be replayed; every queue is bounded (`max_queued`), beyond which
datagrams are dropped, like a router's.

Both listen on `listen` and forward to `target` (host, port); they are async context managers that
close every socket and task on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

Address = tuple[str, int]

MAX_QUEUED_DEFAULT = 4096
"""Datagrams (UDP) or chunks (TCP) one direction may hold in delay at once."""


@dataclass
class TcpImpairment:
    delay_seconds: float = 0.0
    zero_window: bool = False
    reset_on_connect: bool = False
    reset_after_bytes: int | None = None
    """RST a connection once it has carried this many bytes upstream..."""
    resets_mid_stream: int = 1
    """...this many times in all; later connections pass (a destination that recovers)."""
    max_queued: int = MAX_QUEUED_DEFAULT
    hold_close_seconds: float = 0.0
    """When the server closes, the client's side stays open this long (its last bytes delivered, the
    FIN late: a close read only after the goodbye, as a loaded machine may see it)."""


@dataclass
class TcpStats:
    connections: int = 0
    resets: int = 0
    bytes_up: int = 0


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Abort with SO_LINGER 0: the kernel sends RST instead of FIN."""
    if writer is None:
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class TcpProxy:
    impairment: TcpImpairment
    stats: TcpStats = field(default_factory=TcpStats)
    port: int = 0
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)

    def stall(self) -> None:
        """Stop forwarding (and reading) on every connection: the sender's window fills and closes."""
        self._flowing.clear()

    def resume(self) -> None:
        self._flowing.set()


@contextlib.asynccontextmanager
async def tcp_impair(listen: Address, target: Address, impairment: TcpImpairment) -> AsyncIterator[TcpProxy]:
    proxy = TcpProxy(impairment)
    proxy.resume()
    tasks: set[asyncio.Task[None]] = set()
    conns: list[asyncio.StreamWriter] = []

    def spawn(coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def pipe(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, upstream: bool, peer: asyncio.StreamWriter | None
    ) -> None:
        """Read, hold each chunk `delay_seconds`, write; a bounded queue between the two keeps order."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(impairment.max_queued)
        carried = 0

        async def read() -> None:
            try:
                while True:
                    await proxy._flowing.wait()
                    data = await reader.read(16384)
                    if not data:
                        break
                    await queue.put((time.monotonic() + impairment.delay_seconds, data))
            except (ConnectionError, OSError):
                pass
            finally:
                await queue.put(None)

        reading = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await proxy._flowing.wait()
                if (
                    upstream
                    and impairment.reset_after_bytes is not None
                    and carried + len(data) > impairment.reset_after_bytes
                    and proxy.stats.resets < impairment.resets_mid_stream
                ):
                    proxy.stats.resets += 1
                    _reset(writer)  # the destination's side
                    _reset(peer)  # and the sender's
                    return
                writer.write(data)
                await writer.drain()
                if upstream:
                    carried += len(data)
                    proxy.stats.bytes_up += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            await asyncio.gather(reading, return_exceptions=True)
            if not upstream:
                await asyncio.sleep(impairment.hold_close_seconds)
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        proxy.stats.connections += 1
        if impairment.reset_on_connect:
            proxy.stats.resets += 1
            _reset(writer)
            return
        if impairment.zero_window:
            conns.append(writer)
            transport = writer.transport
            assert isinstance(transport, asyncio.ReadTransport)
            transport.pause_reading()  # never read: the window closes and stays closed
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*target)
        except OSError:
            writer.close()
            return
        conns.extend((writer, up_writer))
        spawn(pipe(reader, up_writer, True, writer))
        spawn(pipe(up_reader, writer, False, None))

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if impairment.zero_window:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # inherited: a small window that fills fast
    sock.bind(listen)
    server = await asyncio.start_server(handle, sock=sock)
    proxy.port = int(sock.getsockname()[1])
    try:
        yield proxy
    finally:
        server.close()
        for t in list(tasks):
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for w in conns:
            w.transport.abort()


@dataclass
class UdpImpairment:
    delay_seconds: float = 0.0
    loss: float = 0.0
    """Probability that a datagram is dropped, each direction."""
    reorder: float = 0.0
    """Probability that a datagram is held back and sent after the next one."""
    seed: int = 13
    max_queued: int = MAX_QUEUED_DEFAULT


@dataclass
class UdpStats:
    forwarded: int = 0
    dropped: int = 0
    reordered: int = 0


class _Datagrams(asyncio.DatagramProtocol):
    """Hands every datagram to a function; the transport is the one create_datagram_endpoint returns."""

    def __init__(self, on_datagram: Callable[[bytes, Address], None]) -> None:
        self.on_datagram = on_datagram

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self.on_datagram(data, addr)


@dataclass
class UdpProxy:
    impairment: UdpImpairment
    stats: UdpStats = field(default_factory=UdpStats)
    port: int = 0


@contextlib.asynccontextmanager
async def udp_impair(listen: Address, target: Address, impairment: UdpImpairment) -> AsyncIterator[UdpProxy]:
    """One client at a time (the last address heard from): an SRT caller and its listener."""
    loop = asyncio.get_running_loop()
    rng = random.Random(impairment.seed)
    proxy = UdpProxy(impairment)
    client: list[Address] = []
    held: dict[bool, tuple[bytes, asyncio.DatagramTransport, Address | None] | None] = {True: None, False: None}
    queued = {True: 0, False: 0}

    def send(transport: asyncio.DatagramTransport, data: bytes, addr: Address | None, upstream: bool) -> None:
        queued[upstream] -= 1
        proxy.stats.forwarded += 1
        with contextlib.suppress(OSError):
            transport.sendto(data, addr)

    def impair(data: bytes, transport: asyncio.DatagramTransport, addr: Address | None, upstream: bool) -> None:
        if rng.random() < impairment.loss or queued[upstream] >= impairment.max_queued:
            proxy.stats.dropped += 1
            return
        out = [(data, transport, addr)]
        if held[upstream] is None and rng.random() < impairment.reorder:
            held[upstream] = (data, transport, addr)
            proxy.stats.reordered += 1
            return
        if (late := held[upstream]) is not None:
            held[upstream] = None
            out.append(late)  # after this one: swapped
        for d, t, a in out:
            queued[upstream] += 1
            loop.call_later(impairment.delay_seconds, send, t, d, a, upstream)

    ends: dict[str, asyncio.DatagramTransport] = {}

    def from_client(data: bytes, addr: Address) -> None:
        if not client or client[-1] != addr:
            client[:] = [addr]
        impair(data, ends["back"], None, True)

    def from_target(data: bytes, _addr: Address) -> None:
        if client:
            impair(data, ends["front"], client[-1], False)

    ends["front"], _ = await loop.create_datagram_endpoint(lambda: _Datagrams(from_client), local_addr=listen)
    ends["back"], _ = await loop.create_datagram_endpoint(lambda: _Datagrams(from_target), remote_addr=target)
    front_transport, back_transport = ends["front"], ends["back"]
    proxy.port = int(front_transport.get_extra_info("sockname")[1])
    try:
        yield proxy
    finally:
        front_transport.close()
        back_transport.close()
