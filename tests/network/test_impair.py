"""The impairing proxy on loopback: what it does to datagrams and bytes is what the network tests rely on
(no process is started: these run in the fast loop too)."""

from __future__ import annotations

import asyncio
import socket
import time

from tests.support.impair import TcpImpairment, UdpImpairment, tcp_impair, udp_impair


async def _udp_round(impairment: UdpImpairment, count: int) -> tuple[list[bytes], float]:
    loop = asyncio.get_running_loop()
    got: list[bytes] = []
    arrived = asyncio.Event()

    class Sink(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            got.append(data)
            arrived.set()

    sink, _ = await loop.create_datagram_endpoint(Sink, local_addr=("127.0.0.1", 0))
    try:
        async with udp_impair(("127.0.0.1", 0), sink.get_extra_info("sockname"), impairment) as proxy:
            sender, _ = await loop.create_datagram_endpoint(
                asyncio.DatagramProtocol, remote_addr=("127.0.0.1", proxy.port)
            )
            start = time.monotonic()
            for i in range(count):
                sender.sendto(i.to_bytes(4, "big"))
                if i % 50 == 49:
                    await asyncio.sleep(0.01)  # paced: no socket buffer may drop what the proxy did not
            await asyncio.wait_for(arrived.wait(), 5)
            first = time.monotonic() - start
            await asyncio.sleep(impairment.delay_seconds + 0.3)
            sender.close()
    finally:
        sink.close()
    return got, first


async def test_udp_loss_is_seeded_and_delay_is_applied() -> None:
    impairment = UdpImpairment(delay_seconds=0.1, loss=0.2, seed=3)
    got, first = await _udp_round(impairment, 500)
    again, _ = await _udp_round(impairment, 500)
    assert 300 < len(got) < 480, len(got)
    assert got == again, "the same seed must lose the same datagrams"
    assert first >= 0.09


async def test_udp_reordering_swaps_neighbours() -> None:
    got, _ = await _udp_round(UdpImpairment(reorder=0.2, seed=1), 200)
    numbers = [int.from_bytes(d, "big") for d in got]
    assert sorted(numbers) == list(range(200)) and numbers != sorted(numbers)


async def test_tcp_delay_reset_on_connect_and_zero_window() -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    target = server.sockets[0].getsockname()[:2]
    async with server:
        async with tcp_impair(("127.0.0.1", 0), target, TcpImpairment(delay_seconds=0.15)) as slow:
            reader, writer = await asyncio.open_connection("127.0.0.1", slow.port)
            start = time.monotonic()
            writer.write(b"ping")
            assert await asyncio.wait_for(reader.read(100), 5) == b"ping"
            assert time.monotonic() - start >= 0.29  # 150 ms each way
            writer.close()
        async with tcp_impair(("127.0.0.1", 0), target, TcpImpairment(reset_on_connect=True)) as rst:
            reader, writer = await asyncio.open_connection("127.0.0.1", rst.port)
            try:
                await asyncio.wait_for(reader.read(100), 5)
                reset = False
            except ConnectionResetError:
                reset = True
            assert reset and rst.stats.resets == 1
            writer.close()
        async with tcp_impair(("127.0.0.1", 0), target, TcpImpairment(zero_window=True)) as deaf:
            sock = socket.create_connection(("127.0.0.1", deaf.port))
            sock.setblocking(False)
            sent = 0
            try:
                for _ in range(10_000):
                    sent += sock.send(b"x" * 65536)
            except BlockingIOError:
                pass
            finally:
                sock.close()
            assert sent < 16 << 20, f"{sent} bytes went into a destination that never reads"
