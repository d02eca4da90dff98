"""End-to-end parts: the test clip in both ingest containers, the relay subprocess over HTTP, and checks on
what receivers got. Publishers, receivers and proxies come from tests.support.

The relay runs as a `RelayProcess` subprocess; its blocking HTTP helper is called through
`asyncio.to_thread` so that the proxies (which run on the test's event loop) never stall while a test
polls the API.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import Clip, MediaCache, RelayProcess, children_of, md5s, wait_for

GOP = 30
"""Frames per GOP of the test media (and the most a legitimately late receiver may miss)."""

SRT_TAIL_FRAMES = 3
"""Video packets an SRT leg may lose at a clean end (see Media.make): the last TS video packet completes only
at the end of input and races ffmpeg's close of its SRT socket (tests/system/test_srt_destination_end.py)."""


# --- media ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """One test clip in both ingest containers, and the video each kind of destination must receive."""

    flv: Path
    ts: Path
    seconds: float
    ref_flv: list[str]
    """FLV source -> FLV destination (RTMP, RTMPS): the very packets of the FLV."""
    ref_flv_to_ts: list[str]
    """FLV source -> MPEG-TS destination (SRT): the packets after `-c copy -f mpegts` (Annex B)."""
    ref_ts: list[str]
    """MPEG-TS source -> MPEG-TS destination: the packets of the TS."""
    ref_ts_to_flv: list[str]
    """MPEG-TS source -> FLV destination: the packets after `-c copy -f flv` (length-prefixed)."""

    def reference(self, ingest: str, destination: str) -> list[str]:
        ts_in = ingest == "srt"
        ts_out = destination == "srt"
        if ts_in:
            return self.ref_ts if ts_out else self.ref_ts_to_flv
        return self.ref_flv_to_ts if ts_out else self.ref_flv

    @staticmethod
    def clip(seconds: float) -> Clip:
        """testsrc2 640x360@30 + sine, H.264 (GOP 30, no B-frames) + AAC, the audio one second longer.

        An ffmpeg SRT caller loses the last kilobytes it writes when it closes: about 50 KB without
        `-linger` (the publisher), about 10 KB even with the relay's `-linger 2` (reproduced with plain
        ffmpeg into srt-live-transmit, no relay involved). So the audio runs one second past the video,
        and MPEG-TS video PES packets carry their length (`-omit_video_pes_length 0`, also on the SRT
        publisher): a demuxer then emits the last video packet as soon as it is complete instead of at
        EOF, so it is not among the last bytes sent, and the lost tail is mostly audio."""
        return Clip(
            seconds=seconds,
            size="640x360",
            rate=30,
            gop=GOP,
            fixed_gop=True,
            bframes=0,
            zerolatency=True,
            video_kbps=1000,
            audio_kbps=96,
            audio_tail_seconds=1.0,
        )

    @classmethod
    def make(cls, cache: MediaCache, seconds: float) -> Media:
        flv = cache.clip(cls.clip(seconds))
        ts = cache.remux(flv, "mpegts", "-omit_video_pes_length", "0")
        back = cache.remux(ts, "flv")
        return cls(flv, ts, seconds, md5s(flv), md5s(ts), md5s(ts), md5s(back))


# --- the relay ------------------------------------------------------------------------------------


@dataclass
class RelayApi:
    """The relay subprocess and the secrets it must never log (tokens, destination keys)."""

    relay: RelayProcess
    secrets: set[str] = field(default_factory=set)

    @property
    def pid(self) -> int:
        assert self.relay.process is not None
        return self.relay.process.pid

    async def call(self, method: str, path: str, body: Any = None, expect: int = 200) -> Any:
        result = await asyncio.to_thread(self.relay.api, method, path, body)
        assert result.status == expect, f"{method} {path}: {result.status} {result.body}"
        return result.body

    async def stream(self, name: str = "show") -> dict[str, Any]:
        stream: dict[str, Any] = await self.call("POST", "/streaming/streams", {"name": name})
        self.secrets.add(stream["token"])
        return stream

    async def add_restream(self, stream_id: int, uri: str, key: str | None = None, **fields: Any) -> dict[str, Any]:
        if key:
            self.secrets.add(key)
        body = {"restream": {"stream_id": stream_id, "uri": uri, "tls_verify": False, **fields}}
        restream: dict[str, Any] = await self.call("POST", "/streaming/restreams", body)
        return restream

    async def patch_restream(self, restream_id: int, **fields: Any) -> dict[str, Any]:
        restream: dict[str, Any] = await self.call("PATCH", f"/streaming/restreams/{restream_id}", {"restream": fields})
        return restream

    async def status(self, restream_id: int) -> dict[str, Any]:
        restream = await self.call("GET", f"/streaming/restreams/{restream_id}")
        status: dict[str, Any] = restream["status"]
        return status

    async def wait_state(
        self,
        restream_id: int,
        *states: str,
        within: float = 15.0,
        check: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        async def reached() -> dict[str, Any] | None:
            status = await self.status(restream_id)
            return status if status["state"] in states and (check is None or check(status)) else None

        return await wait_for(reached, within, f"restream {restream_id} in {states}")

    async def wait_live(self, stream_id: int, live: bool = True, within: float = 15.0) -> None:
        async def reached() -> bool:
            return bool((await self.call("GET", f"/streaming/streams/{stream_id}"))["live"]) is live

        await wait_for(reached, within, f"stream {stream_id} live={live}")

    def log(self) -> str:
        return self.relay.log()

    def assert_no_secrets(self) -> None:
        text = self.log()
        leaked = sorted(s for s in self.secrets if s and s in text)
        assert not leaked, f"secrets in the relay's log: {leaked}"


def push_pids(relay_pid: int, port: int) -> list[int]:
    """The relay's ffmpeg child(ren) pushing to 127.0.0.1:`port`."""
    needle = re.compile(rf"127\.0\.0\.1:{port}\b")
    return [pid for pid, cmd in children_of(relay_pid).items() if "pipe:0" in cmd and needle.search(cmd)]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def srt_tail_ok(got: list[str], want: list[str], tail: int = SRT_TAIL_FRAMES) -> bool:
    """`got` is `want` from the first packet on, except for a lost tail of at most `tail` packets, the
    last one received possibly cut short: what an SRT leg delivers on a clean end (see Media.make)."""
    if not len(want) - tail <= len(got) <= len(want):
        return False
    return got[:-1] == want[: len(got) - 1]


def split_as_two_plays(got: list[str], source: list[str]) -> tuple[int, int] | None:
    """(k, m) if `got` is source[:k] + source[:m]: a play cut short, then a second play from the start."""
    for k in range(len(got), 0, -1):
        if got[:k] == source[:k] and got[k:] == source[: len(got) - k]:
            return k, len(got) - k
    return None
