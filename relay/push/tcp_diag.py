"""What the kernel knows of a push's TCP connection: `struct tcp_info` through sock_diag (NETLINK_SOCK_DIAG).

ffmpeg's `-progress` says what ffmpeg wrote into its socket, not what the destination received: behind a
slow link the kernel's send buffer takes seconds of media, and a dead link shows nothing until ffmpeg's
write timeout. The kernel's view is the truth: `bytes_acked` (what the peer acknowledged), the bytes
still unacknowledged (`idiag_wqueue`, `ss`'s Send-Q), RTT and retransmissions.

How: the kernel answers a lookup of one socket by its identity (addresses, ports and cookie:
`inet_diag_req_v2` without NLM_F_DUMP) from its hash table at once; a dump (`NLM_F_DUMP`) walks every
bucket of the established table, ~262,000 on this 24 GiB machine, and costs ~2.2 ms of kernel time per
address family whatever the number of sockets. So a push's socket is found once by a dump (TCP, the states
that may still send and SYN_SENT, with `INET_DIAG_INFO`; only entries whose inode is one of the pushes'
sockets, `/proc/<pid>/fd` -> `socket:[inode]`, are decoded), its identity kept, and from then on each
sampling tick asks for it alone. A dump runs only when a push holds a socket not seen yet (a push's start
or reconnection); one that no dump finds (not TCP, or not connected yet) is looked for again after
`RETRY_UNFOUND_SECONDS`. Which sockets a push holds is read from `/proc/<pid>/fd` (a directory listing and a
`readlink` per descriptor, ~70 µs a push: at 16 pushes, twice a second, 0.13 CPU s/min of the relay) only
while none of them is a connection found, and otherwise every `RESCAN_SECONDS`: a push's ffmpeg keeps its
one connection for its life, and one that closes is noticed by its lookup, the tick after which reads that
process's descriptors again. pyroute2 can make the same requests, but decodes every socket of the host into
dictionaries; this reader skips the others after reading 72 bytes of their header. Unprivileged: the
kernel answers any user for TCP.

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
import threading
import time
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300
NLMSG_ERROR = 2
NLMSG_DONE = 3
INET_DIAG_INFO = 2

_NLMSGHDR = struct.Struct("=IHHII")
_REQ_V2 = struct.Struct("=BBBxI")
"""inet_diag_req_v2: family, protocol, ext, pad, states; then an inet_diag_sockid (48 bytes: zeroed for a
dump, the socket's own for a lookup)."""
_SOCKID_BYTES = 48
_MSG_HEAD = struct.Struct("=BBBB48xIIIII")
"""inet_diag_msg: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid, inode (72 bytes)."""
_SOCKID = slice(4, 4 + _SOCKID_BYTES)
"""inet_diag_msg's inet_diag_sockid: ports, addresses, interface and the socket's cookie."""
_RTATTR = struct.Struct("=HH")

_TCP_ESTABLISHED = 1
_DUMPED_STATES = (
    (1 << 1) | (1 << 4) | (1 << 5) | (1 << 8) | (1 << 9) | (1 << 11)
)  # ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT, LAST_ACK, CLOSING: a socket that may still send
_LEARNED_STATES = _DUMPED_STATES | (1 << 2)  # and SYN_SENT: a push still connecting is learned once
RETRY_UNFOUND_SECONDS = 5.0
"""A socket of a push that no dump found is looked for again after this long."""
RESCAN_SECONDS = 5.0
"""How often a push's descriptors are read again while a connection of its is known (and answering)."""
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


def dump_request(family: int, sequence: int, states: int = _DUMPED_STATES) -> bytes:
    """The netlink message asking for every TCP socket of `family` in `states` (by default those that may
    still send), with tcp_info."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), states) + bytes(_SOCKID_BYTES)
    flags = NLM_F_REQUEST | NLM_F_DUMP
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, flags, sequence, 0) + body


def lookup_request(family: int, sockid: bytes, sequence: int) -> bytes:
    """The netlink message asking for the one TCP socket `sockid` names (as a dump gave it, cookie
    included: a new socket on the same addresses and ports is not it), with tcp_info."""
    body = _REQ_V2.pack(family, socket.IPPROTO_TCP, 1 << (INET_DIAG_INFO - 1), 0xFFFFFFFF) + sockid
    return _NLMSGHDR.pack(_NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST, sequence, 0) + body


class DiagError(OSError):
    """The kernel answered the dump with an error."""


@dataclass(frozen=True, slots=True)
class DiagEntry:
    """One socket of a sock_diag answer."""

    family: int
    state: int
    sockid: bytes
    """Its identity (inet_diag_sockid), to ask for it alone later (`lookup_request`)."""
    inode: int
    unacked_bytes: int
    info: bytes | None
    """Its raw `struct tcp_info` (absent for a socket in TIME_WAIT)."""

    def sample(self) -> TcpSample | None:
        """The sample, for a socket that may still send."""
        if self.info is None or not (1 << self.state) & _DUMPED_STATES:
            return None
        return decode_tcp_info(self.inode, self.state, self.unacked_bytes, self.info)


def parse_entries(data: bytes, inodes: Collection[int]) -> tuple[list[DiagEntry], bool]:
    """The entries of the sockets in `inodes` found in one read of a dump's answer, and whether the dump
    is complete (NLMSG_DONE seen); the answer to a lookup is one entry, without NLMSG_DONE. Raises
    DiagError when the kernel refused the request."""
    entries: list[DiagEntry] = []
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            break
        payload = data[offset + _NLMSGHDR.size : offset + length]
        offset += (length + 3) & ~3
        if kind == NLMSG_DONE:
            return entries, True
        if kind == NLMSG_ERROR:
            errno = -int.from_bytes(payload[:4], "little", signed=True) if len(payload) >= 4 else 0
            raise DiagError(errno, f"sock_diag: {os.strerror(errno)}")
        if kind != SOCK_DIAG_BY_FAMILY or len(payload) < _MSG_HEAD.size:
            continue
        family, state, _timer, _retrans, _expires, _rqueue, wqueue, _uid, inode = _MSG_HEAD.unpack_from(payload)
        if inode not in inodes:
            continue
        info = _attribute(payload[_MSG_HEAD.size :], INET_DIAG_INFO)
        entries.append(DiagEntry(family, state, bytes(payload[_SOCKID]), inode, wqueue, info))
    return entries, False


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


FAMILIES = (socket.AF_INET, socket.AF_INET6)


def diag_socket() -> socket.socket:
    return socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG)


def dump_tcp(inodes: Collection[int], families: Iterable[int] = FAMILIES) -> list[TcpSample]:
    """The TCP sockets among `inodes` that may still send, one dump per family (blocking; ~2 ms of kernel
    time per family here, for the walk of the established table: see above)."""
    if not inodes:
        return []
    with diag_socket() as sock:
        entries = dump_entries(sock, inodes, _DUMPED_STATES, families)
    return [sample for entry in entries if (sample := entry.sample()) is not None]


def dump_entries(sock: socket.socket, inodes: Collection[int], states: int, families: Iterable[int]) -> list[DiagEntry]:
    entries: list[DiagEntry] = []
    for sequence, family in enumerate(families, start=1):
        sock.send(dump_request(family, sequence, states))
        entries.extend(_answers(sock, inodes))
    return entries


def lookup(sock: socket.socket, family: int, sockid: bytes, inode: int) -> DiagEntry | None:
    """The socket `sockid` names, if it is still there and still `inode` (None: gone, or another)."""
    sock.send(lookup_request(family, sockid, 1))
    try:
        entries, _ = parse_entries(sock.recv(_RECV_BYTES), (inode,))
    except DiagError:  # ENOENT: closed; ESTALE: the cookie is another socket's
        return None
    return entries[0] if entries else None


def _answers(sock: socket.socket, inodes: Collection[int]) -> Iterator[DiagEntry]:
    while True:
        found, done = parse_entries(sock.recv(_RECV_BYTES), inodes)
        yield from found
        if done:
            return


class SockDiagProbe:
    """The production `TransportProbe` of the supervisor: each push's TCP socket by its ffmpeg's pid.

    Each socket is found by one dump and then asked for by its identity (module docstring). A `sample` that
    dumps runs in a worker thread: with 4000 TCP sockets on the host a dump takes about 10 ms (measured, none
    of them wanted), which the event loop of the media path should not wait for. One that only asks for
    sockets already found (every tick of a push that runs on) runs on the loop: a lookup is answered from
    the kernel's hash table at once, and the thread's round trip cost more than the work it carried."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._known: dict[int, tuple[int, bytes]] = {}
        """inode -> (family, sockid) of the pushes' sockets a dump found."""
        self._unfound: dict[int, float] = {}
        """inode -> when a dump last did not find it."""
        self._scans: dict[int, tuple[float, frozenset[int]]] = {}
        """pid -> (when, the socket inodes it held then), of the pids the last tick asked for."""
        self._closed: set[int] = set()
        """Inodes whose connection a lookup found closed since the last `_owners`: their process is read again."""
        self._lock = threading.Lock()
        self.scans = 0
        """Times it read a process's descriptors: for tests and diagnostics."""
        self.dumps = 0
        """Times it dumped (one dump per address family each time): for tests and diagnostics."""

    async def sample(self, pids: Collection[int]) -> dict[int, TcpSample]:
        owners = self._owners(pids)
        if self._must_dump(owners):
            return await asyncio.to_thread(self._sample_owners, owners)
        return self._sample_owners(owners)

    def sample_now(self, pids: Collection[int]) -> dict[int, TcpSample]:
        """pid -> its TCP connection (of several, the one that carried the most); a pid without one (SRT,
        still connecting, gone) is absent."""
        return self._sample_owners(self._owners(pids))

    def _owners(self, pids: Collection[int]) -> dict[int, int]:
        """inode -> pid of the sockets the processes `pids` hold: read again for a pid none of whose sockets is
        a known connection (new, still connecting, not TCP), one of whose connections closed, or every
        `RESCAN_SECONDS`; else as last read."""
        now = self._clock()
        with self._lock:
            known = set(self._known)
            closed, self._closed = self._closed, set()
        scans: dict[int, tuple[float, frozenset[int]]] = {}
        owners: dict[int, int] = {}
        for pid in pids:
            scan = self._scans.get(pid)
            if (
                scan is None
                or now - scan[0] >= RESCAN_SECONDS
                or scan[1].isdisjoint(known)
                or not scan[1].isdisjoint(closed)
            ):
                self.scans += 1
                scan = (now, frozenset(socket_inodes(pid)))
            scans[pid] = scan
            for inode in scan[1]:
                owners[inode] = pid
        self._scans = scans  # a pid no longer asked for is forgotten (a reused one is read afresh)
        return owners

    def _must_dump(self, held: Collection[int]) -> bool:
        """A socket in `held` is to be looked for by a dump (not found yet, or due to be looked for again)."""
        with self._lock:
            now = self._clock()
            return any(self._is_new(inode, now) for inode in held)

    def _is_new(self, inode: int, now: float) -> bool:
        if inode in self._known:
            return False
        unfound_at = self._unfound.get(inode)
        return unfound_at is None or now - unfound_at >= RETRY_UNFOUND_SECONDS

    def _sample_owners(self, owners: dict[int, int]) -> dict[int, TcpSample]:
        with self._lock:
            entries = self._entries(owners) if owners else []
        found: dict[int, TcpSample] = {}
        for entry in entries:
            pid = owners[entry.inode]
            sample = entry.sample()
            if sample is not None and (pid not in found or sample.bytes_acked > found[pid].bytes_acked):
                found[pid] = sample
        return found

    def _entries(self, held: Collection[int]) -> list[DiagEntry]:
        for table in (self._known, self._unfound):
            for inode in [inode for inode in table if inode not in held]:
                del table[inode]  # no push holds it any more
        now = self._clock()
        new = [inode for inode in held if self._is_new(inode, now)]
        entries: list[DiagEntry] = []
        with diag_socket() as sock:
            if new:
                self.dumps += 1
                entries = dump_entries(sock, new, _LEARNED_STATES, FAMILIES)
                for entry in entries:
                    self._known[entry.inode] = (entry.family, entry.sockid)
                    self._unfound.pop(entry.inode, None)
                for inode in set(new).difference(self._known):
                    self._unfound[inode] = now
            dumped = {entry.inode for entry in entries}
            for inode, (family, sockid) in list(self._known.items()):
                if inode in dumped:
                    continue
                current = lookup(sock, family, sockid, inode)
                if current is None:
                    # Closed: its process's descriptors are read again at the next tick (a process that holds
                    # another connection still known would otherwise keep it listed, and have it dumped for),
                    # and a dump looks for it again if the process still holds it.
                    del self._known[inode]
                    self._closed.add(inode)
                else:
                    entries.append(current)
        return entries
