"""The announcement: the container's default command prints no secret into its log; `make run`'s
`--show-secrets` prints the API key and the demo stream's key on the terminal as before."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support import ROOT, RelayProcess, wait_until

pytestmark = pytest.mark.integration


def container_command() -> tuple[str, ...]:
    """The Dockerfile's CMD: what `docker run` starts when given no command."""
    [line] = [line for line in (ROOT / "Dockerfile").read_text().splitlines() if line.startswith("CMD ")]
    return tuple(json.loads(line.removeprefix("CMD ")))


def announced(relay: RelayProcess) -> tuple[str, str, str]:
    """The relay's output once it has announced itself, its generated API key and the demo stream's token."""
    wait_until(lambda: "restream-relay is running" in relay.log() and "Publish a test pattern" in relay.log())
    key = (relay.data_dir / "admin-api-key").read_text().strip()
    [demo] = relay.api("GET", "/streaming/streams", key=key).body
    return relay.log(), key, demo["token"]


@pytest.mark.parametrize("show_secrets", [False, True], ids=["container default", "make run"])
def test_the_announcement_prints_secrets_only_when_asked(tmp_path: Path, show_secrets: bool) -> None:
    args = container_command()
    assert args == ("serve", "--announce")
    if show_secrets:
        makefile = (ROOT / "Makefile").read_text()
        assert re.search(r"-m api serve --announce --show-secrets", makefile)
        args += ("--show-secrets",)
    relay = RelayProcess(tmp_path / "data", env_extra={"RELAY_API_KEY": ""}, args=args).start()
    try:
        text, key, token = announced(relay)
    finally:
        relay.stop()
    assert (key in text, token in text) == (show_secrets, show_secrets)
    if not show_secrets:
        assert f"API key       in {relay.data_dir / 'admin-api-key'} (not printed" in text
        assert re.search(r"stream key \d+\?<token>", text)
