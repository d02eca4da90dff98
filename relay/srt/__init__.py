"""SRT through libsrt: the ctypes binding (`libsrt`), streamid parsing, handshake admission and the listener."""

from relay.srt.libsrt import LinkStats, SrtError, SrtUnavailable
from relay.srt.streamid import InvalidStreamId, parse_streamid

__all__ = ["InvalidStreamId", "LinkStats", "SrtError", "SrtUnavailable", "parse_streamid"]
