"""Fixtures of the network-fault suite: the e2e rig (the relay subprocess and its peers) plus network
namespaces joined by veth pairs (tests/support/netns.py), made per test and always removed.

Every test here needs root and `ip netns`; where that is not possible they skip, saying why."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from tests.e2e.conftest import Rig, long_media, marked_relay_env, media
from tests.e2e.helpers import Media, RelayApi
from tests.support import MediaCache, RelayProcess
from tests.support.netns import Netns, namespace, unavailable

__all__ = ["long_media", "media"]


@functools.cache
def _why_not() -> str | None:
    return unavailable()


@pytest.fixture(autouse=True)
def _needs_namespaces(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("network") is None:
        return  # the proxy's own tests run anywhere
    reason = _why_not()
    if reason is not None:
        pytest.skip(f"network namespaces unavailable: {reason}")


@pytest.fixture(scope="session")
def outage_media(media_cache: MediaCache) -> Media:
    """38 s of video: a 20 s outage with time to notice it and to see the recovery; a link at half the
    rate fills the push's 10 s queue (relay/hub/subscriber.py) after about 25 s, with time to spare."""
    return Media.make(media_cache, 38.0)


@pytest.fixture
def netns() -> Iterator[Callable[[str], Netns]]:
    """Make namespaces on demand (`netns("dest")`); all of them removed after the test, even on failure."""
    with contextlib.ExitStack() as stack:
        yield lambda label: stack.enter_context(namespace(label))


@pytest.fixture
async def net_rig(tmp_path: Path, request: pytest.FixtureRequest, netns: Callable[[str], Netns]) -> AsyncIterator[Rig]:
    """The e2e rig (it depends on `netns` so that its processes are reaped before the namespaces go);
    a test marked `relay_env(NAME=value, ...)` adds settings to the relay's environment."""
    relay = RelayProcess(tmp_path / "data", env_extra=marked_relay_env(tmp_path, request))
    await asyncio.to_thread(relay.start)
    r = Rig(tmp_path, RelayApi(relay), AsyncExitStack())
    try:
        yield r
    finally:
        await r.close()
