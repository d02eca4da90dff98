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
    backup_rtmp: str = ""
    """The same for the backup input (`<id>b`, Gcore's `backup_push_url`)."""
    backup_rtmps: str | None = None
    backup_srt: str | None = None


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
        """Main and backup ingest URLs; the backup's key is the id followed by `b` (Gcore's form:
        `rtmp://HOST/in/123b?token`, `srt://HOST:PORT?streamid=123b#token`)."""
        rtmp, rtmps, srt = self._urls(str(stream_id), token)
        backup_rtmp, backup_rtmps, backup_srt = self._urls(f"{stream_id}b", token)
        return PushUrls(rtmp, rtmps, srt, backup_rtmp, backup_rtmps, backup_srt)

    def _urls(self, ident: str, token: str) -> tuple[str, str | None, str | None]:
        host = self.host
        return (
            f"rtmp://{host}:{self.rtmp_port}/in/{ident}?{token}",
            f"rtmps://{host}:{self.rtmps_port}/in/{ident}?{token}" if self.rtmps_port else None,
            f"srt://{host}:{self.srt_port}?streamid={ident}#{token}" if self.srt_port else None,
        )
