"""The masker: every secret of a destination URI hidden where it stands, and nothing else touched."""

from __future__ import annotations

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from relay.push.masking import MASK, mask_secrets, mask_uri, secrets_of


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl", "rtmp://a.rtmp.youtube.com/live2/***"),
        # a trailing slash, or several segments after the application: each segment is the key's
        ("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl/", "rtmp://a.rtmp.youtube.com/live2/***/"),
        ("rtmp://host/app/inst/key1", "rtmp://host/app/***/***"),
        ("rtmp://host/app//key1//", "rtmp://host/app//***//"),
        ("rtmp://user:pw@host/app/inst/key1", "rtmp://***@host/app/***/***"),
        (
            "rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Abc?s_bl=1&s_ps=1",
            "rtmps://live-api-s.facebook.com:443/rtmp/***?s_bl=***&s_ps=***",
        ),
        # the key in the query alone, or a query item without '=': all of an RTMP query is the key's
        ("rtmp://host/app?streamkey", "rtmp://host/app?***"),
        ("rtmp://host/app/?k=v&bare", "rtmp://host/app/?k=***&***"),
        ("rtmp://host/app/key?token=t0k", "rtmp://host/app/***?token=***"),
        ("rtmp://host/app/key#frag", "rtmp://host/app/***"),
        ("rtmp://host/app", "rtmp://host/app"),
        ("rtmp://host/app/", "rtmp://host/app/"),
        ("rtmp://host:1935", "rtmp://host:1935"),
        (
            "srt://host:9000?mode=caller&streamid=#!::r=live/x,m=publish&passphrase=longsecret1&latency=200",
            "srt://host:9000?mode=caller&streamid=***&passphrase=***&latency=200",
        ),
        ("srt://host:9000?streamid=5#tok&pbkeylen=16", "srt://host:9000?streamid=***&pbkeylen=16"),
        ("srt://host:9000?mode=caller&pbkeylen=16", "srt://host:9000?mode=caller&pbkeylen=16"),
        # an SRT option we do not know is masked: only the public ones (numbers, modes) are shown
        ("srt://host:9000?mode=caller&something=x", "srt://host:9000?mode=caller&something=***"),
        ("srt://u:p@host:9000", "srt://***@host:9000"),
        ("http://host/path?auth_token=abc&x=1", "http://host/path?auth_token=***&x=1"),
        ("tcp://127.0.0.1:1935", "tcp://127.0.0.1:1935"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked
    assert mask_uri(masked) == masked  # idempotent: masking an already masked line changes nothing


@pytest.mark.parametrize(
    ("uri", "line", "masked"),
    [
        # a one-character key hides nothing inside words, and is still masked in its URL
        (
            "rtmp://h/app/k",
            "Error writing to rtmp://h/app/k: Broken pipe, kbps 3",
            "Error writing to rtmp://h/app/***: Broken pipe, kbps 3",
        ),
        (
            "rtmp://h/live2/ab/",
            "[rtmp @ 0x1] Server error: about ab stream rtmp://h/live2/ab/",
            "[rtmp @ 0x1] Server error: about ab stream rtmp://h/live2/***/",
        ),
        # a real key is masked as a word wherever it stands, never as a part of another word
        (
            "rtmp://h/live2/Q1w2-e3r4/",
            "Publishing Q1w2-e3r4 failed; Q1w2-e3r4x and xQ1w2-e3r4 are others.",
            "Publishing *** failed; Q1w2-e3r4x and xQ1w2-e3r4 are others.",
        ),
        (
            "rtmp://h/app/inst/deep-key-1",
            "Error opening output rtmp://h/app/inst/deep-key-1?x=1 (deep-key-1)",
            "Error opening output rtmp://h/app/***?x=*** (***)",
        ),
        (
            "srt://127.0.0.1:9000?mode=caller&passphrase=wrong%20horse%201&streamid=pub/xyz",
            "Connection to srt://127.0.0.1:9000?mode=caller&passphrase=wrong%20horse%201&streamid=pub/xyz"
            " failed: passphrase wrong horse 1",
            "Connection to srt://127.0.0.1:9000?mode=caller&passphrase=***&streamid=*** failed: passphrase ***",
        ),
        # percent-encoded inside another value
        (
            "rtmp://h/app/s3cret-key",
            "redirect=rtmp%3A%2F%2Fh%2Fapp%2Fs3cret-key%26x",
            "redirect=rtmp%3A%2F%2Fh%2Fapp%2F***%26x",
        ),
        # brackets and quotes around a URL, and the end of a sentence, are not part of its key
        (
            "rtmp://h/live2/KEY-1/",
            "restream 1 (rtmp://h/live2/KEY-1/): idle; 'rtmp://h/live2/KEY-1/', [rtmp://h/a/b]. See rtmp://h/a/c.",
            "restream 1 (rtmp://h/live2/***/): idle; 'rtmp://h/live2/***/', [rtmp://h/a/***]. See rtmp://h/a/***.",
        ),
        (
            "rtmp://h/live2/)",
            "opening rtmp://h/live2/): refused (rtmp://h/live2/))",
            "opening rtmp://h/live2/***: refused (rtmp://h/live2/***)",
        ),
        # a URL the masker was never told about is masked too
        (
            "rtmp://h/app/k",
            "retrying rtmps://other.example/live/unknown-key?s=1 after 2 s",
            "retrying rtmps://other.example/live/***?s=*** after 2 s",
        ),
    ],
)
def test_mask_secrets_in_free_text(uri: str, line: str, masked: str) -> None:
    assert mask_secrets(line, secrets_of(uri)) == masked


def test_secrets_of_lists_every_form_of_the_key() -> None:
    found = secrets_of("rtmp://u:pw@h/live2/a%2Fb/c/?s=1")
    assert {"u:pw", "pw", "a%2Fb", "a/b", "c", "a%2Fb/c", "a%2Fb/c/?s=1", "1"} <= set(found)
    assert "live2" not in found and "h" not in found
    assert secrets_of("srt://h:1?mode=caller&latency=200") == []


@given(
    key=st.text(
        # '*' is left out only because a key "*" would be found in the mask itself
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="/?#@%&=:[]\\*"),
        min_size=1,
        max_size=40,
    ),
    trailing=st.sampled_from(["", "/", "/more", "?a=1", "/x/?b"]),
)
def test_any_rtmp_key_is_masked(key: str, trailing: str) -> None:
    # A key spelled like the fixed, public text after it (a query name "a" or "b", the segment "x" or
    # "more") would be "found" there, though that text is not the key.
    assume(key not in trailing)
    uri = f"rtmp://host.example/live/{key}{trailing}"
    shown = mask_uri(uri)
    assert shown.startswith(f"rtmp://host.example/live/{MASK}")
    assert key not in shown.split("/live/")[1]
    line = mask_secrets(f"opening {uri} failed", secrets_of(uri))
    shown_in_line, rest = line.split("/live/")[1].split(" ", 1)
    assert key not in shown_in_line and rest in ("failed", MASK)  # MASK: the key was "failed" itself


@given(words=st.lists(st.sampled_from(["Broken", "pipe", "rtmp", "error", "kbps", "Bro", "ken"]), max_size=8))
def test_short_secrets_never_cut_words(words: list[str]) -> None:
    text = " ".join(words)
    assert mask_secrets(text, secrets_of("rtmp://h/app/k")) == text
    assert mask_secrets(text, secrets_of("rtmp://h/app/ken")) == text


def test_mask_uri_never_raises() -> None:
    assert isinstance(mask_uri("rtmp://[::1"), str)
