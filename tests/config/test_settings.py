"""Settings from the environment and from command-line flags (relay.config)."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import MIN_API_KEY_CHARACTERS, ConfigError, Settings, from_environment, with_overrides

LONG_KEY = "1$" + "k" * (MIN_API_KEY_CHARACTERS - 2)


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
            "RELAY_API_KEY": LONG_KEY,
            "RELAY_SRT": "off",
            "RELAY_DATA_DIR": "/var/lib/relay",
            "RELAY_FFMPEG": "/usr/bin/ffmpeg",
            "RELAY_LOG_FORMAT": "json",
        }
    )
    assert (s.media_bind, s.api_bind, s.http_port) == ("10.1.2.3", "10.1.2.3", 9000)
    assert s.public_host == "relay.example.com" and s.rtmps_enabled and not s.srt_enabled
    assert s.data_dir == Path("/var/lib/relay") and s.ffmpeg_path == "/usr/bin/ffmpeg"
    assert s.api_key == LONG_KEY and LONG_KEY not in repr(s)  # out of reprs, and so of logged settings
    assert from_environment({"RELAY_BIND": "0.0.0.0", "RELAY_API_BIND": "127.0.0.1"}).api_bind == "127.0.0.1"


@pytest.mark.parametrize(
    "env,name",
    [
        ({"RELAY_HTTP_PORT": "http"}, "RELAY_HTTP_PORT"),
        ({"RELAY_RTMP_PORT": "70000"}, "RELAY_RTMP_PORT"),
        ({"RELAY_SRT": "maybe"}, "RELAY_SRT"),
        ({"RELAY_LOG_FORMAT": "xml"}, "RELAY_LOG_FORMAT"),
        ({"RELAY_API_AUTH_FAILURES_BEFORE_DELAY": "-1"}, "RELAY_API_AUTH_FAILURES_BEFORE_DELAY"),
        ({"RELAY_API_AUTH_FAILURE_WINDOW_SECONDS": "-5"}, "RELAY_API_AUTH_FAILURE_WINDOW_SECONDS"),
        ({"RELAY_API_AUTH_FAILURE_DELAY_SECONDS": "60"}, "RELAY_API_AUTH_FAILURE_DELAY_SECONDS"),
        ({"RELAY_SRT_PUSH": "gstreamer"}, "RELAY_SRT_PUSH"),
        ({"RELAY_EVENT_LOOP": "trio"}, "RELAY_EVENT_LOOP"),
        ({"RELAY_DATABASE_WAIT_SECONDS": "-1"}, "RELAY_DATABASE_WAIT_SECONDS"),
        ({"RELAY_SRT_PUSH_PEER_IDLE_TIMEOUT_MS": "50"}, "RELAY_SRT_PUSH_PEER_IDLE_TIMEOUT_MS"),
    ],
)
def test_bad_values_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        from_environment(env)


def test_flags_override_only_when_given() -> None:
    base = Settings(http_port=1)
    assert with_overrides(base, http_port=None, rtmp_port=2) == Settings(http_port=1, rtmp_port=2)


@pytest.mark.parametrize(
    "key,problem",
    [
        ("1$abc", "at least 32 characters"),
        (LONG_KEY[:-1], "at least 32 characters"),
        (LONG_KEY + "\n", "line breaks"),  # as read from a secret file
        ("1$" + "k" * 20 + " " + "k" * 20, "spaces"),
    ],
)
def test_an_unfit_api_key_is_refused_without_quoting_it(key: str, problem: str) -> None:
    with pytest.raises(ConfigError) as refused:
        from_environment({"RELAY_API_KEY": key})
    message = str(refused.value)
    assert message.startswith("RELAY_API_KEY: ") and problem in message and key.strip() not in message
    assert "\n" not in message  # one line on stderr


def test_an_empty_api_key_means_none() -> None:
    assert from_environment({"RELAY_API_KEY": ""}).api_key is None  # docker-compose's ${RELAY_API_KEY:-}
    assert from_environment({"RELAY_API_KEY": LONG_KEY}).api_key == LONG_KEY


def test_failed_authentication_settings() -> None:
    s = from_environment({})
    assert (s.api_auth_failures_before_delay, s.api_auth_failure_window_seconds) == (10, 10.0)
    assert s.api_auth_failure_delay_seconds == 1.0
    s = from_environment(
        {
            "RELAY_API_AUTH_FAILURES_BEFORE_DELAY": "20",
            "RELAY_API_AUTH_FAILURE_WINDOW_SECONDS": "30",
            "RELAY_API_AUTH_FAILURE_DELAY_SECONDS": "0",
        }
    )
    assert (s.api_auth_failures_before_delay, s.api_auth_failure_window_seconds) == (20, 30.0)
    assert s.api_auth_failure_delay_seconds == 0.0


def test_destination_lists_from_the_environment() -> None:
    s = from_environment(
        {"RELAY_DESTINATION_ALLOW": "10.0.0.0/8, media.lan *.corp.example", "RELAY_DESTINATION_DENY": ""}
    )
    assert s.destination_allow == ("10.0.0.0/8", "media.lan", "*.corp.example") and s.destination_deny == ()
    assert from_environment({}).destination_allow == () == from_environment({}).destination_deny
    with pytest.raises(ConfigError, match="RELAY_DESTINATION_DENY: 'no-such-host!' is not"):
        from_environment({"RELAY_DESTINATION_DENY": "169.254.169.254,no-such-host!"})


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


def test_pull_settings_come_from_the_environment_and_are_in_the_readme() -> None:
    env = {"RELAY_PULL_RETRY_MAX_DELAY_SECONDS": "4", "RELAY_PULL_STALL_TIMEOUT_SECONDS": "6.5"}
    s = from_environment(env)
    assert (s.pull_retry_max_delay_seconds, s.pull_stall_timeout_seconds) == (4.0, 6.5)
    defaults = from_environment({})
    assert (defaults.pull_retry_max_delay_seconds, defaults.pull_stall_timeout_seconds) == (10.0, 10.0)
    with pytest.raises(ConfigError, match="RELAY_PULL_STALL_TIMEOUT_SECONDS: must be positive"):
        from_environment({"RELAY_PULL_STALL_TIMEOUT_SECONDS": "0"})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"| `{name}` |" in readme for name in env)


def test_the_input_switch_silence_comes_from_the_environment_and_is_documented() -> None:
    assert Settings().input_switch_silence_seconds == 1.0
    s = from_environment({"RELAY_INPUT_SWITCH_SILENCE_SECONDS": "2.5"})
    assert s.input_switch_silence_seconds == 2.5
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| `RELAY_INPUT_SWITCH_SILENCE_SECONDS` |" in readme


def test_rtmp_idle_timeout_comes_from_the_environment_and_is_in_the_readme() -> None:
    assert from_environment({"RELAY_RTMP_IDLE_TIMEOUT_SECONDS": "5"}).rtmp_idle_timeout_seconds == 5.0
    assert from_environment({}).rtmp_idle_timeout_seconds == 30.0
    with pytest.raises(ConfigError, match="RELAY_RTMP_IDLE_TIMEOUT_SECONDS: must be positive"):
        from_environment({"RELAY_RTMP_IDLE_TIMEOUT_SECONDS": "0"})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| `RELAY_RTMP_IDLE_TIMEOUT_SECONDS` |" in readme


def test_push_truth_settings_come_from_the_environment_and_are_in_the_readme() -> None:
    env = {
        "RELAY_PUSH_ACK_STALL_SECONDS": "3",
        "RELAY_PUSH_MAX_BEHIND_SECONDS": "8",
        "RELAY_PUSH_BEHIND_POLICY": "restart",
        "RELAY_PUSH_SEND_BUFFER_BYTES": "0",
    }
    s = from_environment(env)
    assert (s.push_ack_stall_seconds, s.push_max_behind_seconds) == (3.0, 8.0)
    assert (s.push_behind_policy, s.push_send_buffer_bytes) == ("restart", 0)
    d = from_environment({})
    assert (d.push_ack_stall_seconds, d.push_max_behind_seconds, d.push_behind_policy) == (4.0, 5.0, "skip")
    assert d.push_send_buffer_bytes == 256 * 1024
    with pytest.raises(ConfigError, match="RELAY_PUSH_BEHIND_POLICY: expected skip or restart"):
        from_environment({"RELAY_PUSH_BEHIND_POLICY": "drop"})
    with pytest.raises(ConfigError, match="RELAY_PUSH_ACK_STALL_SECONDS: must be positive"):
        from_environment({"RELAY_PUSH_ACK_STALL_SECONDS": "0"})
    with pytest.raises(ConfigError, match="RELAY_PUSH_SEND_BUFFER_BYTES: must not be negative"):
        from_environment({"RELAY_PUSH_SEND_BUFFER_BYTES": "-1"})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert all(f"| `{name}` |" in readme for name in env)


def test_merged_writes_are_off_unless_asked_for_bounded_and_in_the_readme() -> None:
    assert Settings().merge_interval_ms == 0
    assert from_environment({"RELAY_MERGE_INTERVAL_MS": "66"}).merge_interval_ms == 66
    for bad in ("-1", "1001"):
        with pytest.raises(ConfigError, match="RELAY_MERGE_INTERVAL_MS: expected 0 to 1000"):
            from_environment({"RELAY_MERGE_INTERVAL_MS": bad})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| `RELAY_MERGE_INTERVAL_MS` |" in readme


def test_srt_destinations_go_through_the_relays_caller_unless_told() -> None:
    assert (Settings().srt_push, Settings().srt_push_peer_idle_timeout_ms) == ("relay", 1000)
    s = from_environment({"RELAY_SRT_PUSH": "ffmpeg", "RELAY_SRT_PUSH_PEER_IDLE_TIMEOUT_MS": "2500"})
    assert (s.srt_push, s.srt_push_peer_idle_timeout_ms) == ("ffmpeg", 2500)


def test_rtmp_connection_limits_come_from_the_environment_reach_the_listener_and_are_in_the_readme() -> None:
    """Behind a balancer every publisher comes from one address: the per-address cap must be settable."""
    from api.server import Server

    s = from_environment({"RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS": "200", "RELAY_RTMP_MAX_CONNECTIONS": "500"})
    listener = Server(s)._rtmp_settings(0)
    assert (listener.max_connections_per_address, listener.max_connections) == (200, 500)
    defaults = Server(from_environment({}))._rtmp_settings(0)
    assert (defaults.max_connections_per_address, defaults.max_connections) == (16, 256)
    with pytest.raises(ConfigError, match="RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS: must be positive"):
        from_environment({"RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS": "0"})
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| `RELAY_RTMP_MAX_CONNECTIONS_PER_ADDRESS` |" in readme


def test_the_event_loop_is_asyncio_unless_uvloop_is_asked_for() -> None:
    assert from_environment({}).event_loop == "asyncio"
    assert from_environment({"RELAY_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
