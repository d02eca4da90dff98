"""How one source's packets become the byte stream a push reads: one framing per container, chosen once.

A publisher's session opens with its container (FLV from RTMP ingest, MPEG-TS from SRT ingest) and
`framing_for` picks the class then; the hub never asks which container it carries. A framing owns
what differs between the two:

- the configuration a late joiner needs before any media, kept by its key (FLV: one sequence header
  per media kind, plus onMetaData; MPEG-TS: the PAT/PMT packets by PID), served by `header_chunks`;
- whether a returning publisher's configuration is the same (`same_configuration`): FLV compares the
  sequence header tags, MPEG-TS the PAT/PMT packets without their continuity counters, which a new
  connection legitimately restarts;
- timestamps across the return (`resume`): FLV rebases the newcomer's timestamps, which restart near
  zero, to continue after the last ones sent; MPEG-TS bytes are never rewritten, so it keeps them;
- whether another input (main and backup are two encoders) can follow without the pushes restarting
  (`compatible`: same codecs; FLV sequence headers that differ are then sent again inline,
  `configuration_changes`); MPEG-TS asks for the same PAT/PMT, since a push's demuxer cannot take new
  PIDs or stream types mid-stream.
"""

from __future__ import annotations

from typing import Protocol

from relay.hub.subscriber import Chunk
from relay.media.flv import encode_tag, flv_header, tag_frame
from relay.media.mpegts import TS_PACKET_SIZE, packet_pid, without_continuity
from relay.media.packets import ContainerFormat, MediaKind, MediaPacket


class Framing(Protocol):
    """The container half of one source: its configuration, the header a joiner gets, its timestamps."""

    @property
    def has_video(self) -> bool:
        """Video was seen: from then on a joiner starts on a keyframe only."""
        ...

    @property
    def ready_to_compare(self) -> bool:
        """Enough configuration was kept to judge a returning publisher by its first media packet."""
        ...

    def frame(self, packet: MediaPacket, into: list[bytes]) -> int:
        """Append the bytes subscribers get for a packet of the live source to `into`, in parts (an FLV tag's
        header, body and trailer: the hub joins a run of packets' parts once, relay.hub.hub), and return its
        timestamp in them; configuration is kept for the header."""
        ...

    def keep_configuration(self, packet: MediaPacket) -> None:
        """Keep a returning publisher's configuration packet, unsent: it is compared before anything flows."""
        ...

    def header_chunks(self) -> list[Chunk]:
        """What a new subscriber gets before the GOP, so that it can start decoding at once."""
        ...

    def same_configuration(self, newcomer: Framing) -> bool:
        """The newcomer's kept configuration equals this source's: the subscribers may simply continue."""
        ...

    def resume(self, newcomer: Framing, first: MediaPacket) -> int:
        """Continue this source with a newcomer of the same configuration whose media starts at `first`:
        take what it may update, and return the timestamp offset applied to its packets from now on."""
        ...

    def compatible(self, newcomer: Framing) -> bool:
        """A decoder fed this source can go on with the newcomer's media (same container, same codecs),
        given its `configuration_changes` first."""
        ...

    def configuration_changes(self, newcomer: Framing) -> list[MediaPacket]:
        """The newcomer's configuration packets that differ from this source's, to be framed and sent
        before its first media (a decoder then reconfigures in place)."""
        ...


def framing_for(container: ContainerFormat, *, resume_gap_ms: int) -> Framing:
    """The framing of a new publisher session (`resume_gap_ms`: see `HubSettings.resume_gap_ms`)."""
    if container is ContainerFormat.MPEGTS:
        return MpegTsFraming()
    return FlvFraming(resume_gap_ms=resume_gap_ms)


class FlvFraming:
    """FLV for RTMP ingest: each packet becomes a tag; owns the sequence headers, onMetaData and the
    timestamp rebasing (output = input + offset, never going back per media kind).

    onMetaData is kept for joiners but never compared: only the sequence headers decide whether a
    decoder can go on.
    """

    def __init__(self, *, resume_gap_ms: int) -> None:
        self._resume_gap_ms = resume_gap_ms
        self._sequence_headers: dict[MediaKind, Chunk] = {}
        self._config_packets: dict[MediaKind, MediaPacket] = {}
        """The sequence headers as received (before framing), to be sent again by another source."""
        self._metadata: Chunk | None = None
        self._has_video = False
        self._ts_offset = 0
        self._last_out_ts: dict[MediaKind, int] = {}

    @property
    def has_video(self) -> bool:
        return self._has_video

    @property
    def ready_to_compare(self) -> bool:
        return True  # an encoder may send media without sequence headers: judge by what came

    def frame(self, packet: MediaPacket, into: list[bytes]) -> int:
        kind = packet.kind
        payload = packet.payload
        if kind is MediaKind.VIDEO:
            self._has_video = True
        ts = packet.timestamp_ms + self._ts_offset
        if packet.config:
            ts = max(0, ts)
            data = encode_tag(kind, ts, payload)
            self._keep(packet, Chunk(data, ts, sync=False, config=True))
            into.append(data)
            return ts
        last = self._last_out_ts
        ts = max(ts, last.get(kind, 0))  # >= 0 as well: no kept timestamp is below 0
        last[kind] = ts
        header, trailer = tag_frame(kind, ts, len(payload))
        into += (header, payload, trailer)
        return ts

    def keep_configuration(self, packet: MediaPacket) -> None:
        ts = packet.timestamp_ms
        self._keep(packet, Chunk(encode_tag(packet.kind, ts, packet.payload), ts, sync=False, config=True))

    def _keep(self, packet: MediaPacket, chunk: Chunk) -> None:
        if packet.kind is MediaKind.DATA:
            self._metadata = chunk
        else:
            self._sequence_headers[packet.kind] = chunk
            self._config_packets[packet.kind] = packet

    def header_chunks(self) -> list[Chunk]:
        has_audio = MediaKind.AUDIO in self._sequence_headers
        has_video = MediaKind.VIDEO in self._sequence_headers
        if not (has_audio or has_video):
            has_audio = has_video = True  # nothing known yet: let the reader find out
        header = Chunk(flv_header(has_audio=has_audio, has_video=has_video), 0, sync=False, config=True)
        chunks = [header]
        if self._metadata is not None:
            chunks.append(self._metadata)
        chunks.extend(self._sequence_headers[kind] for kind in sorted(self._sequence_headers, reverse=True))
        return chunks

    def same_configuration(self, newcomer: Framing) -> bool:
        if not isinstance(newcomer, FlvFraming):
            return False
        return {k: c.data for k, c in newcomer._sequence_headers.items()} == {
            k: c.data for k, c in self._sequence_headers.items()
        }

    def resume(self, newcomer: Framing, first: MediaPacket) -> int:
        if isinstance(newcomer, FlvFraming) and newcomer._metadata is not None:
            self._metadata = newcomer._metadata
        offset = 0
        if self._last_out_ts:
            offset = max(self._last_out_ts.values()) + self._resume_gap_ms - first.timestamp_ms
        self._ts_offset = offset
        return offset

    def compatible(self, newcomer: Framing) -> bool:
        if not isinstance(newcomer, FlvFraming):
            return False
        mine, theirs = self._config_packets, newcomer._config_packets
        if mine.keys() != theirs.keys():
            return False  # a track appearing or vanishing: the push's muxer was set up for these
        return all(_flv_codec(k, mine[k].payload) == _flv_codec(k, theirs[k].payload) for k in mine)

    def configuration_changes(self, newcomer: Framing) -> list[MediaPacket]:
        if not isinstance(newcomer, FlvFraming):
            return []
        return [
            packet
            for kind, packet in sorted(newcomer._config_packets.items(), reverse=True)
            if kind not in self._config_packets or self._config_packets[kind].payload != packet.payload
        ]


def _flv_codec(kind: MediaKind, payload: bytes) -> bytes:
    """What names the codec of an FLV audio/video tag body: the codec id nibble, or with enhanced RTMP's
    extended header the FourCC that follows the first byte."""
    if not payload:
        return b""
    first = payload[0]
    if kind is MediaKind.VIDEO:
        return payload[1:5] if first & 0x80 else bytes([first & 0x0F])
    sound_format = first >> 4
    return payload[1:5] if sound_format == 9 else bytes([sound_format])


class MpegTsFraming:
    """MPEG-TS for SRT ingest: packets pass as received; owns the last PAT/PMT packet of each PID.

    TS packets are never rewritten (nothing is repackaged before ffmpeg), so a return changes nothing
    here: the new connection's clocks and continuity counters reach the pushes as they are.
    """

    def __init__(self) -> None:
        self._tables: dict[int, Chunk] = {}
        self._has_video = False

    @property
    def has_video(self) -> bool:
        return self._has_video

    @property
    def ready_to_compare(self) -> bool:
        return bool(self._tables)  # TS media before a PAT/PMT cannot be judged or decoded

    def frame(self, packet: MediaPacket, into: list[bytes]) -> int:
        if packet.keyframe:
            self._has_video = True
        if packet.config:
            self.keep_configuration(packet)
        into.append(packet.payload)
        return packet.timestamp_ms

    def keep_configuration(self, packet: MediaPacket) -> None:
        data = packet.payload
        for pos in range(0, len(data) - TS_PACKET_SIZE + 1, TS_PACKET_SIZE):
            ts_packet = data[pos : pos + TS_PACKET_SIZE]
            self._tables[packet_pid(ts_packet)] = Chunk(ts_packet, packet.timestamp_ms, sync=False, config=True)

    def header_chunks(self) -> list[Chunk]:
        return list(self._tables.values())

    def same_configuration(self, newcomer: Framing) -> bool:
        if not isinstance(newcomer, MpegTsFraming):
            return False
        return {pid: without_continuity(c.data) for pid, c in newcomer._tables.items()} == {
            pid: without_continuity(c.data) for pid, c in self._tables.items()
        }

    def resume(self, newcomer: Framing, first: MediaPacket) -> int:
        return 0

    def compatible(self, newcomer: Framing) -> bool:
        return self.same_configuration(newcomer)

    def configuration_changes(self, newcomer: Framing) -> list[MediaPacket]:
        return []  # compatible means the same tables; the newcomer repeats them in its own stream
