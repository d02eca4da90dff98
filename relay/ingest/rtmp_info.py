"""RTMP stream info: what a publisher's stream looks like, from its onMetaData and its first tags.

Pure (no I/O): the connection feeds it metadata values and codec configuration packets and pushes
whatever `merged()` returns to the sink.
"""

from __future__ import annotations

from typing import Any

from relay.ingest.gate import StreamInfo
from relay.media.avc import sps_from_flv_video
from relay.media.packets import MediaKind, MediaPacket

_VIDEO_CODECS = {2: "h263", 4: "vp6", 5: "vp6a", 7: "h264", 12: "hevc", 13: "av1"}
_AUDIO_CODECS = {2: "mp3", 10: "aac", 11: "speex", 14: "mp3", 1: "adpcm", 3: "pcm", 7: "g711a", 8: "g711u"}
_FOURCC_CODECS = {
    "avc1": "h264",
    "hvc1": "hevc",
    "av01": "av1",
    "vp09": "vp9",
    "vp08": "vp8",
    "opus": "opus",
    "mp4a": "aac",
    ".mp3": "mp3",
    "ac-3": "ac3",
    "ec-3": "eac3",
    "flac": "flac",
}


def _codec_name(value: Any, legacy: dict[int, str]) -> str | None:
    if isinstance(value, str):
        return _FOURCC_CODECS.get(value.lower(), value.lower())
    if isinstance(value, float | int) and value >= 0:
        number = int(value)
        if number > 255:  # enhanced RTMP writes the FourCC as a 32-bit number
            fourcc = number.to_bytes(4, "big").decode("latin-1").lower()
            return _FOURCC_CODECS.get(fourcc, fourcc)
        return legacy.get(number)
    return None


def _positive_int(value: Any) -> int | None:
    if isinstance(value, float | int) and 0 < value < 1 << 20:
        return int(value)
    return None


class InfoTracker:
    """Builds StreamInfo from metadata first, the AVC SPS and first tags second."""

    def __init__(self) -> None:
        self.meta = StreamInfo()
        self.sps = StreamInfo()
        self.current = StreamInfo()

    def from_metadata(self, values: dict[str, Any]) -> None:
        frame_rate = values.get("framerate", values.get("videoframerate"))
        encoder = values.get("encoder")
        self.meta = StreamInfo(
            video_width=_positive_int(values.get("width")),
            video_height=_positive_int(values.get("height")),
            frame_rate=float(frame_rate) if isinstance(frame_rate, float | int) and frame_rate > 0 else None,
            video_codec=_codec_name(values.get("videocodecid"), _VIDEO_CODECS),
            audio_codec=_codec_name(values.get("audiocodecid"), _AUDIO_CODECS),
            extra={"encoder": encoder[:128]} if isinstance(encoder, str) else {},
        )

    def from_packet(self, packet: MediaPacket) -> None:
        payload = packet.payload
        if not packet.config or len(payload) < 5:
            return
        if packet.kind is MediaKind.VIDEO:
            if payload[0] & 0x80:
                codec = _codec_name(payload[1:5].decode("latin-1"), {})
            else:
                codec = _VIDEO_CODECS.get(payload[0] & 0x0F)
            sps = sps_from_flv_video(payload)
            self.sps = StreamInfo(
                video_width=sps.width if sps else self.sps.video_width,
                video_height=sps.height if sps else self.sps.video_height,
                frame_rate=sps.frame_rate if sps else self.sps.frame_rate,
                video_codec=codec,
                audio_codec=self.sps.audio_codec,
            )
        elif packet.kind is MediaKind.AUDIO:
            sound_format = payload[0] >> 4
            codec = (
                _codec_name(payload[1:5].decode("latin-1"), {})
                if sound_format == 9
                else _AUDIO_CODECS.get(sound_format)
            )
            self.sps = StreamInfo(
                self.sps.video_width, self.sps.video_height, self.sps.frame_rate, self.sps.video_codec, codec
            )

    def merged(self) -> StreamInfo | None:
        """The combined info if it changed since the last call, else None."""
        m, s = self.meta, self.sps
        info = StreamInfo(
            video_width=m.video_width or s.video_width,
            video_height=m.video_height or s.video_height,
            frame_rate=m.frame_rate or s.frame_rate,
            video_codec=m.video_codec or s.video_codec,
            audio_codec=m.audio_codec or s.audio_codec,
            extra=dict(m.extra),
        )
        if info == self.current:
            return None
        self.current = info
        return info
