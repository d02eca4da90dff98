"""Relay settings: embedded defaults, overridden by environment variables, overridden by flags.

Every duration and size names its unit. Settings are a frozen value passed to whatever needs them;
nothing reads the environment after start-up.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from relay.limits import ClientLimits, Limits, LimitsError, parse_client_limits
from relay.policy import parse_rules


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can configure. Field docs are the README's configuration table."""

    data_dir: Path = Path("data")
    database_url: str | None = field(default=None, repr=False)
    """`postgresql://user:password@host:port/db`: definitions in PostgreSQL, shared by several nodes;
    None keeps them in the SQLite file under `data_dir`. May hold a password: never logged."""
    database_resync_seconds: float = 30.0
    """With PostgreSQL: how often the whole definitions are compared with this node's copy, a safety net
    under the change notifications."""
    database_wait_seconds: float = 30.0
    """With PostgreSQL: how long a starting node keeps trying a database it cannot reach (one started beside
    it, as by docker compose) before it gives up; 0: one try."""
    media_bind: str = "0.0.0.0"
    api_bind: str = "127.0.0.1"
    http_port: int = 8080
    rtmp_port: int = 1935
    rtmps_port: int = 1936
    srt_port: int = 5001
    public_host: str = "127.0.0.1"
    public_rtmp_port: int = 0
    """The ports written into push URLs (0: the port bound): a balancer's in front of several nodes."""
    public_rtmps_port: int = 0
    public_srt_port: int = 0
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    api_key: str | None = field(default=None, repr=False)
    ffmpeg_path: str | None = None
    push_ffmpeg_path: str | None = None
    """The pushes' own ffmpeg (None: `ffmpeg_path`'s), e.g. `make lean-ffmpeg`'s: only what a push needs."""
    log_level: str = "INFO"
    log_format: str = "text"
    event_loop: str = "asyncio"
    """The node's event loops: "asyncio" (Python's own) or "uvloop" (libuv's, `pip install uvloop`): about a
    tenth less CPU in the relay process alone, within the runs' spread in the whole tree at 16 destinations;
    its wake-ups cost about half of asyncio's, which counts with `merge_interval_ms` (docs/benchmarks.md)."""
    srt_enabled: bool = True
    srt_latency_ms: int = 120
    srt_max_connections: int = 64
    srt_handshake_timeout_seconds: float = 3.0
    publisher_grace_seconds: float = 10.0
    takeover_idle_seconds: float = 4.0
    input_switch_silence_seconds: float = 1.0
    """A stream's feeding input (main or backup) silent this long while the other publishes: switch."""
    reconcile_interval_seconds: float = 5.0
    max_streams_per_client: int = 100
    max_restreams_per_stream: int = 20
    max_pushes_per_client: int = 20
    max_pushes: int = 64
    """Node-wide cap on running pushes, shared fairly between clients."""
    client_limits: str = ""
    """Per-client overrides of the three per-client limits: `2:streams=10,pushes=4;7:restreams_per_stream=50`."""
    api_auth_failures_before_delay: int = 10
    api_auth_failure_window_seconds: float = 10.0
    api_auth_failure_delay_seconds: float = 1.0
    destination_allow: tuple[str, ...] = ()
    """Networks and host names every client may push to, loopback and private ones included."""
    destination_deny: tuple[str, ...] = ()
    """Networks and host names no client may push to, the operator's included (relay/policy.py)."""
    # Before authentication (issue 10): what anonymous peers may hold. Documented in the README's table.
    rtmp_max_unauthenticated_connections: int = 64
    rtmp_max_connections: int = 256
    """RTMP(S) connections in all, per listener."""
    rtmp_max_connections_per_address: int = 16
    """RTMP(S) connections from one peer address: raise it behind a balancer (every publisher then comes
    from the balancer's address) or for many encoders behind one NAT."""
    rtmp_preauth_timeout_seconds: float = 5.0
    rtmp_preauth_max_message_bytes: int = 32 << 10
    rtmp_preauth_max_partial_bytes: int = 64 << 10
    rtmp_idle_timeout_seconds: float = 30.0
    """A publishing RTMP(S) connection silent this long is ended as a drop (grace period): how long a
    publisher whose link went dead (no FIN, no RST) holds the stream before the grace period starts."""
    srt_handshakes_per_second_per_address: float = 5.0
    srt_handshake_burst_per_address: int = 20
    http_max_connections: int = 512
    http_header_timeout_seconds: float = 5.0
    http_body_timeout_seconds: float = 10.0
    http_keepalive_timeout_seconds: float = 15.0
    event_feeds_reserved_per_client: int = 4
    # Pulled sources (issue 11): how a stream with `pull: true` is fed. Documented in the README's table.
    pull_retry_max_delay_seconds: float = 10.0
    """Cap of the backoff between pull attempts (alternatives tried in turn)."""
    pull_stall_timeout_seconds: float = 10.0
    """A pull that delivers no media for this long is restarted."""
    # Several nodes (issue 12): ownership of streams by leases in PostgreSQL (with `database_url`).
    node_id: str | None = None
    """This node's name in the cluster; None: `<host name>:<http port>` (`resolved_node_id`)."""
    lease_seconds: float = 10.0
    """How long a stream's lease lasts in the database unless renewed."""
    lease_renew_seconds: float = 2.0
    """How often a node renews every lease it holds (one statement)."""
    lease_margin_seconds: float = 2.0
    """A node stops a stream this long before its lease could expire when renewals do not come back."""

    @property
    def resolved_node_id(self) -> str:
        """RELAY_NODE_ID, else `<host name>:<http port>`; with port 0 (a port chosen at bind time, tests)
        a random suffix instead of the port: ask once and keep the answer."""
        if self.node_id:
            return self.node_id
        return f"{socket.gethostname()}:{self.http_port or 'any-' + uuid.uuid4().hex[:8]}"

    # SRT destinations (issue 14): who sends, and how soon a dead destination is noticed.
    srt_push: str = "relay"
    """"relay": the push's ffmpeg writes MPEG-TS to a pipe and the relay's own libsrt caller sends it
    (settable peer idle timeout, exact end, link statistics in the status); "ffmpeg": ffmpeg's SRT output."""
    srt_push_peer_idle_timeout_ms: int = 1000
    """With `srt_push` "relay": a destination that acknowledges nothing this long while media waits for it
    counts as gone and the push restarts (ffmpeg's SRT output: ~5 s, libsrt's floor)."""

    # Pushes that tell the truth (issue 13): what the kernel says of each destination's connection.
    push_ack_stall_seconds: float = 4.0
    """An RTMP(S) destination that acknowledges nothing for this long while input flows is restarted."""
    push_max_behind_seconds: float = 5.0
    """A destination further behind live than this is handled by `push_behind_policy`."""
    push_behind_policy: str = "skip"
    """`skip` (drop its queue, carry on from the next keyframe) or `restart` (start it again at once)."""
    push_send_buffer_bytes: int = 256 * 1024
    """The kernel send buffer asked for each RTMP(S) push (Linux doubles it); 0: Linux autotuning."""
    merge_interval_ms: int = 0
    """0: media is read from an RTMP publisher and written to the pushes as it comes (a frame at a time).
    1-1000: both at most this often, what came in between in one read and one write a push (SRS's
    `mw_latency`; RTMPS and SRT publishers and pulls: the writes only): less CPU per stream and per
    destination for up to that much delay."""

    @property
    def rtmps_enabled(self) -> bool:
        return self.tls_cert_file is not None and self.tls_key_file is not None

    @property
    def database_path(self) -> Path:
        return self.data_dir / "relay.sqlite3"

    def limits(self) -> Limits:
        """Every client's limits and the node's push cap; raises ConfigError for a malformed override."""
        defaults = ClientLimits(
            streams=self.max_streams_per_client,
            restreams_per_stream=self.max_restreams_per_stream,
            pushes=self.max_pushes_per_client,
        )
        try:
            overrides = parse_client_limits(self.client_limits, defaults)
        except LimitsError as exc:
            raise ConfigError(f"RELAY_CLIENT_LIMITS: {exc}") from exc
        return Limits(defaults, overrides, node_pushes=self.max_pushes)


# Environment variable -> settings field. RELAY_BIND sets both listeners' address when given; its
# absence keeps the safe split (media on all interfaces, the API on loopback).
ENVIRONMENT: dict[str, str] = {
    "RELAY_DATA_DIR": "data_dir",
    "RELAY_DATABASE_URL": "database_url",
    "RELAY_DATABASE_RESYNC_SECONDS": "database_resync_seconds",
    "RELAY_DATABASE_WAIT_SECONDS": "database_wait_seconds",
    "RELAY_API_BIND": "api_bind",
    "RELAY_HTTP_PORT": "http_port",
    "RELAY_RTMP_PORT": "rtmp_port",
    "RELAY_RTMPS_PORT": "rtmps_port",
    "RELAY_SRT_PORT": "srt_port",
    "RELAY_PUBLIC_HOST": "public_host",
    "RELAY_PUBLIC_RTMP_PORT": "public_rtmp_port",
    "RELAY_PUBLIC_RTMPS_PORT": "public_rtmps_port",
    "RELAY_PUBLIC_SRT_PORT": "public_srt_port",
    "RELAY_TLS_CERT": "tls_cert_file",
    "RELAY_TLS_KEY": "tls_key_file",
    "RELAY_API_KEY": "api_key",
    "RELAY_FFMPEG": "ffmpeg_path",
    "RELAY_PUSH_FFMPEG": "push_ffmpeg_path",
    "RELAY_LOG_LEVEL": "log_level",
    "RELAY_LOG_FORMAT": "log_format",
    "RELAY_EVENT_LOOP": "event_loop",
    "RELAY_SRT": "srt_enabled",
    "RELAY_SRT_LATENCY_MS": "srt_latency_ms",
    "RELAY_SRT_MAX_CONNECTIONS": "srt_max_connections",
    "RELAY_SRT_HANDSHAKE_TIMEOUT_SECONDS": "srt_handshake_timeout_seconds",
    "RELAY_PUBLISHER_GRACE_SECONDS": "publisher_grace_seconds",
    "RELAY_TAKEOVER_IDLE_SECONDS": "takeover_idle_seconds",
    "RELAY_INPUT_SWITCH_SILENCE_SECONDS": "input_switch_silence_seconds",
    "RELAY_MAX_STREAMS_PER_CLIENT": "max_streams_per_client",
    "RELAY_MAX_RESTREAMS_PER_STREAM": "max_restreams_per_stream",
    "RELAY_MAX_PUSHES_PER_CLIENT": "max_pushes_per_client",
    "RELAY_MAX_PUSHES": "max_pushes",
    "RELAY_CLIENT_LIMITS": "client_limits",
    "RELAY_API_AUTH_FAILURES_BEFORE_DELAY": "api_auth_failures_before_delay",
    "RELAY_API_AUTH_FAILURE_WINDOW_SECONDS": "api_auth_failure_window_seconds",
    "RELAY_API_AUTH_FAILURE_DELAY_SECONDS": "api_auth_failure_delay_seconds",
    "RELAY_DESTINATION_ALLOW": "destination_allow",
    "RELAY_DESTINATION_DENY": "destination_deny",
    "RELAY_RTMP_MAX_UNAUTHENTICATED_CONNECTIONS": "rtmp_max_unauthenticated_connections",
    "RELAY_RTMP_MAX_CONNECTIONS": "rtmp_max_connections",
    "RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS": "rtmp_max_connections_per_address",
    "RELAY_RTMP_PREAUTH_TIMEOUT_SECONDS": "rtmp_preauth_timeout_seconds",
    "RELAY_RTMP_PREAUTH_MAX_MESSAGE_BYTES": "rtmp_preauth_max_message_bytes",
    "RELAY_RTMP_PREAUTH_MAX_PARTIAL_BYTES": "rtmp_preauth_max_partial_bytes",
    "RELAY_RTMP_IDLE_TIMEOUT_SECONDS": "rtmp_idle_timeout_seconds",
    "RELAY_SRT_HANDSHAKES_PER_SECOND_PER_ADDRESS": "srt_handshakes_per_second_per_address",
    "RELAY_SRT_HANDSHAKE_BURST_PER_ADDRESS": "srt_handshake_burst_per_address",
    "RELAY_HTTP_MAX_CONNECTIONS": "http_max_connections",
    "RELAY_HTTP_HEADER_TIMEOUT_SECONDS": "http_header_timeout_seconds",
    "RELAY_HTTP_BODY_TIMEOUT_SECONDS": "http_body_timeout_seconds",
    "RELAY_HTTP_KEEPALIVE_TIMEOUT_SECONDS": "http_keepalive_timeout_seconds",
    "RELAY_EVENT_FEEDS_RESERVED_PER_CLIENT": "event_feeds_reserved_per_client",
    "RELAY_PULL_RETRY_MAX_DELAY_SECONDS": "pull_retry_max_delay_seconds",
    "RELAY_PULL_STALL_TIMEOUT_SECONDS": "pull_stall_timeout_seconds",
    "RELAY_PUSH_ACK_STALL_SECONDS": "push_ack_stall_seconds",
    "RELAY_PUSH_MAX_BEHIND_SECONDS": "push_max_behind_seconds",
    "RELAY_PUSH_BEHIND_POLICY": "push_behind_policy",
    "RELAY_PUSH_SEND_BUFFER_BYTES": "push_send_buffer_bytes",
    "RELAY_MERGE_INTERVAL_MS": "merge_interval_ms",
    "RELAY_NODE_ID": "node_id",
    "RELAY_LEASE_SECONDS": "lease_seconds",
    "RELAY_LEASE_RENEW_SECONDS": "lease_renew_seconds",
    "RELAY_LEASE_MARGIN_SECONDS": "lease_margin_seconds",
    "RELAY_SRT_PUSH": "srt_push",
    "RELAY_SRT_PUSH_PEER_IDLE_TIMEOUT_MS": "srt_push_peer_idle_timeout_ms",
}


class ConfigError(ValueError):
    """A setting has a value the relay cannot use; the message names the setting."""


MIN_API_KEY_CHARACTERS = 32
"""RELAY_API_KEY is taken as given and is the operator's key to every client's definitions: 32
characters of a random alphabet put it out of reach of guessing (generated keys have 43)."""


def api_key_problem(key: str) -> str | None:
    """Why `key` cannot be RELAY_API_KEY, or None. The answer never quotes the key (it goes to stderr)."""
    if len(key) < MIN_API_KEY_CHARACTERS:
        return (
            f"must be at least {MIN_API_KEY_CHARACTERS} characters; make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if any(char.isspace() or not char.isprintable() for char in key):
        # A trailing newline from a secret file would make a key no Authorization header can carry.
        return "must not contain spaces, line breaks or control characters"
    return None


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
        if kind == "tuple[str, ...]":
            # A list: entries separated by commas or whitespace. Checked here, so a typo stops the start.
            entries = tuple(e for e in raw.replace(",", " ").split() if e)
            parse_rules(entries)
            return entries
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
    for name in (
        "RELAY_API_AUTH_FAILURES_BEFORE_DELAY",
        "RELAY_API_AUTH_FAILURE_WINDOW_SECONDS",
        "RELAY_DATABASE_WAIT_SECONDS",
    ):
        if changes.get(ENVIRONMENT[name], 0) < 0:
            raise ConfigError(f"{name}: must not be negative")
    if not 0 <= changes.get("api_auth_failure_delay_seconds", 0) <= 10:
        # A held answer keeps a socket open; more than the graceful-stop time would also hold the stop.
        raise ConfigError("RELAY_API_AUTH_FAILURE_DELAY_SECONDS: expected 0 to 10")
    for name in (
        "RELAY_PULL_RETRY_MAX_DELAY_SECONDS",
        "RELAY_PULL_STALL_TIMEOUT_SECONDS",
        "RELAY_RTMP_IDLE_TIMEOUT_SECONDS",
        "RELAY_PUSH_ACK_STALL_SECONDS",
        "RELAY_PUSH_MAX_BEHIND_SECONDS",
        "RELAY_RTMP_MAX_CONNECTIONS",
        "RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS",
    ):
        if ENVIRONMENT[name] in changes and changes[ENVIRONMENT[name]] <= 0:
            raise ConfigError(f"{name}: must be positive")
    if changes.get("push_behind_policy", settings.push_behind_policy) not in ("skip", "restart"):
        raise ConfigError("RELAY_PUSH_BEHIND_POLICY: expected skip or restart")
    if not 0 <= changes.get("merge_interval_ms", 0) <= 1000:
        raise ConfigError("RELAY_MERGE_INTERVAL_MS: expected 0 to 1000")
    if changes.get("push_send_buffer_bytes", 0) < 0:
        raise ConfigError("RELAY_PUSH_SEND_BUFFER_BYTES: must not be negative")
    lease_fields = ("lease_seconds", "lease_renew_seconds", "lease_margin_seconds")
    lease = [changes.get(name, getattr(settings, name)) for name in lease_fields]
    if min(lease) <= 0 or lease[1] + lease[2] >= lease[0]:
        raise ConfigError(
            "RELAY_LEASE_SECONDS, RELAY_LEASE_RENEW_SECONDS, RELAY_LEASE_MARGIN_SECONDS: "
            "expected positive values with renew + margin < lease"
        )
    event_loop = changes.get("event_loop", settings.event_loop)
    if event_loop not in ("asyncio", "uvloop"):
        raise ConfigError("RELAY_EVENT_LOOP: expected asyncio or uvloop")
    if event_loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        raise ConfigError("RELAY_EVENT_LOOP: uvloop is not installed (pip install uvloop)")
    if changes.get("srt_push", settings.srt_push) not in ("relay", "ffmpeg"):
        raise ConfigError("RELAY_SRT_PUSH: expected relay or ffmpeg")
    if not 300 <= changes.get("srt_push_peer_idle_timeout_ms", settings.srt_push_peer_idle_timeout_ms) <= 60_000:
        # A live receiver acknowledges every 10 ms; below a few hundred ms, a long RTT's jitter would count.
        raise ConfigError("RELAY_SRT_PUSH_PEER_IDLE_TIMEOUT_MS: expected 300 to 60000")
    api_key = changes.get("api_key")
    if api_key is not None and (problem := api_key_problem(api_key)):
        raise ConfigError(f"RELAY_API_KEY: {problem}")
    result = replace(settings, **changes)
    result.limits()  # a malformed RELAY_CLIENT_LIMITS is refused at start, with the setting named
    return result


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    """Apply command-line overrides; None means "not given"."""
    return replace(settings, **{k: v for k, v in overrides.items() if v is not None})
