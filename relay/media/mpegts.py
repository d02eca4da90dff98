"""MPEG-TS as the SRT ingest receives it: whole 188-byte packets, classified, never rewritten.

`MpegTsReader` is sans-I/O: feed it bytes with the receive time, get `MediaPacket`s back whose
payloads are runs of whole TS packets in their original order (concatenating every payload gives
back the input, minus any bytes skipped while resynchronising). Along the way it reads:

- the PAT and PMTs (to know which PIDs carry video, audio or data; those packets are `config`);
- video random-access points: the adaptation field's random_access_indicator, or else the first
  VCL NAL unit of the PES (H.264 IDR, HEVC IRAP). A keyframe packet always starts a new
  MediaPacket so that a late joiner can start exactly there;
- the H.264/HEVC SPS (width, height, H.264 VUI frame rate) and the video DTS cadence (frame rate
  when the SPS does not say), reported as `TsStreamInfo`.

The tables are parsed by relay.media.psi, PES headers and pictures by relay.media.pes, parameter sets
by relay.media.sps; this module owns the packet stream: sync, order, hold-back and grouping.

Malformed input never raises: bad sections, truncated headers and garbage are skipped, and every
internal buffer has a fixed bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from relay.media.packets import MediaKind, MediaPacket
from relay.media.pes import VideoPesScan, parse_pes_header
from relay.media.psi import EsInfo, SectionAssembler, parse_pat, parse_pmt
from relay.media.sps import VideoParams

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
NULL_PID = 0x1FFF

_DTS_SAMPLES = 16
_PTS_WRAP = 1 << 33


def packet_pid(packet: bytes) -> int:
    """The PID of one TS packet."""
    return ((packet[1] & 0x1F) << 8) | packet[2]


def without_continuity(packet: bytes) -> bytes:
    """The packet with its continuity counter zeroed: PAT/PMT repeats of a reconnected source compare equal."""
    return packet[:3] + bytes([packet[3] & 0xF0]) + packet[4:]


@dataclass(frozen=True, slots=True)
class TsStreamInfo:
    """What the PMT and the video parameter sets tell about the source."""

    video_codec: str | None = None
    audio_codec: str | None = None
    width: int | None = None
    height: int | None = None
    frame_rate: float | None = None
    video_pid: int | None = None
    audio_pids: tuple[int, ...] = ()


# --- the reader ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _TsPacket:
    kind: MediaKind
    pid: int
    data: bytes
    keyframe: bool = False
    config: bool = False


@dataclass(slots=True)
class _VideoState:
    dts_last: int | None = None
    deltas: list[int] = field(default_factory=list)


class MpegTsReader:
    """Splits a TS byte stream into classified `MediaPacket`s and learns `TsStreamInfo` (sans-I/O).

    Packets are returned in input order. A video PES start without random_access_indicator is held
    back (with everything after it, at most `max_hold_packets`) until its first picture shows
    whether it is a keyframe, because the flag belongs on its first packet.
    """

    def __init__(self, *, max_hold_packets: int = 64) -> None:
        self._max_hold = max_hold_packets
        self._buf = bytearray()
        self._in_sync = True  # SRT messages carry whole packets: trust the first one
        self._queue: list[_TsPacket] = []
        self._queue_base = 0  # absolute index of _queue[0]
        self._pat = SectionAssembler()
        self._pmt_pids: set[int] = set()
        self._psi: dict[int, SectionAssembler] = {}
        self._programs: dict[int, list[EsInfo]] = {}  # PMT PID -> streams
        self._es: dict[int, EsInfo] = {}
        self._scans: dict[int, VideoPesScan] = {}
        self._video: dict[int, _VideoState] = {}
        self._params: VideoParams | None = None
        self._dts_rate: float | None = None
        self._info = TsStreamInfo()
        self._info_taken: TsStreamInfo | None = None
        self.skipped_bytes = 0
        """Bytes dropped while looking for sync (not valid TS)."""
        self.packets = 0

    @property
    def buffered_bytes(self) -> int:
        """Bytes held inside the reader (partial packet plus held-back packets)."""
        return len(self._buf) + sum(len(p.data) for p in self._queue)

    @property
    def info(self) -> TsStreamInfo:
        """Everything learnt so far."""
        return self._info

    def take_info(self) -> TsStreamInfo | None:
        """The stream info if it changed since the last call, else None."""
        if self._info == self._info_taken or self._info == TsStreamInfo():
            return None
        self._info_taken = self._info
        return self._info

    def feed(self, data: bytes, now_ms: int) -> list[MediaPacket]:
        """Take received bytes; return the media packets that are complete and decided."""
        buf = self._buf
        buf += data
        pos = 0
        end = len(buf)
        while end - pos >= TS_PACKET_SIZE:
            if buf[pos] == SYNC_BYTE:
                # A packet counts when the next one starts with a sync byte too; the last packet in
                # the buffer is trusted only while in sync (SRT messages hold whole packets).
                if end - pos > TS_PACKET_SIZE:
                    confirmed = buf[pos + TS_PACKET_SIZE] == SYNC_BYTE
                elif self._in_sync:
                    confirmed = True
                else:
                    break  # wait for one more byte to confirm
                if confirmed:
                    self._in_sync = True
                    self._packet(bytes(buf[pos : pos + TS_PACKET_SIZE]))
                    pos += TS_PACKET_SIZE
                    continue
            # Lost sync: skip to the next 0x47 that is followed by another one a packet later.
            self._in_sync = False
            nxt = buf.find(SYNC_BYTE, pos + 1)
            while nxt >= 0 and nxt + TS_PACKET_SIZE < end and buf[nxt + TS_PACKET_SIZE] != SYNC_BYTE:
                nxt = buf.find(SYNC_BYTE, nxt + 1)
            if nxt < 0:
                nxt = end
            self.skipped_bytes += nxt - pos
            pos = nxt
        del buf[:pos]
        return self._emit(now_ms, flush=False)

    def flush(self, now_ms: int) -> list[MediaPacket]:
        """End of stream: decide held packets and return everything still held."""
        if len(self._buf) >= TS_PACKET_SIZE and self._buf[0] == SYNC_BYTE:  # an unconfirmed last packet
            self._packet(bytes(self._buf[:TS_PACKET_SIZE]))
            del self._buf[:TS_PACKET_SIZE]
        for scan in self._scans.values():
            scan.finish()
        self._apply_scans()
        return self._emit(now_ms, flush=True)

    # --- per packet ------------------------------------------------------------------------------

    def _packet(self, pkt: bytes) -> None:
        self.packets += 1
        pid = packet_pid(pkt)
        pusi = bool(pkt[1] & 0x40)
        afc = (pkt[3] >> 4) & 0x03
        pos = 4
        rai = False
        if afc & 0x02:
            af_len = pkt[4]
            if af_len > 0:
                rai = bool(pkt[5] & 0x40)
            pos = 5 + af_len
        payload = pkt[pos:] if afc & 0x01 and pos < TS_PACKET_SIZE else b""
        index = self._queue_base + len(self._queue)
        entry = _TsPacket(MediaKind.DATA, pid, pkt)
        self._queue.append(entry)
        if pid == PAT_PID:
            entry.config = True
            for section in self._pat.feed(payload, pusi):
                self._on_pat(section)
        elif pid in self._pmt_pids:
            entry.config = True
            for section in self._psi.setdefault(pid, SectionAssembler()).feed(payload, pusi):
                self._on_pmt(pid, section)
        elif (es := self._es.get(pid)) is not None:
            entry.kind = es.kind
            if es.kind == MediaKind.VIDEO:
                self._video_packet(entry, es, index, pusi, rai, payload)
        if self._scans:
            held = self._held_scan()
            if held is not None and index - held.start_index >= self._max_hold:
                held.keyframe = False  # no picture found in time: not a point to start from
                self._apply_scans()

    def _held_scan(self) -> VideoPesScan | None:
        """The oldest PES start still waiting for its keyframe verdict (output stops before it)."""
        undecided = [s for s in self._scans.values() if s.keyframe is None]
        return min(undecided, key=lambda s: s.start_index) if undecided else None

    def _video_packet(self, entry: _TsPacket, es: EsInfo, index: int, pusi: bool, rai: bool, payload: bytes) -> None:
        scan = self._scans.get(es.pid)
        if not pusi:
            if scan is not None:
                scan.feed(payload)
                self._apply_scans()
            return
        if scan is not None:  # the previous PES is complete
            scan.finish()
            self._apply_scans()
        header = parse_pes_header(payload)
        if header is None:
            entry.keyframe = rai
            return
        es_offset, dts = header
        self._track_cadence(es.pid, dts)
        if rai:
            entry.keyframe = True
        nal_codec = es.codec if es.codec in ("h264", "hevc") else None
        want_sps = nal_codec is not None and self._params is None
        if nal_codec is None or (rai and not want_sps):
            return
        scan = VideoPesScan(nal_codec, index, True if rai else None, want_sps)
        self._scans[es.pid] = scan
        scan.feed(payload[es_offset:])
        self._apply_scans()

    def _apply_scans(self) -> None:
        """Copy decided verdicts onto their packets and pick up SPS results."""
        for pid, scan in list(self._scans.items()):
            if scan.sps is not None and self._params is None:
                self._params = scan.sps
                self._update_info()
            if scan.keyframe is not None:
                qi = scan.start_index - self._queue_base
                if 0 <= qi < len(self._queue) and scan.keyframe:
                    self._queue[qi].keyframe = True
            if scan.done or (scan.keyframe is not None and scan.full):
                del self._scans[pid]

    def _track_cadence(self, pid: int, dts: int | None) -> None:
        if dts is None or self._dts_rate is not None:
            return
        state = self._video.setdefault(pid, _VideoState())
        if state.dts_last is not None:
            delta = (dts - state.dts_last) % _PTS_WRAP
            if 0 < delta <= 90000:
                state.deltas.append(delta)
        state.dts_last = dts
        if len(state.deltas) >= _DTS_SAMPLES:
            self._dts_rate = round(90000 / median(state.deltas), 3)
            state.deltas.clear()
            self._update_info()

    # --- tables ---------------------------------------------------------------------------------

    def _on_pat(self, section: bytes) -> None:
        programs = parse_pat(section)
        if programs is None:
            return
        pmt_pids = set(programs.values())
        if pmt_pids == self._pmt_pids:
            return
        self._pmt_pids = pmt_pids
        self._psi = {pid: self._psi.get(pid, SectionAssembler()) for pid in pmt_pids}
        self._programs = {pid: s for pid, s in self._programs.items() if pid in pmt_pids}
        self._rebuild_es()

    def _on_pmt(self, pmt_pid: int, section: bytes) -> None:
        streams = parse_pmt(section)
        if streams is None or self._programs.get(pmt_pid) == streams:
            return
        self._programs[pmt_pid] = streams
        self._rebuild_es()

    def _rebuild_es(self) -> None:
        self._es = {}
        for streams in self._programs.values():
            for es in streams:
                if es.pid not in (PAT_PID, NULL_PID) and es.pid not in self._pmt_pids:
                    self._es.setdefault(es.pid, es)
        self._scans = {pid: s for pid, s in self._scans.items() if pid in self._es}
        self._update_info()

    def _update_info(self) -> None:
        video = next((es for es in self._es.values() if es.kind == MediaKind.VIDEO), None)
        audio = [es for es in self._es.values() if es.kind == MediaKind.AUDIO]
        params = self._params
        rate = params.frame_rate if params is not None and params.frame_rate else self._dts_rate
        self._info = TsStreamInfo(
            video_codec=video.codec if video else None,
            audio_codec=audio[0].codec if audio else None,
            width=params.width if params else None,
            height=params.height if params else None,
            frame_rate=rate,
            video_pid=video.pid if video else None,
            audio_pids=tuple(es.pid for es in audio),
        )

    # --- output ---------------------------------------------------------------------------------

    def _emit(self, now_ms: int, *, flush: bool) -> list[MediaPacket]:
        limit = len(self._queue)
        held = None if flush else self._held_scan()
        if held is not None:
            limit = max(0, held.start_index - self._queue_base)
        out: list[MediaPacket] = []
        group: list[bytes] = []
        first: _TsPacket | None = None
        for entry in self._queue[:limit]:
            if first is None or entry.pid != first.pid or entry.keyframe:
                if first is not None:
                    out.append(MediaPacket(first.kind, now_ms, b"".join(group), first.keyframe, first.config))
                first, group = entry, []
            group.append(entry.data)
        if first is not None:
            out.append(MediaPacket(first.kind, now_ms, b"".join(group), first.keyframe, first.config))
        del self._queue[:limit]
        self._queue_base += limit
        return out
