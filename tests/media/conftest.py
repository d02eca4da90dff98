"""Fixtures of the media-parser suite: test media generated once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.srt.helpers import make_ts


@pytest.fixture(scope="session")
def src_ts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 s of H.264 (GOP 30) + AAC in MPEG-TS, made by the imageio ffmpeg."""
    return make_ts(tmp_path_factory.mktemp("media") / "src.ts")
