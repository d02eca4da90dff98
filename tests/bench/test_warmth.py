"""bench.warmth: the session's CPU per message, hot and after sleeps (the machine's cold-start factor)."""

from __future__ import annotations

import re

import pytest

from bench.warmth import main, microseconds_per_message, publishing_session, rounds_of_media
from relay.rtmp.states import SessionState


def test_the_session_parses_every_message_of_every_round() -> None:
    session, media = publishing_session(), rounds_of_media(4)
    assert session.state is SessionState.PUBLISHING
    assert microseconds_per_message(session, media, 8, 0.0) > 0
    assert session.bytes_received > 8 * 18_000  # the rounds' frames went through the chunk reader
    assert not session.inside_message


def test_it_prints_both_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--rounds", "5", "--gap-ms", "1"]) == 0
    line = capsys.readouterr().out
    assert re.search(r"[\d.]+ us hot, -?[\d.]+ us with 1 ms asleep before each round of 3", line), line
