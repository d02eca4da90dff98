"""The sock_diag reader on real TCP connections over loopback: what the kernel says of a socket through
netlink is what the socket itself says (getsockopt TCP_INFO), and a peer that stops reading shows as
acknowledgements that stop while the unacknowledged bytes grow. No mocks: real sockets, this kernel."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
import threading
import time
from collections.abc import Collection, Iterator

import pytest

from relay.push.tcp_diag import (
    NLMSG_DONE,
    NLMSG_ERROR,
    RESCAN_SECONDS,
    RETRY_UNFOUND_SECONDS,
    DiagEntry,
    DiagError,
    SockDiagProbe,
    TcpSample,
    decode_tcp_info,
    dump_request,
    dump_tcp,
    parse_entries,
    socket_inodes,
)

CHUNK = b"\x00" * 65_536


@pytest.fixture
def connection() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(sender, receiver): a real TCP connection over loopback, the sender non-blocking."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
    sender.setblocking(False)
    try:
        yield sender, receiver
    finally:
        sender.close()
        receiver.close()


def inode(sock: socket.socket) -> int:
    return os.fstat(sock.fileno()).st_ino


def send_some(sock: socket.socket, limit_bytes: int) -> int:
    """Write until `limit_bytes` or until the socket would block; what was written."""
    sent = 0
    while sent < limit_bytes:
        try:
            sent += sock.send(CHUNK[: min(len(CHUNK), limit_bytes - sent)])
        except BlockingIOError:
            break
    return sent


def drain(sock: socket.socket, count: int) -> None:
    got = 0
    while got < count:
        data = sock.recv(1 << 20)
        assert data
        got += len(data)


def only(samples: list[TcpSample]) -> TcpSample:
    assert len(samples) == 1, samples
    return samples[0]


def test_the_dump_says_what_the_socket_says(connection: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = connection
    sent = send_some(sender, 300_000)
    drain(receiver, sent)
    time.sleep(0.05)  # the last acknowledgement crosses loopback
    diag = only(dump_tcp({inode(sender)}))
    own = decode_tcp_info(inode(sender), 1, 0, sender.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 512))
    assert own is not None
    assert diag.inode == inode(sender) and diag.state == 1
    assert diag.bytes_acked == own.bytes_acked and diag.bytes_sent == own.bytes_sent
    assert diag.bytes_acked - 1 == sent  # the SYN counts as one acknowledged byte
    assert diag.retransmits == own.retransmits and diag.unacked_bytes == 0
    assert 0 < diag.rtt_us < 1_000_000
    assert diag.send_window_bytes is None or diag.send_window_bytes > 0


def test_a_peer_that_stops_reading_stops_the_acknowledgements(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = connection
    receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65_536)
    written = send_some(sender, 16 << 20)  # until both buffers are full: the peer reads nothing
    time.sleep(0.3)
    first = only(dump_tcp({inode(sender)}))
    written += send_some(sender, 16 << 20)
    time.sleep(0.3)
    second = only(dump_tcp({inode(sender)}))
    assert second.bytes_acked == first.bytes_acked, "acknowledgements went on while nobody read"
    assert second.unacked_bytes == written - (second.bytes_acked - 1) > 0
    assert second.send_window_bytes in (None, 0)
    # It reads again: acknowledgements move, the backlog shrinks.
    drain(receiver, 1 << 20)
    time.sleep(0.1)
    third = only(dump_tcp({inode(sender)}))
    assert third.bytes_acked > second.bytes_acked and third.unacked_bytes < second.unacked_bytes


def test_the_probe_finds_a_process_connection_by_its_pid(connection: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = connection
    drain(receiver, send_some(sender, 100_000))
    assert inode(sender) in socket_inodes(os.getpid())
    found = SockDiagProbe().sample_now([os.getpid()])
    # This process holds both ends (and maybe more): the one that carried the most is the sender.
    assert found[os.getpid()].inode == inode(sender)


def test_a_process_without_connections_or_gone_is_absent() -> None:
    assert socket_inodes(2**22 + 12345) == set()
    assert SockDiagProbe().sample_now([2**22 + 12345]) == {}
    assert dump_tcp(set()) == []


def ipv6_server() -> socket.socket:
    """A listener on ::1, or the test skipped saying why."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        return socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")


def test_ipv6_connections_are_found() -> None:
    server = ipv6_server()
    with server, socket.create_connection(server.getsockname()[:2]) as sender:
        receiver, _ = server.accept()
        with receiver:
            sender.sendall(b"x" * 1000)
            drain(receiver, 1000)
            time.sleep(0.05)
            assert only(dump_tcp({inode(sender)})).bytes_acked == 1001


def test_parse_is_bounded_by_what_it_was_given() -> None:
    # A dump answer cut short, an unknown message and the end: nothing invented, the end seen.
    header = struct.Struct("=IHHII")
    done = header.pack(header.size + 4, NLMSG_DONE, 0, 1, 0) + b"\x00" * 4
    assert parse_entries(done, {1}) == ([], True)
    assert parse_entries(done[:10], {1}) == ([], False)
    other = header.pack(header.size + 8, 0x99, 0, 1, 0) + b"\x00" * 8
    assert parse_entries(other + done, {1}) == ([], True)
    error = header.pack(header.size + 4, NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -22)
    with pytest.raises(DiagError, match="Invalid argument"):
        parse_entries(error, {1})


def test_the_request_is_a_tcp_dump_with_tcp_info() -> None:
    request = dump_request(socket.AF_INET, 7)
    length, kind, flags, sequence, _ = struct.unpack_from("=IHHII", request)
    assert (length, kind, sequence) == (len(request), 20, 7) and flags & 0x300 == 0x300
    family, protocol, ext = struct.unpack_from("=BBB", request, 16)
    assert (family, protocol, ext) == (socket.AF_INET, socket.IPPROTO_TCP, 0x2)


async def test_a_dump_runs_off_the_event_loop_and_a_lookup_on_it(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A dump may take milliseconds of kernel time (a worker thread's); a lookup of a socket already found is
    answered at once, cheaper than a thread's round trip (on the loop)."""
    sender, receiver = connection
    threads: list[threading.Thread] = []

    class Recording(SockDiagProbe):
        def _entries(self, held: Collection[int]) -> list[DiagEntry]:
            threads.append(threading.current_thread())
            return super()._entries(held)

    probe = Recording(Clock())
    drain(receiver, send_some(sender, 10_000))
    first = (await probe.sample([os.getpid()]))[os.getpid()]
    drain(receiver, send_some(sender, 10_000))
    await asyncio.sleep(0.02)
    second = (await probe.sample([os.getpid()]))[os.getpid()]
    assert first.inode == second.inode == inode(sender) and second.bytes_acked > first.bytes_acked
    assert probe.dumps == 1
    assert threads[0] is not threading.main_thread() and threads[1] is threading.main_thread()


def acked(sock: socket.socket) -> int:
    """tcpi_bytes_acked as the socket itself says it."""
    return int.from_bytes(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)[120:128], "little")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_the_probe_dumps_once_per_socket_then_asks_for_it_alone(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """A dump walks the kernel's whole established table (milliseconds of kernel time, whatever the number
    of sockets); a lookup by the socket's identity does not. A push's socket costs one dump in its life."""
    sender, receiver = connection
    probe = SockDiagProbe(Clock())
    drain(receiver, send_some(sender, 50_000))
    first = probe.sample_now([os.getpid()])[os.getpid()]
    dumps = probe.dumps
    assert dumps == 1 and first.inode == inode(sender)
    for _ in range(3):
        drain(receiver, send_some(sender, 70_000))
        time.sleep(0.02)
        later = probe.sample_now([os.getpid()])[os.getpid()]
        assert later.inode == inode(sender) and later.bytes_acked == acked(sender)
    assert later.bytes_acked > first.bytes_acked
    assert probe.dumps == dumps, "asked for alone, not dumped again"


def test_a_closed_socket_is_forgotten_and_a_new_one_found() -> None:
    """The tick that finds the connection closed (its lookup) has nothing to say of it; at the latest the next
    one reads the process's descriptors again and finds the new connection."""
    probe = SockDiagProbe(Clock())
    with socket.create_server(("127.0.0.1", 0)) as server:
        for round_ in range(2):
            with socket.create_connection(server.getsockname()) as sender:
                receiver, _ = server.accept()
                with receiver:
                    sender.sendall(b"x" * 5000)
                    drain(receiver, 5000)
                    time.sleep(0.02)
                    found = probe.sample_now([os.getpid()]).get(os.getpid())
                    if round_ and (found is None or found.inode != inode(sender)):
                        found = probe.sample_now([os.getpid()])[os.getpid()]
                    assert found is not None
                    assert found.inode == inode(sender) and found.bytes_acked == acked(sender)
    assert probe.dumps == 2


def test_the_descriptors_of_a_process_with_a_known_connection_are_read_again_only_after_a_while(
    connection: tuple[socket.socket, socket.socket],
) -> None:
    """`/proc/<pid>/fd` costs a listing and a readlink per descriptor: twice a second for every push, it was
    most of the probe's cost at 16 pushes. While the connection found answers its lookups, it is not read."""
    sender, receiver = connection
    clock = Clock()
    probe = SockDiagProbe(clock)
    drain(receiver, send_some(sender, 20_000))
    assert probe.sample_now([os.getpid()])[os.getpid()].inode == inode(sender)
    assert probe.scans == 1
    for _ in range(3):
        clock.now += RESCAN_SECONDS / 4
        drain(receiver, send_some(sender, 20_000))
        time.sleep(0.02)
        assert probe.sample_now([os.getpid()])[os.getpid()].bytes_acked == acked(sender)
    assert probe.scans == 1
    clock.now += RESCAN_SECONDS
    assert probe.sample_now([os.getpid()])[os.getpid()].inode == inode(sender)
    assert probe.scans == 2 and probe.dumps == 1


def test_a_process_without_a_known_connection_is_read_at_every_tick() -> None:
    """Not started yet, still connecting, or not TCP: its descriptors are read again at each tick (its
    connection may be there by the next)."""
    probe = SockDiagProbe(Clock())
    gone = 2**22 + 12345  # past pid_max: holds nothing
    for ticks in range(1, 4):
        assert probe.sample_now([gone]) == {}
        assert probe.scans == ticks


def test_a_socket_no_dump_finds_is_looked_for_again_only_after_a_while() -> None:
    """A push's socket that is not TCP, or not connected yet: not one dump per tick for it."""
    clock = Clock()
    probe = SockDiagProbe(clock)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.bind(("127.0.0.1", 0))
        held = {inode(udp)}
        probe.sample_now([os.getpid()])
        dumps = probe.dumps
        assert dumps >= 1 and held <= socket_inodes(os.getpid())
        clock.now += RETRY_UNFOUND_SECONDS / 2
        probe.sample_now([os.getpid()])
        assert probe.dumps == dumps
        clock.now += RETRY_UNFOUND_SECONDS
        probe.sample_now([os.getpid()])
        assert probe.dumps == dumps + 1


def test_an_ipv6_socket_is_asked_for_alone_too() -> None:
    server = ipv6_server()
    probe = SockDiagProbe(Clock())
    with server, socket.create_connection(server.getsockname()[:2]) as sender:
        receiver, _ = server.accept()
        with receiver:
            for size in (1000, 3000):
                sender.sendall(b"x" * size)
                drain(receiver, size)
                time.sleep(0.05)
                assert probe.sample_now([os.getpid()])[os.getpid()].bytes_acked == acked(sender)
    assert probe.dumps == 1


def test_a_process_whose_connection_closes_beside_another_is_read_again_without_a_dump() -> None:
    """A process with two connections found, one of which closes: the tick after its lookup found it closed
    reads the process's descriptors again, so the closed socket is not taken for a new one (a dump in the
    worker thread) while the other connection keeps the process's last read cached."""
    clock = Clock()
    probe = SockDiagProbe(clock)
    with socket.create_server(("127.0.0.1", 0)) as server:
        first = socket.create_connection(server.getsockname())
        first_peer, _ = server.accept()
        second = socket.create_connection(server.getsockname())
        second_peer, _ = server.accept()
        with first, first_peer, second, second_peer:  # closing one already closed does nothing
            for sender, receiver in ((first, first_peer), (second, second_peer)):
                sender.sendall(b"x" * 5000)
                drain(receiver, 5000)
            time.sleep(0.02)
            assert os.getpid() in probe.sample_now([os.getpid()])
            scans, dumps = probe.scans, probe.dumps
            first.close()
            first_peer.close()
            clock.now += 0.5
            found = probe.sample_now([os.getpid()])[os.getpid()]  # the lookup finds the first one closed
            assert found.inode == inode(second)
            assert probe.scans == scans
            clock.now += 0.5
            found = probe.sample_now([os.getpid()])[os.getpid()]
            assert found.inode == inode(second) and found.bytes_acked == acked(second)
            assert probe.scans == scans + 1, "read again after the close"
            assert probe.dumps == dumps, "the closed socket was not looked for by a dump"
