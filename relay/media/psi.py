"""MPEG-TS program tables: PAT and PMT sections, reassembled across packets and checked by their CRC.

They tell which PIDs carry video, audio or data and with which codec; nothing here rewrites a byte.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.media.packets import MediaKind

_MAX_SECTION_BYTES = 1024  # PAT/PMT section_length is at most 1021 (+3 header bytes)

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


@dataclass(slots=True)
class SectionAssembler:
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
