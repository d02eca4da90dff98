"""Relay settings: embedded defaults, overridden by environment variables, overridden by flags.

Every duration and size names its unit. Settings are a frozen value passed to whatever needs them;
nothing reads the environment after start-up.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can configure. Field docs are the README's configuration table."""

    data_dir: Path = Path("data")
    media_bind: str = "0.0.0.0"
    api_bind: str = "127.0.0.1"
    http_port: int = 8080
    rtmp_port: int = 1935
    rtmps_port: int = 1936
    srt_port: int = 5001
    public_host: str = "127.0.0.1"
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    ffmpeg_path: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    srt_enabled: bool = True
    srt_latency_ms: int = 120
    srt_max_connections: int = 64
    srt_handshake_timeout_seconds: float = 3.0
    publisher_grace_seconds: float = 10.0
    takeover_idle_seconds: float = 4.0
    reconcile_interval_seconds: float = 5.0
    # Before authentication (issue 10): what anonymous peers may hold. Documented in the README's table.
    rtmp_max_unauthenticated_connections: int = 64
    rtmp_preauth_timeout_seconds: float = 5.0
    rtmp_preauth_max_message_bytes: int = 32 << 10
    rtmp_preauth_max_partial_bytes: int = 64 << 10
    srt_handshakes_per_second_per_address: float = 5.0
    srt_handshake_burst_per_address: int = 20
    http_max_connections: int = 512
    http_header_timeout_seconds: float = 5.0
    http_body_timeout_seconds: float = 10.0
    http_keepalive_timeout_seconds: float = 15.0
    event_feeds_reserved_per_client: int = 4

    @property
    def rtmps_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "relay.sqlite3"


# Environment variable -> settings field. RELAY_BIND sets both listeners' address when given; its
# absence keeps the safe split (media on all interfaces, the API on loopback).
ENVIRONMENT: dict[str, str] = {
    "RELAY_DATA_DIR": "data_dir",
    "RELAY_API_BIND": "api_bind",
    "RELAY_HTTP_PORT": "http_port",
    "RELAY_RTMP_PORT": "rtmp_port",
    "RELAY_RTMPS_PORT": "rtmps_port",
    "RELAY_SRT_PORT": "srt_port",
    "RELAY_PUBLIC_HOST": "public_host",
    "RELAY_TLS_CERT": "tls_cert_file",
    "RELAY_TLS_KEY": "tls_key_file",
    "RELAY_API_KEY": "api_key",
    "RELAY_FFMPEG": "ffmpeg_path",
    "RELAY_LOG_LEVEL": "log_level",
    "RELAY_LOG_FORMAT": "log_format",
    "RELAY_SRT": "srt_enabled",
    "RELAY_SRT_LATENCY_MS": "srt_latency_ms",
    "RELAY_SRT_MAX_CONNECTIONS": "srt_max_connections",
    "RELAY_SRT_HANDSHAKE_TIMEOUT_SECONDS": "srt_handshake_timeout_seconds",
    "RELAY_PUBLISHER_GRACE_SECONDS": "publisher_grace_seconds",
    "RELAY_TAKEOVER_IDLE_SECONDS": "takeover_idle_seconds",
    "RELAY_RTMP_MAX_UNAUTHENTICATED_CONNECTIONS": "rtmp_max_unauthenticated_connections",
    "RELAY_RTMP_PREAUTH_TIMEOUT_SECONDS": "rtmp_preauth_timeout_seconds",
    "RELAY_RTMP_PREAUTH_MAX_MESSAGE_BYTES": "rtmp_preauth_max_message_bytes",
    "RELAY_RTMP_PREAUTH_MAX_PARTIAL_BYTES": "rtmp_preauth_max_partial_bytes",
    "RELAY_SRT_HANDSHAKES_PER_SECOND_PER_ADDRESS": "srt_handshakes_per_second_per_address",
    "RELAY_SRT_HANDSHAKE_BURST_PER_ADDRESS": "srt_handshake_burst_per_address",
    "RELAY_HTTP_MAX_CONNECTIONS": "http_max_connections",
    "RELAY_HTTP_HEADER_TIMEOUT_SECONDS": "http_header_timeout_seconds",
    "RELAY_HTTP_BODY_TIMEOUT_SECONDS": "http_body_timeout_seconds",
    "RELAY_HTTP_KEEPALIVE_TIMEOUT_SECONDS": "http_keepalive_timeout_seconds",
    "RELAY_EVENT_FEEDS_RESERVED_PER_CLIENT": "event_feeds_reserved_per_client",
}


class ConfigError(ValueError):
    """A setting has a value the relay cannot use; the message names the setting."""


def _convert(name: str, raw: str, target: Any) -> Any:
    kind = {f.name: f.type for f in fields(Settings)}[target]
    try:
        if kind == "int":
            value = int(raw)
            if target.endswith("_port") and not 0 <= value <= 65535:
                raise ValueError("not a port number")
            return value
        if kind == "float":
            return float(raw)
        if kind == "bool":
            lowered = raw.strip().lower()
            if lowered in {"1", "true", "yes", "on"}:
                return True
            if lowered in {"0", "false", "no", "off"}:
                return False
            raise ValueError("expected true or false")
        if kind in ("Path", "Path | None"):
            return Path(raw) if raw else None
        return raw or None if kind == "str | None" else raw
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from exc


def from_environment(env: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Settings from `env` (default: os.environ) laid over `base` (default: embedded defaults)."""
    env = os.environ if env is None else env
    settings = base or Settings()
    changes: dict[str, Any] = {}
    bind = env.get("RELAY_BIND")
    if bind:
        changes["media_bind"] = bind
        changes["api_bind"] = bind
    for name, target in ENVIRONMENT.items():
        if name in env:
            changes[target] = _convert(name, env[name], target)
    if changes.get("log_format", settings.log_format) not in ("text", "json"):
        raise ConfigError("RELAY_LOG_FORMAT: expected text or json")
    return replace(settings, **changes)


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Apply command-line overrides; None means "not given"."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
