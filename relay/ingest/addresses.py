"""Where encoders publish: the ingest URLs of a stream, from the public host and the bound ports."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PushUrls:
    """A stream's ingest URLs; each carries the stream's token (secret: never log them)."""

    rtmp: str
    rtmps: str | None
    """None while RTMPS ingest is off (no certificate)."""
    srt: str | None
    """None while SRT ingest is off (disabled, or libsrt missing): no URL that cannot work."""


@dataclass(frozen=True, slots=True)
class IngestAddresses:
    """The host written into push URLs and the ports the ingest listeners really bound."""

    public_host: str
    rtmp_port: int
    rtmps_port: int | None = None
    srt_port: int | None = None

    @property
    def host(self) -> str:
        """The host as it goes into a URL (an IPv6 literal in brackets)."""
        host = self.public_host
        return f"[{host}]" if ":" in host and not host.startswith("[") else host

    def push_urls(self, stream_id: int, token: str) -> PushUrls:
        host = self.host
        return PushUrls(
            rtmp=f"rtmp://{host}:{self.rtmp_port}/in/{stream_id}?{token}",
            rtmps=f"rtmps://{host}:{self.rtmps_port}/in/{stream_id}?{token}" if self.rtmps_port else None,
            srt=f"srt://{host}:{self.srt_port}?streamid={stream_id}#{token}" if self.srt_port else None,
        )
