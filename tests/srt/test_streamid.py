"""parse_streamid: every accepted form, and refusals that never echo the token."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.srt.streamid import InvalidStreamId, parse_streamid


@pytest.mark.parametrize(
    "streamid",
    [
        "12345#s3cr3t",
        "12345%23s3cr3t",
        "#!::r=12345#s3cr3t,m=publish",
        "#!::r=12345%23s3cr3t,m=publish",
        "%23!::r=12345%23s3cr3t,m=publish",
        "#!::u=alice,r=12345#s3cr3t,h=relay.example,m=publish,s=abc",
        "#!::r=12345#s3cr3t",
        "#!::m=publish,r=12345#s3cr3t",
    ],
)
def test_accepted_forms(streamid: str) -> None:
    assert parse_streamid(streamid) == ("12345", "s3cr3t")


def test_token_keeps_everything_after_the_first_hash() -> None:
    assert parse_streamid("7#a#b=c") == ("7", "a#b=c")


@pytest.mark.parametrize(
    ("streamid", "bad_mode"),
    [
        ("", False),
        ("12345", False),
        ("12345#", False),
        ("#s3cr3t", False),
        ("12 45#s3cr3t", False),
        ("#!::r=12345#s3cr3t,m=request", True),
        ("#!::r=12345#s3cr3t,m=bidirectional", True),
        ("#!::u=alice,m=publish", False),
        ("#!::r=1#s3cr3t,r=2#s3cr3t", False),
        ("#!::r", False),
    ],
)
def test_refused_forms(streamid: str, bad_mode: bool) -> None:
    with pytest.raises(InvalidStreamId) as info:
        parse_streamid(streamid)
    assert info.value.bad_mode is bad_mode
    assert "s3cr3t" not in str(info.value)


@given(st.text(max_size=600))
def test_never_raises_anything_else(streamid: str) -> None:
    try:
        stream_id, token = parse_streamid(streamid)
    except InvalidStreamId:
        return
    assert stream_id and token
