"""What the network-fault tests share: destinations inside a namespace, and timing a receiver's frames."""

from __future__ import annotations

from tests.e2e.conftest import Rig
from tests.support import Receiver
from tests.support.netns import Netns


async def ns_receiver(
    rig: Rig,
    ns: Netns,
    name: str,
    *,
    srt: bool = False,
    srt_latency_ms: int = 120,
    watch_frames: bool = False,
    port: int | None = None,
    key: str | None = None,
) -> Receiver:
    """A destination listening inside `ns` on its address; the rig reaps it and knows its key is secret."""
    key = key or f"key-{name}-5ecret"
    rig.api.secrets.add(key)
    receiver = Receiver(
        rig.tmp / f"{name}.{'ts' if srt else 'flv'}",
        srt=srt,
        port=port,
        key=key,
        netns=ns,
        srt_latency_ms=srt_latency_ms,
        watch_frames=watch_frames,
    )
    rig.receivers.append(receiver)
    return await receiver.start()
