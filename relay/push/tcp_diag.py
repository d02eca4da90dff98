"""What the kernel knows of a push's TCP connection: `struct tcp_info` through sock_diag (NETLINK_SOCK_DIAG).

ffmpeg's `-progress` says what ffmpeg wrote into its socket, not what the destination received: behind a
slow link the kernel's send buffer takes seconds of media, and a dead link shows nothing until ffmpeg's
write timeout. The kernel's view is the truth: `bytes_acked` (what the peer acknowledged), the bytes
still unacknowledged (`idiag_wqueue`, `ss`'s Send-Q), RTT and retransmissions.

How: one netlink dump per address family (`inet_diag_req_v2`, TCP, established and closing states, with
`INET_DIAG_INFO`) answers for every TCP socket of this network namespace; only the entries whose inode
is one of the pushes' sockets (`/proc/<pid>/fd` -> `socket:[inode]`) are decoded. So a sampling tick
costs two dumps whatever the number of pushes. pyroute2 can make the same request, but decodes every
socket of the host into dictionaries and cannot filter by inode in the kernel; this reader skips the
others after reading 72 bytes of their header. Unprivileged: the kernel answers any user for TCP.

The message layouts (linux/inet_diag.h, linux/tcp.h) are stable ABI; fields a kernel does not have (an
older, shorter `tcp_info`) are None. `tests/push/test_tcp_diag.py` checks the decoding against the
same socket's `getsockopt(TCP_INFO)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_V2 = struct.Struct("=BBBxI48x")
"""inet_diag_req_v2: family, protocol, ext, pad, states, then a zeroed inet_diag_sockid (48 bytes)."""
_MSG_HEAD = struct.Struct("=BBBB48xIIIII")
"""inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid, inode (72 bytes)."""
_RTATTR = struct.Struct("=HH")

_TCP_ESTABLISHED = 1
_DUMPED_STATES = (
    (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11)
)  # ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING: a socket that may still send
_RECV_BYTES = 1 << 17


@dataclass(frozen=True, slots=True)
class TcpSample:
    """One TCP socket as the kernel saw it at one moment."""

    inode: int
    state: int
    """TCP state (1: established)."""
    bytes_acked: int
    """Bytes of ours the peer acknowledged (tcpi_bytes_acked): what the destination really received."""
    bytes_sent: int | None
    """Bytes sent, retransmissions included (tcpi_bytes_sent; None before Linux 4.19)."""
    unacked_bytes: int
    """Bytes written by ffmpeg and not yet acknowledged, in flight or not yet sent (`ss` Send-Q)."""
    notsent_bytes: int
    """Of those, the bytes not yet sent at all (tcpi_notsent_bytes)."""
    rtt_us: int
    """Smoothed round-trip time (tcpi_rtt)."""
    retransmits: int
    """Segments retransmitted over the connection's life (tcpi_total_retrans)."""
    send_window_bytes: int | None
    """The peer's advertised receive window (tcpi_snd_wnd; None before Linux 5.19): 0 when it stops reading."""


def decode_tcp_info(inode: int, state: int, unacked_bytes: int, info: bytes) -> TcpSample | None:
    """A sample from the raw `struct tcp_info` (None if too short to hold bytes_acked)."""

    def u32(offset: int) -> int | None:
        return int.from_bytes(info[offset : offset + 4], "little") if len(info) >= offset + 4 else None

    def u64(offset: int) -> int | None:
        return int.from_bytes(info[offset : offset + 8], "little") if len(info) >= offset + 8 else None

    bytes_acked = u64(120)
    if bytes_acked is None:
        return None
    return TcpSample(
        inode=inode,
        state=state,
        bytes_acked=bytes_acked,
        bytes_sent=u64(200),
        unacked_bytes=unacked_bytes,
        notsent_bytes=u32(144) or 0,
        rtt_us=u32(68) or 0,
        retransmits=u32(100) or 0,
        send_window_bytes=u32(228),
    )


def dump_request(family: int, sequence: int) -> bytes:
    """The netlink message asking for every TCP socket of `family` that may still send, with tcp_info."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), _DUMPED_STATES)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, sequence, 0) + body


class DiagError(OSError):
    """The kernel answered the dump with an error."""


def parse_dump(data: bytes, inodes: Collection[int]) -> tuple[list[TcpSample], bool]:
    """The samples of the sockets in `inodes` found in one read of a dump's answer, and whether the
    dump is complete (NLMSG_DONE seen). Raises DiagError when the kernel refused the request."""
    samples: list[TcpSample] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        payload = data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3
        if kind == NLMSG_DONE:
            return samples, True
        if kind == NLMSG_ERROR:
            errno = -int.from_bytes(payload[:4], "little", signed=True) if len(payload) >= 4 else 0
            raise DiagError(errno, f"sock_diag: {os.strerror(errno)}")
        if kind != SOCK_DIAG_BY_FAMILY or len(payload) < _MSG_HEAD.size:
            continue
        _family, state, _timer, _retrans, _expires, _rqueue, wqueue, _uid, inode = _MSG_HEAD.unpack_from(payload)
        if inode not in inodes:
            continue
        info = _attribute(payload[_MSG_HEAD.size :], INET_DIAG_INFO)
        if info is not None and (sample := decode_tcp_info(inode, state, wqueue, info)) is not None:
            samples.append(sample)
    return samples, False


def _attribute(data: bytes, wanted: int) -> bytes | None:
    offset = 0
    while offset + _RTATTR.size <= len(data):
        length, kind = _RTATTR.unpack_from(data, offset)
        if length < _RTATTR.size:
            return None
        if kind == wanted:
            return data[offset + _RTATTR.size : offset + length]
        offset += (length + 3) & ~3
    return None


def socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` holds (empty if it is gone or not ours to read)."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        for name in os.listdir(fd_dir):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{fd_dir}/{name}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def dump_tcp(inodes: Collection[int], families: Iterable[int] = (socket.AF_INET, socket.AF_INET6)) -> list[TcpSample]:
    """The TCP sockets among `inodes`, one dump per family (blocking; a dump of a few thousand sockets
    takes about a millisecond)."""
    if not inodes:
        return []
    samples: list[TcpSample] = []
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as sock:
        for sequence, family in enumerate(families, start=1):
            sock.send(dump_request(family, sequence))
            samples.extend(_answers(sock, inodes))
    return samples


def _answers(sock: socket.socket, inodes: Collection[int]) -> Iterator[TcpSample]:
    while True:
        found, done = parse_dump(sock.recv(_RECV_BYTES), inodes)
        yield from found
        if done:
            return


class SockDiagProbe:
    """The production `TransportProbe` of the supervisor: each push's TCP socket by its ffmpeg's pid.

    `sample` runs in a worker thread: with 4000 TCP sockets on the host a dump takes about 10 ms
    (measured, none of them wanted), which the event loop of the media path should not wait for."""

    async def sample(self, pids: Collection[int]) -> dict[int, TcpSample]:
        return await asyncio.to_thread(self.sample_now, pids)

    def sample_now(self, pids: Collection[int]) -> dict[int, TcpSample]:
        """pid -> its TCP connection (of several, the one that carried the most); a pid without one (SRT,
        still connecting, gone) is absent."""
        owners: dict[int, int] = {}
        for pid in pids:
            for inode in socket_inodes(pid):
                owners[inode] = pid
        found: dict[int, TcpSample] = {}
        for sample in dump_tcp(owners.keys()):
            pid = owners[sample.inode]
            if pid not in found or sample.bytes_acked > found[pid].bytes_acked:
                found[pid] = sample
        return found
