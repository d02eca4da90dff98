"""Settings from the environment and from command-line flags (relay.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, Settings, from_environment, with_overrides


def test_defaults_are_safe_and_documented() -> None:
    s = from_environment({})
    assert (s.media_bind, s.api_bind) == ("0.0.0.0", "127.0.0.1")
    assert (s.http_port, s.rtmp_port, s.rtmps_port, s.srt_port) == (8080, 1935, 1936, 5001)
    assert s.data_dir == Path("data") and not s.rtmps_enabled and s.srt_enabled


def test_environment_overrides() -> None:
    s = from_environment(
        {
            "RELAY_BIND": "10.1.2.3",
            "RELAY_HTTP_PORT": "9000",
            "RELAY_PUBLIC_HOST": "relay.example.com",
            "RELAY_TLS_CERT": "/c.pem",
            "RELAY_TLS_KEY": "/k.pem",
            "RELAY_API_KEY": "1$abc",
            "RELAY_SRT": "off",
            "RELAY_DATA_DIR": "/var/lib/relay",
            "RELAY_FFMPEG": "/usr/bin/ffmpeg",
            "RELAY_LOG_FORMAT": "json",
        }
    )
    assert (s.media_bind, s.api_bind, s.http_port) == ("10.1.2.3", "10.1.2.3", 9000)
    assert s.public_host == "relay.example.com" and s.rtmps_enabled and not s.srt_enabled
    assert s.data_dir == Path("/var/lib/relay") and s.ffmpeg_path == "/usr/bin/ffmpeg"
    assert "1$abc" not in repr(s)  # the key stays out of reprs (and so out of logs of settings)
    assert from_environment({"RELAY_BIND": "0.0.0.0", "RELAY_API_BIND": "127.0.0.1"}).api_bind == "127.0.0.1"


@pytest.mark.parametrize(
    "env,name",
    [
        ({"RELAY_HTTP_PORT": "http"}, "RELAY_HTTP_PORT"),
        ({"RELAY_RTMP_PORT": "70000"}, "RELAY_RTMP_PORT"),
        ({"RELAY_SRT": "maybe"}, "RELAY_SRT"),
        ({"RELAY_LOG_FORMAT": "xml"}, "RELAY_LOG_FORMAT"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_environment(env)


def test_flags_override_only_when_given() -> None:
    base = Settings(http_port=1)
    assert with_overrides(base, http_port=None, rtmp_port=2) == Settings(http_port=1, rtmp_port=2)


def test_preauth_limits_come_from_the_environment_and_are_in_the_readme() -> None:
    env = {
        "RELAY_RTMP_MAX_UNAUTHENTICATED_CONNECTIONS": "8",
        "RELAY_RTMP_PREAUTH_TIMEOUT_SECONDS": "2.5",
        "RELAY_RTMP_PREAUTH_MAX_MESSAGE_BYTES": "4096",
        "RELAY_RTMP_PREAUTH_MAX_PARTIAL_BYTES": "8192",
        "RELAY_SRT_HANDSHAKES_PER_SECOND_PER_ADDRESS": "0.5",
        "RELAY_SRT_HANDSHAKE_BURST_PER_ADDRESS": "3",
        "RELAY_HTTP_MAX_CONNECTIONS": "64",
        "RELAY_HTTP_HEADER_TIMEOUT_SECONDS": "1",
        "RELAY_HTTP_BODY_TIMEOUT_SECONDS": "2",
        "RELAY_HTTP_KEEPALIVE_TIMEOUT_SECONDS": "3",
        "RELAY_EVENT_FEEDS_RESERVED_PER_CLIENT": "1",
    }
    s = from_environment(env)
    assert (s.rtmp_max_unauthenticated_connections, s.rtmp_preauth_timeout_seconds) == (8, 2.5)
    assert (s.rtmp_preauth_max_message_bytes, s.rtmp_preauth_max_partial_bytes) == (4096, 8192)
    assert (s.srt_handshakes_per_second_per_address, s.srt_handshake_burst_per_address) == (0.5, 3)
    assert (s.http_max_connections, s.http_header_timeout_seconds, s.http_body_timeout_seconds) == (64, 1.0, 2.0)
    assert (s.http_keepalive_timeout_seconds, s.event_feeds_reserved_per_client) == (3.0, 1)
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"| `{name}` |" in readme for name in env)
