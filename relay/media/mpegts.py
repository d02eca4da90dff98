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

Malformed input never raises: bad sections, truncated headers and garbage are skipped, and every
internal buffer has a fixed bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import median

from relay.media.packets import MediaKind, MediaPacket

TS_PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
NULL_PID = 0x1FFF

_MAX_SECTION_BYTES = 1024  # PAT/PMT section_length is at most 1021 (+3 header bytes)
_SCAN_LIMIT_BYTES = 32 * 1024  # ES bytes of one PES kept to find its first picture and the SPS
_DTS_SAMPLES = 16
_PTS_WRAP = 1 << 33

VIDEO_STREAM_TYPES: dict[int, str] = {
    0x01: "mpeg1video",
    0x02: "mpeg2video",
    0x10: "mpeg4",
    0x1B: "h264",
    0x24: "hevc",
    0x33: "vvc",
    0x42: "cavs",
    0xD1: "dirac",
    0xEA: "vc1",
}
AUDIO_STREAM_TYPES: dict[int, str] = {
    0x03: "mp2",
    0x04: "mp2",
    0x0F: "aac",
    0x11: "aac_latm",
    0x1C: "aac",
    0x81: "ac3",
    0x82: "dts",
    0x87: "eac3",
}
# stream_type 0x06 (PES private data) is identified by its descriptors.
_REGISTRATION_CODECS: dict[bytes, tuple[MediaKind, str]] = {
    b"Opus": (MediaKind.AUDIO, "opus"),
    b"AC-3": (MediaKind.AUDIO, "ac3"),
    b"EAC3": (MediaKind.AUDIO, "eac3"),
    b"AV01": (MediaKind.VIDEO, "av1"),
    b"HEVC": (MediaKind.VIDEO, "hevc"),
    b"VC-1": (MediaKind.VIDEO, "vc1"),
}
_DESCRIPTOR_CODECS: dict[int, tuple[MediaKind, str]] = {
    0x6A: (MediaKind.AUDIO, "ac3"),
    0x7A: (MediaKind.AUDIO, "eac3"),
    0x7B: (MediaKind.AUDIO, "dts"),
}


class MpegTsError(Exception):
    """Base of this module's errors; `MpegTsReader.feed` itself never raises."""


class BitstreamError(MpegTsError):
    """A header or parameter set ended early or holds an impossible value."""


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


# --- bit-level helpers ---------------------------------------------------------------------------


def _crc32_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        crc = i << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
        table.append(crc & 0xFFFFFFFF)
    return tuple(table)


_CRC_TABLE = _crc32_table()


def crc32_mpeg2(data: bytes) -> int:
    """CRC-32/MPEG-2 (what PSI sections end with); a whole section including its CRC gives 0."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) ^ byte) & 0xFF]
    return crc


def unescape_rbsp(nal: bytes) -> bytes:
    """Remove emulation-prevention bytes (00 00 03 -> 00 00) from a NAL unit."""
    if b"\x00\x00\x03" not in nal:
        return nal
    out = bytearray()
    zeros = 0
    for byte in nal:
        if zeros >= 2 and byte == 3:
            zeros = 0
            continue
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


class BitReader:
    """MSB-first bit reader with Exp-Golomb codes; raises `BitstreamError` past the end."""

    def __init__(self, data: bytes) -> None:
        self._value = int.from_bytes(data, "big")
        self._bits = len(data) * 8
        self._pos = 0

    def bits(self, n: int) -> int:
        """Read an n-bit unsigned integer."""
        if n == 0:
            return 0
        if self._pos + n > self._bits:
            raise BitstreamError("read past the end of a parameter set")
        self._pos += n
        return (self._value >> (self._bits - self._pos)) & ((1 << n) - 1)

    def skip(self, n: int) -> None:
        """Skip n bits."""
        if self._pos + n > self._bits:
            raise BitstreamError("skip past the end of a parameter set")
        self._pos += n

    def ue(self) -> int:
        """Unsigned Exp-Golomb."""
        zeros = 0
        while self.bits(1) == 0:
            zeros += 1
            if zeros > 31:
                raise BitstreamError("Exp-Golomb code longer than 32 bits")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        """Signed Exp-Golomb."""
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


# --- parameter sets ----------------------------------------------------------------------------

_H264_HIGH_PROFILES = {100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135}


@dataclass(frozen=True, slots=True)
class VideoParams:
    """Picture size and (when the SPS carries timing) frame rate."""

    width: int
    height: int
    frame_rate: float | None = None


def _skip_scaling_list(r: BitReader, size: int) -> None:
    last, nxt = 8, 8
    for _ in range(size):
        if nxt != 0:
            nxt = (last + r.se() + 256) % 256
        last = nxt if nxt != 0 else last


def parse_h264_sps(nal: bytes) -> VideoParams:
    """Width, height and VUI frame rate from an H.264 SPS NAL unit (header byte included)."""
    if not nal or nal[0] & 0x1F != 7:
        raise BitstreamError("not an H.264 SPS")
    r = BitReader(unescape_rbsp(nal[1:]))
    profile_idc = r.bits(8)
    r.skip(16)  # constraint flags, level_idc
    r.ue()  # seq_parameter_set_id
    chroma_format_idc = 1
    separate_colour_plane = 0
    if profile_idc in _H264_HIGH_PROFILES:
        chroma_format_idc = r.ue()
        if chroma_format_idc > 3:
            raise BitstreamError("bad chroma_format_idc")
        if chroma_format_idc == 3:
            separate_colour_plane = r.bits(1)
        r.ue()  # bit_depth_luma_minus8
        r.ue()  # bit_depth_chroma_minus8
        r.skip(1)  # qpprime_y_zero_transform_bypass_flag
        if r.bits(1):  # seq_scaling_matrix_present_flag
            for i in range(8 if chroma_format_idc != 3 else 12):
                if r.bits(1):
                    _skip_scaling_list(r, 16 if i < 6 else 64)
    r.ue()  # log2_max_frame_num_minus4
    poc_type = r.ue()
    if poc_type == 0:
        r.ue()  # log2_max_pic_order_cnt_lsb_minus4
    elif poc_type == 1:
        r.skip(1)
        r.se()
        r.se()
        cycle = r.ue()
        if cycle > 255:
            raise BitstreamError("bad num_ref_frames_in_pic_order_cnt_cycle")
        for _ in range(cycle):
            r.se()
    elif poc_type != 2:
        raise BitstreamError("bad pic_order_cnt_type")
    r.ue()  # max_num_ref_frames
    r.skip(1)  # gaps_in_frame_num_value_allowed_flag
    width_mbs = r.ue() + 1
    height_map_units = r.ue() + 1
    frame_mbs_only = r.bits(1)
    if not frame_mbs_only:
        r.skip(1)  # mb_adaptive_frame_field_flag
    r.skip(1)  # direct_8x8_inference_flag
    width = width_mbs * 16
    height = (2 - frame_mbs_only) * height_map_units * 16
    if r.bits(1):  # frame_cropping_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if chroma_format_idc == 0 or separate_colour_plane:
            crop_x, crop_y = 1, 2 - frame_mbs_only
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
            crop_x, crop_y = sub_w, sub_h * (2 - frame_mbs_only)
        width -= crop_x * (left + right)
        height -= crop_y * (top + bottom)
    if width <= 0 or height <= 0:
        raise BitstreamError("cropping larger than the picture")
    return VideoParams(width, height, _h264_vui_frame_rate(r))


def _h264_vui_frame_rate(r: BitReader) -> float | None:
    try:
        if not r.bits(1):  # vui_parameters_present_flag
            return None
        if r.bits(1):  # aspect_ratio_info_present_flag
            if r.bits(8) == 255:  # Extended_SAR
                r.skip(32)
        if r.bits(1):  # overscan_info_present_flag
            r.skip(1)
        if r.bits(1):  # video_signal_type_present_flag
            r.skip(4)
            if r.bits(1):  # colour_description_present_flag
                r.skip(24)
        if r.bits(1):  # chroma_loc_info_present_flag
            r.ue()
            r.ue()
        if not r.bits(1):  # timing_info_present_flag
            return None
        num_units_in_tick = r.bits(32)
        time_scale = r.bits(32)
    except BitstreamError:
        return None
    if num_units_in_tick == 0 or time_scale == 0:
        return None
    rate = time_scale / (2 * num_units_in_tick)
    return round(rate, 3) if 1 <= rate <= 1000 else None


def parse_hevc_sps(nal: bytes) -> VideoParams:
    """Width and height from an HEVC SPS NAL unit (2-byte header included)."""
    if len(nal) < 3 or (nal[0] >> 1) & 0x3F != 33:
        raise BitstreamError("not an HEVC SPS")
    r = BitReader(unescape_rbsp(nal[2:]))
    r.skip(4)  # sps_video_parameter_set_id
    max_sub_layers_minus1 = r.bits(3)
    r.skip(1)  # sps_temporal_id_nesting_flag
    # profile_tier_level(1, max_sub_layers_minus1)
    r.skip(96)  # general profile (88 bits) + general_level_idc
    present = [(r.bits(1), r.bits(1)) for _ in range(max_sub_layers_minus1)]
    if max_sub_layers_minus1 > 0:
        r.skip(2 * (8 - max_sub_layers_minus1))
    for profile_present, level_present in present:
        if profile_present:
            r.skip(88)
        if level_present:
            r.skip(8)
    r.ue()  # sps_seq_parameter_set_id
    chroma_format_idc = r.ue()
    if chroma_format_idc > 3:
        raise BitstreamError("bad chroma_format_idc")
    separate_colour_plane = r.bits(1) if chroma_format_idc == 3 else 0
    width = r.ue()
    height = r.ue()
    if r.bits(1):  # conformance_window_flag
        left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
        if separate_colour_plane or chroma_format_idc == 0:
            sub_w = sub_h = 1
        else:
            sub_w = 1 if chroma_format_idc == 3 else 2
            sub_h = 2 if chroma_format_idc == 1 else 1
        width -= sub_w * (left + right)
        height -= sub_h * (top + bottom)
    if width <= 0 or height <= 0 or width > 65535 or height > 65535:
        raise BitstreamError("impossible picture size")
    return VideoParams(width, height, None)


# --- PSI ---------------------------------------------------------------------------------------


@dataclass(slots=True)
class _SectionAssembler:
    """Reassembles PSI sections of one PID across TS packets (bounded)."""

    buf: bytearray | None = None

    def feed(self, payload: bytes, pusi: bool) -> list[bytes]:
        out: list[bytes] = []
        if pusi:
            if not payload:
                return out
            pointer = payload[0]
            data = payload[1:]
            if pointer > len(data):
                self.buf = None
                return out
            if self.buf is not None:
                self.buf += data[:pointer]
                self._extract(out)
            self.buf = bytearray(data[pointer:])
        elif self.buf is None:
            return out
        else:
            self.buf += payload
        self._extract(out)
        return out

    def _extract(self, out: list[bytes]) -> None:
        buf = self.buf
        while buf is not None and len(buf) >= 3:
            if buf[0] == 0xFF:  # stuffing: no more sections in this packet
                buf = None
                break
            total = 3 + (((buf[1] & 0x0F) << 8) | buf[2])
            if total > _MAX_SECTION_BYTES:
                buf = None
                break
            if len(buf) < total:
                break
            out.append(bytes(buf[:total]))
            del buf[:total]
        if buf is not None and len(buf) > _MAX_SECTION_BYTES:
            buf = None
        self.buf = buf


def _valid_section(section: bytes, table_id: int) -> bool:
    return (
        len(section) >= 12
        and section[0] == table_id
        and section[1] & 0x80 != 0  # section_syntax_indicator
        and section[5] & 0x01 != 0  # current_next_indicator
        and crc32_mpeg2(section) == 0
    )


def parse_pat(section: bytes) -> dict[int, int] | None:
    """program_number -> PMT PID from a PAT section, or None if it is not a valid PAT."""
    if not _valid_section(section, 0x00):
        return None
    programs: dict[int, int] = {}
    for off in range(8, len(section) - 4 - 3, 4):
        number = (section[off] << 8) | section[off + 1]
        pid = ((section[off + 2] & 0x1F) << 8) | section[off + 3]
        if number != 0:  # program 0 points at the NIT, not a PMT
            programs[number] = pid
    return programs


@dataclass(frozen=True, slots=True)
class EsInfo:
    """One elementary stream of a PMT."""

    pid: int
    stream_type: int
    kind: MediaKind
    codec: str | None


def _classify_es(stream_type: int, descriptors: bytes) -> tuple[MediaKind, str | None]:
    if stream_type in VIDEO_STREAM_TYPES:
        return MediaKind.VIDEO, VIDEO_STREAM_TYPES[stream_type]
    if stream_type in AUDIO_STREAM_TYPES:
        return MediaKind.AUDIO, AUDIO_STREAM_TYPES[stream_type]
    pos = 0
    while pos + 2 <= len(descriptors):
        tag, length = descriptors[pos], descriptors[pos + 1]
        body = descriptors[pos + 2 : pos + 2 + length]
        if tag == 0x05 and len(body) >= 4 and bytes(body[:4]) in _REGISTRATION_CODECS:
            return _REGISTRATION_CODECS[bytes(body[:4])]
        if tag in _DESCRIPTOR_CODECS:
            return _DESCRIPTOR_CODECS[tag]
        pos += 2 + length
    return MediaKind.DATA, None


def parse_pmt(section: bytes) -> list[EsInfo] | None:
    """The elementary streams of a PMT section, or None if it is not a valid PMT."""
    if not _valid_section(section, 0x02):
        return None
    end = len(section) - 4
    program_info_length = ((section[10] & 0x0F) << 8) | section[11]
    pos = 12 + program_info_length
    streams: list[EsInfo] = []
    while pos + 5 <= end:
        stream_type = section[pos]
        pid = ((section[pos + 1] & 0x1F) << 8) | section[pos + 2]
        info_length = ((section[pos + 3] & 0x0F) << 8) | section[pos + 4]
        descriptors = section[pos + 5 : min(end, pos + 5 + info_length)]
        kind, codec = _classify_es(stream_type, descriptors)
        streams.append(EsInfo(pid, stream_type, kind, codec))
        pos += 5 + info_length
    return streams


# --- PES ---------------------------------------------------------------------------------------

_NO_OPTIONAL_HEADER = {0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF}


def _timestamp(b: bytes, off: int) -> int:
    return ((b[off] >> 1) & 0x07) << 30 | b[off + 1] << 22 | (b[off + 2] >> 1) << 15 | b[off + 3] << 7 | b[off + 4] >> 1


def parse_pes_header(payload: bytes) -> tuple[int, int | None] | None:
    """(offset of the elementary stream data, DTS or else PTS in 90 kHz) of a PES start."""
    if len(payload) < 9 or payload[:3] != b"\x00\x00\x01":
        return None
    if payload[3] in _NO_OPTIONAL_HEADER:
        return 6, None
    flags = payload[7] >> 6
    es_offset = 9 + payload[8]
    if es_offset > len(payload):
        return None
    ts: int | None = None
    if flags == 3 and len(payload) >= 19:
        ts = _timestamp(payload, 14)
    elif flags & 2 and len(payload) >= 14:
        ts = _timestamp(payload, 9)
    return es_offset, ts


# --- NAL scanning --------------------------------------------------------------------------------


@dataclass(slots=True)
class _PesScan:
    """The first bytes of one video PES: finds its first picture's type and any SPS."""

    codec: str
    start_index: int
    """Absolute index of the PES's first TS packet (the one to mark as keyframe)."""
    keyframe: bool | None
    want_sps: bool
    data: bytearray = field(default_factory=bytearray)
    pos: int = 0
    nal_start: int | None = None
    sps: VideoParams | None = None

    @property
    def done(self) -> bool:
        return self.keyframe is not None and not self.want_sps

    def feed(self, es: bytes) -> None:
        if self.done or len(self.data) >= _SCAN_LIMIT_BYTES:
            return
        self.data += es[: _SCAN_LIMIT_BYTES - len(self.data)]
        data = self.data
        while True:
            found = data.find(b"\x00\x00\x01", self.pos)
            if found < 0:
                self.pos = max(self.pos, len(data) - 2)
                return
            header_at = found + 3
            if header_at + 2 > len(data):
                return  # need the NAL header bytes: keep pos at this start code
            self._nal_ends(found)
            self.nal_start = header_at
            self.pos = header_at
            self._nal_begins(header_at)
            if self.done:
                return

    def finish(self) -> None:
        """The PES ended (or the scan limit was hit): close the last NAL, decide "no keyframe"."""
        self._nal_ends(len(self.data))
        if self.keyframe is None:
            self.keyframe = False
        self.want_sps = False

    def _nal_type(self, at: int) -> int:
        if self.codec == "h264":
            return self.data[at] & 0x1F
        return (self.data[at] >> 1) & 0x3F

    def _nal_begins(self, at: int) -> None:
        nal_type = self._nal_type(at)
        if self.codec == "h264":
            is_vcl, is_irap = 1 <= nal_type <= 5, nal_type == 5
        else:
            is_vcl, is_irap = nal_type <= 31, 16 <= nal_type <= 23
        if is_vcl:
            if self.keyframe is None:
                self.keyframe = is_irap
            self.want_sps = False  # parameter sets come before the first picture
            self.nal_start = None

    def _nal_ends(self, end: int) -> None:
        start = self.nal_start
        self.nal_start = None
        if start is None or not self.want_sps:
            return
        nal = bytes(self.data[start:end]).rstrip(b"\x00")  # trailing zeros belong to the next start code
        try:
            if self.codec == "h264" and self._nal_type(start) == 7:
                self.sps = parse_h264_sps(nal)
            elif self.codec == "hevc" and self._nal_type(start) == 33:
                self.sps = parse_hevc_sps(nal)
            else:
                return
        except (BitstreamError, IndexError, ValueError):
            return
        self.want_sps = False


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
        self._pat = _SectionAssembler()
        self._pmt_pids: set[int] = set()
        self._psi: dict[int, _SectionAssembler] = {}
        self._programs: dict[int, list[EsInfo]] = {}  # PMT PID -> streams
        self._es: dict[int, EsInfo] = {}
        self._scans: dict[int, _PesScan] = {}
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
        pid = ((pkt[1] & 0x1F) << 8) | pkt[2]
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
            for section in self._psi.setdefault(pid, _SectionAssembler()).feed(payload, pusi):
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

    def _held_scan(self) -> _PesScan | None:
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
        scan = _PesScan(nal_codec, index, True if rai else None, want_sps)
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
            if scan.done or (scan.keyframe is not None and len(scan.data) >= _SCAN_LIMIT_BYTES):
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
        self._psi = {pid: self._psi.get(pid, _SectionAssembler()) for pid in pmt_pids}
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
