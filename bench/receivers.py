"""Measuring receivers: every media packet that reaches a destination is stamped on arrival.

RTMP destinations are served by our own sans-I/O core (`relay.rtmp.session.ServerSession`) on one asyncio
loop: each destination has its own listening port so that one can be killed and restarted alone. SRT
destinations are `srt-live-transmit` listeners writing the raw received MPEG-TS to a pipe (no remuxing,
no probing); the bench parses the TS and stamps each video PES when the datagram holding its first TS packet
was read from the UDP socket (`_ArrivalTap`, in front of the listener), as an RTMP destination's bytes are
stamped when they are read from its TCP socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

from relay.media.packets import MediaKind
from relay.rtmp.errors import ProtocolError
from relay.rtmp.events import (
    NEED_DATA,
    CloseRequested,
    ConnectRequested,
    MediaReceived,
    PublishRequested,
)
from relay.rtmp.session import ServerSession
from tests.support.net import free_port, wait_listening
from tests.support.rtmp_sink import DESTINATION_SESSION

SRT_LIVE_TRANSMIT = "srt-live-transmit"


def digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One media packet as a destination received it."""

    t: float
    """time.monotonic() when the bytes completing it were read (RTMP), or when the datagram starting it
    arrived (TS over SRT)."""
    kind: MediaKind
    ts_ms: int
    """Media timestamp: the RTMP message timestamp, or the PES DTS in milliseconds."""
    digest: bytes
    """blake2b-128 of the FLV tag body (RTMP) or of the PES payload (TS)."""
    keyframe: bool
    config: bool
    size_bytes: int = 0
    """Length of the payload (the FLV tag body or the PES payload)."""


@dataclass
class Track:
    """Everything one destination received, across reconnections."""

    name: str
    arrivals: list[Arrival] = field(default_factory=list)
    publishes: list[float] = field(default_factory=list)
    """When each publish (RTMP) or connection (SRT) began."""
    listening_since: float = 0.0
    errors: list[str] = field(default_factory=list)

    def video(self, since: float = 0.0, until: float = float("inf")) -> Iterator[Arrival]:
        return (a for a in self.arrivals if a.kind is MediaKind.VIDEO and not a.config and since <= a.t < until)

    def first_video(self, since: float = 0.0, *, keyframe: bool = False) -> float | None:
        for a in self.video(since):
            if a.keyframe or not keyframe:
                return a.t
        return None

    def first_media(self, since: float = 0.0) -> float | None:
        return next((a.t for a in self.arrivals if a.t >= since and not a.config), None)


class _RtmpConnection(asyncio.Protocol):
    def __init__(self, receiver: RtmpReceiver) -> None:
        self._receiver = receiver
        self._session = ServerSession(DESTINATION_SESSION)
        self._transport: asyncio.Transport | None = None
        self._pending: list[tuple[float, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._receiver.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._receiver.connections.discard(self)

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def data_received(self, data: bytes) -> None:
        # Stamp and stash only: parsing waits for the next loop iteration, so that every socket that
        # became readable in the same select() is stamped before any of them is parsed.
        self._pending.append((time.monotonic(), data))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._parse)

    def _parse(self) -> None:
        pending, self._pending = self._pending, []
        track = self._receiver.track
        session = self._session
        try:
            for now, data in pending:
                session.receive_data(data)
                while (event := session.next_event()) is not NEED_DATA:
                    if isinstance(event, MediaReceived):
                        p = event.packet
                        track.arrivals.append(
                            Arrival(
                                now, p.kind, p.timestamp_ms, digest(p.payload), p.keyframe, p.config, len(p.payload)
                            )
                        )
                    elif isinstance(event, ConnectRequested):
                        session.accept_connect()
                    elif isinstance(event, PublishRequested):
                        session.accept_publish()
                        track.publishes.append(now)
                    elif isinstance(event, CloseRequested):
                        self.abort()
        except ProtocolError as exc:
            track.errors.append(str(exc))
            self.abort()
            return
        out = session.data_to_send()
        if out and self._transport is not None and not self._transport.is_closing():
            self._transport.write(out)


class RtmpReceiver:
    """An RTMP server on its own port, recording whatever is published to it into `track`."""

    def __init__(self, name: str, port: int) -> None:
        self.track = Track(name)
        self.port = port
        self.connections: set[_RtmpConnection] = set()
        self._server: asyncio.Server | None = None

    def url(self, app: str = "live") -> str:
        return f"rtmp://127.0.0.1:{self.port}/{app}/{self.track.name}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _RtmpConnection(self), "127.0.0.1", self.port, reuse_address=True
        )
        self.track.listening_since = time.monotonic()

    async def kill(self) -> None:
        """As if the destination server crashed: stop listening, reset every connection."""
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            conn.abort()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        self._server = None

    async def close(self) -> None:
        await self.kill()


# -- MPEG-TS ------------------------------------------------------------------------------------------


class TsParser:
    """Just enough MPEG-TS: PAT, PMT, and the video PES of the first H.264/HEVC stream, stamped by the
    arrival of their first TS packet; `on_pes(t, dts_ms, payload)` is called when a PES is complete.

    `arrival(packet)`, if given, says when that TS packet arrived (earlier than it was fed), or None."""

    def __init__(
        self,
        on_pes: Callable[[float, int, bytes], None],
        arrival: Callable[[bytes], float | None] | None = None,
    ) -> None:
        self._on_pes = on_pes
        self._arrival = arrival
        self._buffer = b""
        self._pmt_pid: int | None = None
        self._video_pid: int | None = None
        self._pes = bytearray()
        self._pes_t = 0.0

    def feed(self, t: float, data: bytes) -> None:
        buf = self._buffer + data
        pos = 0
        while len(buf) - pos >= 188:
            if buf[pos] != 0x47:
                sync = buf.find(b"\x47", pos + 1)
                if sync < 0:
                    pos = len(buf)
                    break
                pos = sync
                continue
            self._packet(t, buf[pos : pos + 188])
            pos += 188
        self._buffer = buf[pos:]

    def _packet(self, t: float, pkt: bytes) -> None:
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
        pusi = bool(pkt[1] & 0x40)
        afc = (pkt[3] >> 4) & 0x3
        off = 4
        if afc & 0x2:
            off += 1 + pkt[4]
        if not afc & 0x1 or off >= 188:
            return
        payload = pkt[off:]
        if pid == 0 and pusi:
            self._pat(payload)
        elif pid == self._pmt_pid and pusi:
            self._pmt(payload)
        elif pid == self._video_pid:
            if pusi:
                self.flush()
                arrived = None if self._arrival is None else self._arrival(pkt)
                self._pes_t = t if arrived is None else min(t, arrived)
            elif not self._pes:
                return
            self._pes += payload

    def flush(self) -> None:
        pes = bytes(self._pes)
        self._pes.clear()
        if len(pes) < 9 or pes[:3] != b"\x00\x00\x01":
            return
        flags, header_len = pes[7], pes[8]
        ts_ms = -1
        if flags & 0x80:
            field_at = 14 if flags & 0x40 else 9  # the DTS if present, else the PTS
            b = pes[field_at : field_at + 5]
            if len(b) == 5:
                ts90 = ((b[0] >> 1) & 0x07) << 30 | b[1] << 22 | (b[2] >> 1) << 15 | b[3] << 7 | b[4] >> 1
                ts_ms = ts90 // 90
        self._on_pes(self._pes_t, ts_ms, pes[9 + header_len :])

    @staticmethod
    def _section(payload: bytes) -> bytes:
        pointer = payload[0]
        return payload[1 + pointer :]

    def _pat(self, payload: bytes) -> None:
        sec = self._section(payload)
        if len(sec) < 8 or sec[0] != 0x00:
            return
        length = ((sec[1] & 0x0F) << 8) | sec[2]
        entries = sec[8 : 3 + length - 4]
        for i in range(0, len(entries) - 3, 4):
            program = (entries[i] << 8) | entries[i + 1]
            if program != 0:
                self._pmt_pid = ((entries[i + 2] & 0x1F) << 8) | entries[i + 3]
                return

    def _pmt(self, payload: bytes) -> None:
        sec = self._section(payload)
        if len(sec) < 12 or sec[0] != 0x02:
            return
        length = ((sec[1] & 0x0F) << 8) | sec[2]
        info_len = ((sec[10] & 0x0F) << 8) | sec[11]
        pos, end = 12 + info_len, 3 + length - 4
        while pos + 5 <= end:
            stream_type = sec[pos]
            pid = ((sec[pos + 1] & 0x1F) << 8) | sec[pos + 2]
            es_len = ((sec[pos + 3] & 0x0F) << 8) | sec[pos + 4]
            if stream_type in (0x1B, 0x24) and self._video_pid is None:
                self._video_pid = pid
            pos += 5 + es_len


def annexb_has_idr(es: bytes) -> bool:
    """An H.264 IDR slice (NAL type 5) among the first NAL units of an Annex B access unit."""
    pos = 0
    for _ in range(16):
        at = es.find(b"\x00\x00\x01", pos)
        if at < 0 or at + 3 >= len(es):
            return False
        if es[at + 3] & 0x1F == 5:
            return True
        pos = at + 3
    return False


def ts_video_packets(data: bytes) -> list[tuple[int, bytes]]:
    """(dts_ms, PES payload) of every video PES in a whole TS file."""
    out: list[tuple[int, bytes]] = []
    parser = TsParser(lambda _t, ts_ms, payload: out.append((ts_ms, payload)))
    parser.feed(0.0, data)
    parser.flush()
    return out


class _ArrivalTap(asyncio.DatagramProtocol):
    """A UDP relay in front of srt-live-transmit: callers send to it, it forwards every datagram both ways
    (one upstream socket per caller, so the listener sees each caller apart), and notes when each TS packet
    that starts a PES arrived, for `TsParser` to stamp the PES with.

    Why: srt-live-transmit with TSBPD off hands what it received to its output only when libsrt sends an
    ACK (a 10 ms timer), then through a 4 KiB stdio buffer. Measured with strace on the bench's 1080p30
    push: a frame's first TS packet reached stdout a median 16 ms (p90 20 ms) after libsrt received its
    datagram; without strace, from the relay's caller's pipe to stdout took a median 13.6-14.7 ms, to this
    tap under 3 ms (tests/bench/test_srt_receiver.py). The RTMP receivers stamp bytes when the loop reads
    them from the socket, and so does this tap. What the destination received is still read from
    srt-live-transmit's output.
    """

    KEEP_SECONDS = 10.0
    """Stamps nobody asked for (PAT, PMT, audio, or a PES the listener never delivered) are dropped then."""
    RECEIVE_BUFFER_BYTES = 8 << 20
    """The relay's first burst (the cached GOP, ~1 MB at 1080p) must not overflow the socket while the loop is
    busy: a lost datagram is retransmitted, but srt-live-transmit (TSBPD off, live messages not in order)
    writes out what came after it first, and the frame is corrupt (seen: 0.4-0.6 % of frames at default
    212 kB). The kernel caps it at net.core.rmem_max; `dropped()` tells if that was not enough."""

    def __init__(self, listener_port: int) -> None:
        self._listener = ("127.0.0.1", listener_port)
        self._transport: asyncio.DatagramTransport | None = None
        self._upstream: dict[tuple[str, int], socket.socket] = {}
        self._stamps: dict[bytes, float] = {}

    @classmethod
    async def open(cls, port: int, listener_port: int) -> _ArrivalTap:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, cls.RECEIVE_BUFFER_BYTES)
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            raise
        _, tap = await asyncio.get_running_loop().create_datagram_endpoint(lambda: cls(listener_port), sock=sock)
        return tap

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.DatagramTransport, transport)  # not a subclass of it on Python 3.11

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        now = time.monotonic()
        if len(data) > 16 and not data[0] & 0x80:  # an SRT data packet: 16-byte header, then whole TS packets
            for at in range(16, len(data) - 187, 188):
                if data[at] == 0x47 and data[at + 1] & 0x40:  # payload_unit_start_indicator
                    self._stamps.setdefault(data[at : at + 188], now)
            self._forget(now)
        upstream = self._upstream.get(addr)
        if upstream is None:
            upstream = self._upstream[addr] = self._connect(addr)
        with contextlib.suppress(OSError):  # a full or refused socket loses the datagram, as UDP may
            upstream.send(data)

    def _connect(self, caller: tuple[str, int]) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.connect(self._listener)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._reply, sock, caller)
        return sock

    def _reply(self, sock: socket.socket, caller: tuple[str, int]) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # the listener is gone (ICMP port unreachable): the caller hears nothing
                return
            if self._transport is not None:
                self._transport.sendto(data, caller)

    def _forget(self, now: float) -> None:
        stamps = self._stamps
        while stamps:
            first = next(iter(stamps))
            if now - stamps[first] < self.KEEP_SECONDS:
                return
            del stamps[first]

    def dropped(self) -> int:
        """Datagrams from callers the kernel dropped since the tap opened (its socket's `drops` in /proc/net/udp)."""
        if self._transport is None:
            return 0
        port = self._transport.get_extra_info("sockname")[1]
        with contextlib.suppress(OSError, ValueError, IndexError), open("/proc/net/udp") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                if fields[1] == f"0100007F:{port:04X}":
                    return int(fields[-1])
        return 0

    def arrival(self, packet: bytes) -> float | None:
        """When this TS packet first arrived (once: the stamp is taken), None if it did not come through here."""
        return self._stamps.pop(bytes(packet), None)

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._upstream.values():
            loop.remove_reader(sock.fileno())
            sock.close()
        self._upstream.clear()
        self._stamps.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None


class _PipeProtocol(asyncio.SubprocessProtocol):
    """srt-live-transmit's stdout (the received TS) and, with `-v`, its stderr (a line per accepted caller).

    srt-live-transmit writes that line with an unbuffered `cerr`, one write per piece, so one line can take
    two reads of the pipe: the end of each read is kept for the next. And the two pipes are read in whatever
    order the loop finds them ready, so a caller's first TS bytes could be read before its line; the line is
    written before the caller is read, so stderr is drained each time stdout is read.
    """

    ACCEPTED = b"Accepted SRT source connection"

    def __init__(self, receiver: SrtReceiver) -> None:
        self._receiver = receiver
        self.exited = asyncio.get_running_loop().create_future()
        self._transport: asyncio.SubprocessTransport | None = None
        self._started = False
        """The process's first connection has been counted (by its first line or its first bytes)."""
        self._first_line_pending = False
        """The first connection was counted by its bytes: its line, read later, is not another one."""
        self._stderr_tail = b""
        self._pending: list[tuple[float, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.SubprocessTransport)
        self._transport = transport

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        now = time.monotonic()
        if fd == 2:
            self._lines(now, data)
            return
        if fd != 1:
            return
        if self._receiver.track_connections:
            self._drain_stderr(now)
        if not self._started:
            # A new listener process: whatever it receives first is a new connection, even before its line.
            self._started = True
            self._first_line_pending = self._receiver.track_connections
            self._queue(now, b"")
        self._queue(now, data)

    def _lines(self, now: float, data: bytes) -> None:
        self._receiver.log = (self._receiver.log + data)[-self._receiver.LOG_BYTES :]
        text = self._stderr_tail + data
        # Keep the tail that could begin a line split across reads; it is too short to hold a whole one, so
        # no line is counted twice.
        self._stderr_tail = text[-(len(self.ACCEPTED) - 1) :]
        for _ in range(text.count(self.ACCEPTED)):
            if self._first_line_pending:
                self._first_line_pending = False
                continue
            self._started = True
            self._queue(now, b"")

    def _drain_stderr(self, now: float) -> None:
        pipe = None if self._transport is None else self._transport.get_pipe_transport(2)
        file = None if pipe is None else pipe.get_extra_info("pipe")
        if file is None:
            return
        while True:
            try:
                chunk = os.read(file.fileno(), 65536)
            except OSError:  # nothing more to read now (BlockingIOError), or the pipe is gone
                return
            if not chunk:
                return
            self._lines(now, chunk)

    def _queue(self, now: float, data: bytes) -> None:
        self._pending.append((now, data))
        if len(self._pending) == 1:
            asyncio.get_running_loop().call_soon(self._parse)

    def _parse(self) -> None:
        pending, self._pending = self._pending, []
        for now, data in pending:
            if data:
                self._receiver.parser.feed(now, data)
            else:  # a new connection: what the last one left unfinished is dropped
                self._receiver.parser = self._receiver._new_parser()
                self._receiver.track.publishes.append(now)

    def process_exited(self) -> None:
        if not self.exited.done():
            self.exited.set_result(None)


class SrtReceiver:
    """An SRT listener (`srt-live-transmit`, TSBPD off so packets are delivered without waiting for their
    play time) behind an `_ArrivalTap` on `port`; its MPEG-TS output is parsed here, each video PES stamped
    by the tap with the arrival of its first TS packet."""

    def __init__(self, name: str, port: int, *, latency_ms: int = 20, track_connections: bool = False) -> None:
        self.track = Track(name)
        self.port = port
        self.latency_ms = latency_ms
        self.track_connections = track_connections
        """Count each caller's connection in `track.publishes` (from srt-live-transmit's `-v` lines), not
        only the first data of each listener process: the listener outlives a caller that reconnects."""
        self._tap: _ArrivalTap | None = None
        self.parser = self._new_parser()
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _PipeProtocol | None = None
        self._respawning: asyncio.Task[None] | None = None
        self.respawns = 0
        """Times srt-live-transmit ended by itself and was started again (`_exited`)."""
        self.log = b""
        """With `track_connections`, the last 4 KiB of srt-live-transmit's `-v` log since `start` (a restarted
        one's too: its binding, each caller it accepted or lost, its last error), for a failure's message."""

    LOG_BYTES = 4096

    def _new_parser(self) -> TsParser:
        def on_pes(t: float, ts_ms: int, payload: bytes) -> None:
            self.track.arrivals.append(
                Arrival(t, MediaKind.VIDEO, ts_ms, digest(payload), annexb_has_idr(payload), False, len(payload))
            )

        def arrival(packet: bytes) -> float | None:
            return None if self._tap is None else self._tap.arrival(packet)

        return TsParser(on_pes, arrival)

    def url(self) -> str:
        """The caller URL for ffmpeg (its SRT latency option is in microseconds)."""
        return f"srt://127.0.0.1:{self.port}?mode=caller&latency={self.latency_ms * 1000}"

    async def start(self) -> None:
        self.parser = self._new_parser()
        self.log = b""
        listener_port = free_port(socket.SOCK_DGRAM)
        self._tap = await _ArrivalTap.open(self.port, listener_port)
        await self._spawn(listener_port)
        self.track.listening_since = time.monotonic()

    async def _spawn(self, listener_port: int) -> None:
        loop = asyncio.get_running_loop()
        listen = f"srt://127.0.0.1:{listener_port}?mode=listener&latency={self.latency_ms}&tsbpdmode=false"
        transport, protocol = await loop.subprocess_exec(
            lambda: _PipeProtocol(self),
            SRT_LIVE_TRANSMIT,
            "-v" if self.track_connections else "-q",
            listen,
            "file://con",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE if self.track_connections else asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self._transport, self._protocol = transport, protocol
        protocol.exited.add_done_callback(lambda _: self._exited(protocol, listener_port))
        # Wait for srt-live-transmit's socket, so the first caller finds it: on a loaded machine its start
        # has taken more than the 0.1 s once slept here (the caller got "Input/output error").
        await wait_listening(listener_port, udp=True)

    def _exited(self, protocol: _PipeProtocol, listener_port: int) -> None:
        """srt-live-transmit ended without our kill: start it again behind the same tap.

        It exits (status 255, "ERROR: recvmsg: Connection was broken") when a caller's end reaches its
        read of the socket before its poll has reported the connection broken: the poll's handling goes
        back to listening, the read's exception ends the program. Seen in fresh-clone runs beside the soak:
        the next caller found nothing listening and failed to connect ("Input/output error")."""
        if self._protocol is not protocol:
            return  # killed by us, or already replaced
        transport = self._transport
        self._transport = self._protocol = None
        if transport is not None:
            transport.close()
        self.respawns += 1
        self._respawning = asyncio.get_running_loop().create_task(self._spawn(listener_port))

    async def kill(self) -> None:
        respawning, self._respawning = self._respawning, None
        if respawning is not None and not respawning.done():
            respawning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await respawning
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
        if self._tap is not None:  # callers hear nothing more, as from a crashed server
            if dropped := self._tap.dropped():
                self.track.errors.append(f"arrival tap: the kernel dropped {dropped} datagrams (receive buffer)")
            self._tap.close()
            self._tap = None
        if transport is None or protocol is None:
            return
        pid = transport.get_pid()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(protocol.exited), 5)
        transport.close()
        # The PES being received when the listener died is cut short: it is dropped, not flushed.

    async def close(self) -> None:
        await self.kill()
