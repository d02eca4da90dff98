"""Hostile clients against the real relay process while real encoders publish.

For as long as two encoders publish (ffmpeg over RTMP, ffmpeg over SRT) the test floods every listener
from many loopback addresses (Linux routes all of 127.0.0.0/8 to lo; each client binds its own source):
anonymous RTMP and RTMPS connections that say nothing, RTMP handshakes sent byte by byte, RTMP messages
announcing 16 MiB, SRT handshakes with malformed streamids and wrong tokens, and API connections that
send nothing or send their headers byte by byte. Every flood is bounded in connections and in attempts,
and stops when the encoders are done.

What a user would check: both encoders got in and ran to the end, every destination received the
source's video packets unchanged, the pushes never restarted, the API answered throughout, the refusals
are counted in /metrics, and the relay's log did not grow with the flood.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from relay.srt.libsrt import LibSrt, SockOpt, SrtError, TransType
from tests.e2e.conftest import Rig, relay_env
from tests.e2e.helpers import Media, RelayApi, rss_kib, srt_tail_ok
from tests.rtmp.wire import simple_c1
from tests.support import ADMIN_KEY, RelayProcess

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

HTTP_MAX_CONNECTIONS = 48
"""Below the API flood below, so that the API's eviction is exercised too (the default is 512)."""


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    """The e2e rig (RTMP, RTMPS, SRT on one relay process), the pre-auth limits at their defaults but one."""
    env = {**relay_env(tmp_path), "RELAY_HTTP_MAX_CONNECTIONS": str(HTTP_MAX_CONNECTIONS)}
    relay = RelayProcess(tmp_path / "data", env_extra=env)
    await asyncio.to_thread(relay.start)
    r = Rig(tmp_path, RelayApi(relay), contextlib.AsyncExitStack())
    try:
        yield r
    finally:
        await r.close()


def sources(first: int, count: int) -> list[str]:
    return [f"127.0.0.{first + i}" for i in range(count)]


@dataclass
class Flood:
    """The clients of one kind: how often they connected and how their connections ended."""

    name: str
    attempts: int = 0
    ends: Counter[str] = field(default_factory=Counter)


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader, limit_seconds: float) -> str:
    """How the server ended the connection: "closed" (EOF or reset), or "open" after `limit_seconds`."""
    try:
        async with asyncio.timeout(limit_seconds):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return "open"
    except ConnectionError:
        pass
    return "closed"


async def run_slots(
    flood: Flood,
    stop: asyncio.Event,
    slots: list[str],
    client: Callable[[str], Awaitable[str]],
    *,
    max_attempts: int,
    pause_seconds: float,
) -> None:
    """One looping client per slot (a source address each): connect, behave badly, reconnect when cut."""

    async def slot(source: str) -> None:
        for _ in range(max_attempts):
            if stop.is_set():
                return
            flood.attempts += 1
            try:
                flood.ends[await client(source)] += 1
            except OSError as exc:  # refused at once, or reset before we wrote
                flood.ends[type(exc).__name__] += 1
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause_seconds):
                    await stop.wait()

    await asyncio.gather(*(slot(source) for source in slots))


def rtmp_idle(port: int) -> Callable[[str], Awaitable[str]]:
    """One byte of handshake, then silence: holds an anonymous slot until evicted or timed out."""

    async def client(source: str) -> str:
        reader, writer = await _connect(port, source)
        try:
            writer.write(b"\x03")
            return await _until_closed(reader, 30)
        finally:
            writer.close()

    return client


def tcp_silent(port: int) -> Callable[[str], Awaitable[str]]:
    """A TCP connection that never sends a byte (on RTMPS: not even a TLS ClientHello; on the API: no request)."""

    async def client(source: str) -> str:
        reader, writer = await _connect(port, source)
        try:
            return await _until_closed(reader, 30)
        finally:
            writer.close()

    return client


def dribble(port: int, data: bytes, every_seconds: float) -> Callable[[str], Awaitable[str]]:
    """`data` one byte at a time: never silent long, never done (a slow handshake, slow headers)."""

    async def client(source: str) -> str:
        reader, writer = await _connect(port, source)
        try:
            for index in range(len(data)):
                writer.write(data[index : index + 1])
                await writer.drain()
                if reader.at_eof():
                    return "closed"
                await asyncio.sleep(every_seconds)
            return await _until_closed(reader, 30)
        except ConnectionError:
            return "closed"
        finally:
            writer.close()

    return client


def rtmp_huge_message(port: int) -> Callable[[str], Awaitable[str]]:
    """A full handshake, then chunk headers announcing a 16 MiB message and messages on many chunk streams."""

    async def client(source: str) -> str:
        reader, writer = await _connect(port, source)
        try:
            writer.write(b"\x03" + simple_c1())
            await reader.readexactly(1 + 2 * 1536)
            writer.write(simple_c1(5))
            writer.write(b"\x04" + b"\x00\x00\x00" + b"\xff\xff\xff" + b"\x09" + struct.pack("<I", 1) + bytes(128))
            for csid in range(5, 20):  # and, were that let through, 15 partial messages of 1 MiB
                writer.write(bytes([csid]) + b"\x00\x00\x00" + (1 << 20).to_bytes(3, "big") + b"\x09" + bytes(132))
            await writer.drain()
            return await _until_closed(reader, 30)
        except (ConnectionError, asyncio.IncompleteReadError):
            return "closed"
        finally:
            writer.close()

    return client


@dataclass
class SrtFlood:
    """Threads of libsrt callers, each from its own source address, knocking with bad streamids."""

    lib: LibSrt
    port: int
    streamids: list[str]
    codes: Counter[int] = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def knock(self, source: str, max_attempts: int) -> None:
        lib = self.lib
        for attempt in range(max_attempts):
            if self.stop.is_set():
                return
            sock = lib.create_socket()
            try:
                lib.set_int(sock, SockOpt.TRANSTYPE, TransType.LIVE)
                lib.set_int(sock, SockOpt.CONNTIMEO, 1000)
                lib.set_str(sock, SockOpt.STREAMID, self.streamids[attempt % len(self.streamids)])
                lib.bind(sock, source, 0)
                lib.connect(sock, "127.0.0.1", self.port)
                code = 0  # admitted: a flood caller must never be
            except SrtError:
                code = lib.reject_reason(sock)
            finally:
                lib.close(sock)
            with self._lock:
                self.codes[code] += 1
            self.stop.wait(0.01)


async def refusal_counts(base: str) -> dict[tuple[str, str], float]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http,
        http.get(f"{base}/metrics", headers={"Authorization": f"APIKey {ADMIN_KEY}"}) as response,
    ):
        assert response.status == 200
        text = await response.text()
    return {
        (s.labels["transport"], s.labels["reason"]): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "relay_ingest_refusals_total"
    }


async def test_encoders_publish_and_destinations_stay_identical_through_a_flood_of_hostile_clients(
    rig: Rig, media: Media, tmp_path: Path
) -> None:
    api, relay = rig.api, rig.relay
    rtmp_stream = await api.stream("rtmp under fire")
    srt_stream = await api.stream("srt under fire")
    rtmp_dest = await rig.receiver("rtmp-dest")
    srt_dest = await rig.receiver("srt-dest")
    rtmp_restream = (await api.add_restream(rtmp_stream["id"], rtmp_dest.uri(), rtmp_dest.key))["id"]
    srt_restream = (await api.add_restream(srt_stream["id"], srt_dest.uri(), srt_dest.key))["id"]
    rss_before = rss_kib(api.pid)
    log_lines_before = len(relay.log().splitlines())

    stop = asyncio.Event()
    floods = {
        "rtmp idle": Flood("rtmp idle"),
        "rtmps silent": Flood("rtmps silent"),
        "rtmp slow handshake": Flood("rtmp slow handshake"),
        "rtmp huge message": Flood("rtmp huge message"),
        "api silent": Flood("api silent"),
        "api slow headers": Flood("api slow headers"),
    }
    slow_request = b"GET /streaming/streams HTTP/1.1\r\nHost: relay\r\nAuthorization: APIKey 1$guess\r\n\r\n"
    handshake = b"\x03" + simple_c1()
    # 16 connections per address is the RTMP per-address limit: the idle flood fills it on 24 addresses.
    flood_tasks = [
        run_slots(
            floods["rtmp idle"],
            stop,
            [s for s in sources(2, 24) for _ in range(16)],
            rtmp_idle(relay.rtmp_port),
            max_attempts=60,
            pause_seconds=0.2,
        ),
        run_slots(
            floods["rtmps silent"],
            stop,
            [s for s in sources(30, 6) for _ in range(16)],
            tcp_silent(relay.rtmps_port),
            max_attempts=60,
            pause_seconds=0.2,
        ),
        run_slots(
            floods["rtmp slow handshake"],
            stop,
            [s for s in sources(40, 8) for _ in range(4)],
            dribble(relay.rtmp_port, handshake, 0.05),
            max_attempts=20,
            pause_seconds=0.1,
        ),
        run_slots(
            floods["rtmp huge message"],
            stop,
            [s for s in sources(50, 8) for _ in range(2)],
            rtmp_huge_message(relay.rtmp_port),
            max_attempts=100,
            pause_seconds=0.1,
        ),
        run_slots(
            floods["api silent"],
            stop,
            [s for s in sources(60, 8) for _ in range(8)],
            tcp_silent(relay.http_port),
            max_attempts=60,
            pause_seconds=0.2,
        ),
        run_slots(
            floods["api slow headers"],
            stop,
            [s for s in sources(70, 4) for _ in range(4)],
            dribble(relay.http_port, slow_request, 0.1),
            max_attempts=30,
            pause_seconds=0.1,
        ),
    ]
    lib = LibSrt.load()
    lib.startup()
    srt_flood = SrtFlood(
        lib,
        relay.srt_port,
        ["not a streamid", f"{srt_stream['id']}#wrong-token", "#!::r=1,m=request", f"{rtmp_stream['id']}#guess"],
    )
    srt_threads = [threading.Thread(target=srt_flood.knock, args=(s, 300)) for s in sources(80, 10)]
    flooding = asyncio.gather(*flood_tasks)
    try:
        for thread in srt_threads:
            thread.start()
        await asyncio.sleep(2.0)  # the flood is in full swing before the encoders arrive (the scenario itself)

        rtmp_encoder = await rig.publish(media.flv, rtmp_stream["push_url"])
        srt_encoder = await rig.publish(media.ts, srt_stream["push_url_srt"].replace("#", "%23"))
        started = time.monotonic()
        await api.wait_live(rtmp_stream["id"], within=10)
        await api.wait_live(srt_stream["id"], within=10)
        for encoder in (rtmp_encoder, srt_encoder):
            code, err = await encoder.wait(within=media.seconds + 20)
            assert code == 0, err
        await api.wait_state(rtmp_restream, "idle", within=10)
        await api.wait_state(srt_restream, "idle", within=10)
        publish_seconds = time.monotonic() - started
        rss_during = rss_kib(api.pid)
    finally:
        stop.set()
        srt_flood.stop.set()
        await flooding
        for thread in srt_threads:
            await asyncio.to_thread(thread.join, 10)
        lib.cleanup()

    await rtmp_dest.ends_cleanly()
    await srt_dest.ends_cleanly()
    # Every video packet, unchanged (the SRT encoder's own close loses a few at the tail: see Media.make).
    assert rtmp_dest.frames() == media.ref_flv, "the RTMP-fed destination's video differs from the source"
    got = srt_dest.frames()
    assert srt_tail_ok(got, media.ref_ts_to_flv), f"SRT-fed destination: {len(got)} of {len(media.ref_ts_to_flv)}"
    for restream_id in (rtmp_restream, srt_restream):
        assert (await api.status(restream_id))["restarts"] == 0
    assert publish_seconds < media.seconds + 15

    # The floods happened, and were bounded by the relay, not by their own politeness.
    ends = {name: dict(f.ends) for name, f in floods.items()}
    assert all(f.attempts for f in floods.values()), ends
    assert floods["rtmp idle"].attempts > 24 * 16, ends  # more than the slots: the relay cut and they came back
    assert floods["rtmp huge message"].ends["open"] == 0, ends
    assert floods["rtmp slow handshake"].ends["open"] == 0, ends
    assert floods["api slow headers"].ends["open"] == 0, ends
    assert srt_flood.codes[0] == 0, srt_flood.codes  # no flood caller ever admitted
    assert srt_flood.codes[1402] > 0 and srt_flood.codes[1403] + srt_flood.codes[1400] > 0, srt_flood.codes

    # Counted where an operator looks.
    refusals = await refusal_counts(relay.base_url)
    assert refusals.get(("rtmp", "evicted"), 0) > 0, refusals
    assert refusals.get(("rtmps", "evicted"), 0) > 0, refusals
    assert refusals.get(("srt", "rate_limited"), 0) > 0, refusals

    # The log did not grow with the flood: per-connection lines are throttled and summed up.
    log = relay.log()
    flood_lines = [line for line in log.splitlines()[log_lines_before:] if re.search(r"127\.0\.0\.(?!1\b)\d+", line)]
    total_attempts = sum(f.attempts for f in floods.values()) + srt_flood.codes.total()
    assert len(flood_lines) < 400 < total_attempts, (len(flood_lines), total_attempts)
    assert "more not logged" in log
    assert "API connection waiting longest closed to make room" in log  # 80 flood connections, a cap of 48
    assert rss_during - rss_before < 64 * 1024, (rss_before, rss_during)
    api.assert_no_secrets()
