"""The strict destination parse (relay/destinations.py): normalisation, one reading of the host, the
SRT options' ranges, the passphrase rule, and the URI a push connects to once its host was checked."""

from __future__ import annotations

import ipaddress

import pytest

from relay.destinations import SRT_INT_OPTIONS, InvalidDestination, parse_destination, with_address


@pytest.mark.parametrize(
    ("uri", "normalised"),
    [
        # ffmpeg looks protocols up by exact name: `RTMP://` was accepted, then failed every start.
        ("RTMP://a.rtmp.youtube.com/live2/Key-AbC", "rtmp://a.rtmp.youtube.com/live2/Key-AbC"),
        ("Rtmps://Live-API-S.Facebook.com:443/rtmp/FB-Key", "rtmps://live-api-s.facebook.com:443/rtmp/FB-Key"),
        ("SRT://Target.Example.COM:5001?streamid=AbC#TokEN", "srt://target.example.com:5001?streamid=AbC#TokEN"),
        ("rtmp://User:PassWord@HOST/app/Key", "rtmp://User:PassWord@host/app/Key"),
        ("rtmp://[2001:DB8::1]:1935/live/Key", "rtmp://[2001:db8::1]:1935/live/Key"),
        ("rtmp://h/live/key", "rtmp://h/live/key"),
    ],
)
def test_scheme_and_host_are_normalised_the_rest_kept_byte_for_byte(uri: str, normalised: str) -> None:
    destination = parse_destination(uri)
    assert destination.uri == normalised
    assert destination.scheme == normalised.split(":", 1)[0]


@pytest.mark.parametrize(
    "uri",
    [
        "rtmp://a@b@127.0.0.1/app/key",  # parsers disagree on which '@' ends the userinfo
        "rtmp://evil.example\\@127.0.0.1/app/key",
        "rtmp://[:::]/app/key",
        "rtmp://[127.0.0.1/app/key",
        "srt://[fe80::1%25eth0]:5000",
    ],
)
def test_hosts_that_parsers_could_read_differently_are_refused(uri: str) -> None:
    with pytest.raises(InvalidDestination, match=r"^uri host is not a valid host name or address$"):
        parse_destination(uri)


@pytest.mark.parametrize(("name", "bounds"), sorted(SRT_INT_OPTIONS.items()))
def test_each_integer_srt_option_is_bounded(name: str, bounds: tuple[int, int]) -> None:
    low, high = bounds
    message = f"srt option '{name}' must be from {low} to {high}"
    for inside in (low, high):
        if name == "pbkeylen" and inside not in (0, 16, 24, 32):
            continue
        parse_destination(f"srt://h:9000?{name}={inside}")
    for outside in (low - 1, high + 1):
        with pytest.raises(InvalidDestination) as refused:
            parse_destination(f"srt://h:9000?{name}={outside}")
        assert str(refused.value) == message


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("latency=120000000", "srt option 'latency' must be from 0 to 60000000"),
        ("timeout=-1", "srt option 'timeout' must be from 100000 to 60000000"),
        ("sndbuf=1000000000000", "srt option 'sndbuf' must be from 32768 to 67108864"),
        ("payload_size=9000", "srt option 'payload_size' must be from 188 to 1456"),
        ("latency=%31%32%30", "srt option 'latency' must be an integer"),  # ffmpeg reads it as written
        ("latency=1e6", "srt option 'latency' must be an integer"),
        ("passphrase=" + "p" * 80, "srt passphrase must be 10 to 79 characters"),
        ("passphrase=short", "srt passphrase must be 10 to 79 characters"),
    ],
)
def test_srt_option_messages_name_the_option(query: str, message: str) -> None:
    with pytest.raises(InvalidDestination) as refused:
        parse_destination(f"srt://h:9000?{query}")
    assert str(refused.value) == message
    if query.startswith("passphrase="):
        assert query.split("=", 1)[1] not in str(refused.value)  # a secret is never echoed


def test_gcore_example_and_a_79_character_passphrase_pass() -> None:
    parse_destination("srt://target.example.com:5001?streamid=1&mode=caller&latency=2500000&passphrase=secret-pass")
    parse_destination("srt://h:9000?passphrase=" + "p" * 79)


def test_gcore_common_srt_buffer_options_pass_and_are_bounded() -> None:
    # Gcore lists send_buffer_size and recv_buffer_size among the common SRT parameters; ffmpeg's libsrt
    # takes both from the URL (the UDP socket's SO_SNDBUF / SO_RCVBUF).
    uri = "srt://h:9000?mode=caller&send_buffer_size=1048576&recv_buffer_size=262144"
    assert parse_destination(uri).uri == uri
    for name in ("send_buffer_size", "recv_buffer_size"):
        with pytest.raises(InvalidDestination) as refused:
            parse_destination(f"srt://h:9000?{name}=2147483647")
        assert str(refused.value) == f"srt option '{name}' must be from 32768 to 67108864"


def test_older_uris_still_push_when_options_are_not_checked() -> None:
    # Accepted under the old rules (no ranges), still in the store: the push only needs host and port.
    destination = parse_destination("srt://h:9000?latency=120000000", check_options=False)
    assert (destination.host, destination.port) == ("h", 9000)


@pytest.mark.parametrize(
    ("uri", "address", "connect"),
    [
        ("rtmp://media.example/live/key?x=1", "203.0.113.9", "rtmp://203.0.113.9:1935/live/key?x=1"),
        ("rtmp://u:p@media.example:1936/a/b", "203.0.113.9", "rtmp://u:p@203.0.113.9:1936/a/b"),
        ("srt://media.example:5001?streamid=1#tok&latency=200000", "2001:db8::7", None),
        ("RTMP://Media.Example/live/Key", "8.8.8.8", "rtmp://8.8.8.8:1935/live/Key"),
    ],
)
def test_with_address_replaces_only_the_host(uri: str, address: str, connect: str | None) -> None:
    result = with_address(parse_destination(uri), ipaddress.ip_address(address))
    if connect is None:
        assert result == "srt://[2001:db8::7]:5001?streamid=1#tok&latency=200000"
    else:
        assert result == connect
