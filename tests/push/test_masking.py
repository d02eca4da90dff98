from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.push.masking import MASK, mask_secrets, mask_uri, secrets_of


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", "rtmp://a.rtmp.youtube.com/live2/***"),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Abc?s_bl=1&s_ps=1",
            "rtmps://live-api-s.facebook.com:443/rtmp/***?s_bl=***&s_ps=***",
        ),
        ("rtmp://user:pw@host/app/inst/key1", "rtmp://***@host/app/inst/***"),
        ("rtmp://host/app", "rtmp://host/app"),
        (
            "srt://host:9000?mode=caller&streamid=#!::r=live/x,m=publish&passphrase=longsecret1&latency=200",
            "srt://host:9000?mode=caller&streamid=***&passphrase=***&latency=200",
        ),
        ("srt://host:9000?mode=caller&pbkeylen=16", "srt://host:9000?mode=caller&pbkeylen=16"),
        ("rtmp://host/app/key?token=t0k", "rtmp://host/app/***?token=***"),
        ("http://host/path?auth_token=abc&x=1", "http://host/path?auth_token=***&x=1"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


def test_mask_secrets_scrubs_ffmpeg_lines() -> None:
    uri = "srt://127.0.0.1:9000?mode=caller&passphrase=wrong%20horse%201&streamid=pub/xyz"
    line = f"[srt @ 0x55] [error] Connection to {uri} failed: Input/output error; passphrase wrong horse 1"
    masked = mask_secrets(line, secrets_of(uri))
    assert "wrong" not in masked and "pub/xyz" not in masked
    assert "Connection to srt://127.0.0.1:9000?mode=caller&passphrase=***&streamid=***" in masked


def test_mask_secrets_rtmp_key_with_query() -> None:
    uri = "rtmps://h:443/rtmp/FB-1-0-Abc?s_bl=1&s_sw=0"
    masked = mask_secrets(f"Error opening output {uri}: I/O error", secrets_of(uri))
    assert "FB-1-0-Abc" not in masked
    assert masked.startswith("Error opening output rtmps://h:443/rtmp/***")


@given(
    key=st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#@%&=:[]\\"),
        min_size=4,
        max_size=40,
    )
)
def test_any_rtmp_key_is_masked(key: str) -> None:
    uri = f"rtmp://host.example/live/{key}"
    assert key not in mask_uri(uri).split("/live/")[1]
    assert key not in mask_secrets(f"opening {uri} failed", secrets_of(uri))
    assert mask_uri(uri).endswith(MASK)


def test_mask_uri_never_raises() -> None:
    assert isinstance(mask_uri("rtmp://[::1"), str)
