"""What an RTMP(S) server listens on and tolerates from a client: its timeouts and limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.rtmp.amf0 import AmfLimits
from relay.rtmp.chunks import ChunkLimits
from relay.rtmp.session import SessionConfig


@dataclass(frozen=True, slots=True)
class RtmpServerSettings:
    """Where the server listens and what it tolerates from a client."""

    host: str = "0.0.0.0"
    """Listen address (tests use 127.0.0.1)."""
    port: int = 1935
    """Listen port; 0 picks a free one (see `RtmpServer.port`)."""
    handshake_timeout_seconds: float = 5.0
    """From accept to the end of the RTMP handshake (the TLS handshake first for RTMPS); also how long a
    refused client is given to take its refusal before the socket is closed."""
    preauth_timeout_seconds: float = 5.0
    """From accept to an accepted publish (TLS and RTMP handshakes, connect, publish): the longest an
    anonymous connection holds a slot. Encoders need well under a second on a sane network."""
    idle_timeout_seconds: float = 30.0
    """Longest silence from a connected client."""
    max_message_bytes: int = 8 << 20
    """Largest RTMP message accepted."""
    max_chunk_size_bytes: int = 1 << 20
    """Largest Set Chunk Size accepted."""
    max_partial_bytes: int = 16 << 20
    """Bytes held in partially received messages of one connection."""
    max_connections: int = 256
    """Open connections in total; more are closed at once."""
    max_connections_per_address: int = 16
    """Open connections from one IP address (one /64 for IPv6, see `relay.ingest.peers`)."""
    max_unauthenticated_connections: int = 64
    """Open connections not publishing yet. When this budget (or the total, or the address's limit) is
    full, one of them is closed to make room for the new one (the oldest of the peer holding the most,
    see `relay.ingest.rtmp_server`): however many anonymous clients hold connections open, an encoder
    gets in."""
    preauth_max_message_bytes: int = 32 << 10
    """Largest RTMP message accepted before a publish is accepted (a publish's commands take a few
    hundred bytes); `max_message_bytes` applies from then on."""
    preauth_max_partial_bytes: int = 64 << 10
    """Bytes held in partially received messages before a publish is accepted; then `max_partial_bytes`."""
    read_chunk_bytes: int = 64 * 1024
    """Most bytes read from a socket before processing them."""
    merge_interval_seconds: float = 0.0
    """> 0 (`RELAY_MERGE_INTERVAL_MS`): once a publish is accepted (plain TCP), a read that left the socket drained is
    followed by this long without reading: the next read brings what came meanwhile, in one loop turn and
    one write a push (the hub's writes are merged the same way)."""
    amf_limits: AmfLimits = field(default_factory=AmfLimits)
    """Bounds on AMF0 decoding (nesting, element count, string size)."""

    def session_config(self) -> SessionConfig:
        """The sans-I/O session's limits derived from these settings."""
        return SessionConfig(
            chunk_limits=ChunkLimits(
                max_chunk_size_bytes=self.max_chunk_size_bytes,
                max_message_bytes=self.max_message_bytes,
                max_partial_bytes=self.max_partial_bytes,
            ),
            preauth_chunk_limits=ChunkLimits(
                max_chunk_size_bytes=self.max_chunk_size_bytes,
                max_message_bytes=self.preauth_max_message_bytes,
                max_partial_bytes=self.preauth_max_partial_bytes,
            ),
            amf_limits=self.amf_limits,
            max_buffered_bytes=self.read_chunk_bytes + 4096,
        )
