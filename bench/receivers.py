"""Measuring receivers: every media packet that reaches a destination is stamped on arrival.

RTMP destinations are served by our own sans-I/O core (`relay.rtmp.session.ServerSession`) on one asyncio
loop: each destination has its own listening port so that one can be killed and restarted alone. SRT
destinations are `srt-live-transmit` listeners writing the raw received MPEG-TS to a pipe (no remuxing,
no probing); the bench parses the TS and stamps each video PES when its first TS packet arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from relay.media.packets import MediaKind
from relay.rtmp.errors import ProtocolError
from relay.rtmp.events import (
    NEED_DATA,
    CloseRequested,
    ConnectRequested,
    MediaReceived,
    PublishRequested,
)
from relay.rtmp.session import ServerSession, SessionConfig

SRT_LIVE_TRANSMIT = "srt-live-transmit"


def digest(payload: bytes) -> bytes:
    return hashlib.blake2b(payload, digest_size=16).digest()


@dataclass(frozen=True, slots=True)
class Arrival:
    """One media packet as a destination received it."""

    t: float
    """time.monotonic() when the bytes completing it (RTMP) or starting it (TS) were read."""
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
        self._session = ServerSession(SessionConfig(max_buffered_bytes=16 << 20))
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
    arrival of their first TS packet; `on_pes(t, dts_ms, payload)` is called when a PES is complete."""

    def __init__(self, on_pes: Callable[[float, int, bytes], None]) -> None:
        self._on_pes = on_pes
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
                self._pes_t = t
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
            except (BlockingIOError, InterruptedError, OSError):
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
    """An SRT listener (`srt-live-transmit`, TSBPD off so packets are delivered as they arrive) whose
    MPEG-TS output is parsed here."""

    def __init__(self, name: str, port: int, *, latency_ms: int = 20, track_connections: bool = False) -> None:
        self.track = Track(name)
        self.port = port
        self.latency_ms = latency_ms
        self.track_connections = track_connections
        """Count each caller's connection in `track.publishes` (from srt-live-transmit's `-v` lines), not
        only the first data of each listener process: the listener outlives a caller that reconnects."""
        self.parser = self._new_parser()
        self._transport: asyncio.SubprocessTransport | None = None
        self._protocol: _PipeProtocol | None = None

    def _new_parser(self) -> TsParser:
        def on_pes(t: float, ts_ms: int, payload: bytes) -> None:
            self.track.arrivals.append(
                Arrival(t, MediaKind.VIDEO, ts_ms, digest(payload), annexb_has_idr(payload), False, len(payload))
            )

        return TsParser(on_pes)

    def url(self) -> str:
        """The caller URL for ffmpeg (its SRT latency option is in microseconds)."""
        return f"srt://127.0.0.1:{self.port}?mode=caller&latency={self.latency_ms * 1000}"

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.parser = self._new_parser()
        listen = f"srt://127.0.0.1:{self.port}?mode=listener&latency={self.latency_ms}&tsbpdmode=false"
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
        # srt-live-transmit binds at once; give it a moment so the relay's first attempt finds it.
        await asyncio.sleep(0.1)
        self.track.listening_since = time.monotonic()

    async def kill(self) -> None:
        transport, protocol = self._transport, self._protocol
        self._transport = self._protocol = None
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
