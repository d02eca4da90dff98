"""Real publishers (two ffmpeg builds, srt-live-transmit) against the SRT ingest on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from relay.ingest.gate import EndReason
from relay.ingest.srt_server import SrtServer, SrtSettings
from relay.srt.libsrt import LinkStats
from tests.ingest.srt_gate import FakeEngine, StreamDef, srt_url
from tests.support import (
    FFMPEG,
    SRT_LIVE_TRANSMIT,
    SYSTEM_FFMPEG,
    Finished,
    Publisher,
    background,
    ffmpeg_publish_argv,
    framemd5,
    free_port,
    remux,
    run_process,
    threads_named,
    wait_for,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSPHRASE = "correcthorse2024"


def settings(**overrides: object) -> SrtSettings:
    values: dict[str, object] = {"host": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM), "idle_timeout_seconds": 2.0}
    values.update(overrides)
    return SrtSettings(**values)  # type: ignore[arg-type]


def engine_for(tmp_path: Path) -> FakeEngine:
    return FakeEngine(
        {
            1: StreamDef("tok1"),
            2: StreamDef("tok2", PASSPHRASE),
            3: StreamDef("tok3", active=False),
            4: StreamDef("tok4", PASSPHRASE),
        },
        tmp_path,
    )


def assert_sane_stats(stats: LinkStats | None) -> None:
    assert stats is not None
    assert 0 <= stats.rtt_ms < 100
    assert stats.pkt_received_total > 10
    # the last fields of libsrt 1.5's struct: garbage here would mean a wrong layout
    assert 0 < stats.pkt_recv_unique_total <= stats.pkt_received_total
    assert 0 < stats.bytes_recv_unique_total <= stats.bytes_received_total
    assert stats.bytes_received_total >= stats.pkt_received_total * 188
    assert 0 < stats.recv_rate_mbps < 100
    assert stats.latency_ms >= 120
    assert stats.pkt_recv_drop_total == 0 and stats.pkt_recv_undecrypt_total == 0
    assert 0 < stats.uptime_ms < 60_000


FFMPEGS = [pytest.param(FFMPEG, id="imageio-ffmpeg")]
FFMPEGS.append(
    pytest.param(
        SYSTEM_FFMPEG, id="system-ffmpeg", marks=pytest.mark.skipif(not SYSTEM_FFMPEG, reason="no /usr/bin/ffmpeg")
    )
)


@pytest.mark.parametrize("ffmpeg", FFMPEGS)
async def test_ffmpeg_publishes_while_intruders_are_refused(ffmpeg: str, src_ts: Path, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    async with SrtServer(engine, engine, settings()) as server:
        port = server.port
        assert port is not None
        plain_url = srt_url(port, "1%23tok1")
        secret_url = srt_url(port, "2%23tok2", passphrase=PASSPHRASE, pbkeylen="16")
        intruders = {
            "wrong passphrase": srt_url(port, "4%23tok4", passphrase="wrongpassword99", pbkeylen="16"),
            "missing passphrase": srt_url(port, "4%23tok4"),
            "unexpected passphrase": srt_url(port, "1%23tok1", passphrase=PASSPHRASE),
            "wrong token": srt_url(port, "1%23nope"),
            "unknown stream": srt_url(port, "99%23tok1"),
            "inactive stream": srt_url(port, "3%23tok3"),
            "second publisher": srt_url(port, "1%23tok1"),
            "mode request": srt_url(port, "%23!::r=1%23tok1,m=request"),
        }
        async with (
            background(run_process(ffmpeg_publish_argv(src_ts, plain_url, ffmpeg=ffmpeg))) as plain,
            background(run_process(ffmpeg_publish_argv(src_ts, secret_url, ffmpeg=ffmpeg))) as secret,
        ):
            sink1 = await engine.wait_sink(1)
            sink2 = await engine.wait_sink(2)
            refused: list[Finished] = await asyncio.gather(
                *(
                    run_process(ffmpeg_publish_argv(src_ts, url, ffmpeg=ffmpeg), limit_seconds=20)
                    for url in intruders.values()
                )
            )
            await asyncio.sleep(0.5)
            handle = engine.live[2]
            assert handle.encrypted and not engine.live[1].encrypted
            assert_sane_stats(handle.link_stats())
            done1, done2 = await plain, await secret
        async with asyncio.timeout(10):
            await sink1.closed.wait()
            await sink2.closed.wait()
    assert done1.returncode == 0, done1.output
    assert done2.returncode == 0, done2.output
    for name, result in zip(intruders, refused, strict=True):
        assert result.returncode != 0, f"{name} was not refused: {result.output}"
    assert sorted(engine.sinks) == [1, 2] and len(engine.sinks[1]) == len(engine.sinks[2]) == 1
    # ffmpeg as an SRT caller never sends the last ~100 ms it muxes (it closes the socket first, with
    # or without `linger`; srt-live-transmit as receiver gets even less). So: the relay's output must
    # be a byte-exact prefix of what this ffmpeg muxes, and every complete video frame must match.
    muxed = remux(src_ts, "mpegts", tmp_path / "muxed.ts", ffmpeg=ffmpeg).read_bytes()
    expected = framemd5(src_ts)
    assert len(expected) == 75
    for sink in (sink1, sink2):
        received = sink.path.read_bytes()
        assert muxed.startswith(received) and len(received) > 0.9 * len(muxed)
        frames = framemd5(sink.path)
        assert len(frames) >= 70 and frames[:-1] == expected[: len(frames) - 1]
        assert sink.close_reasons == [EndReason.UNPUBLISH]
        assert sink.keyframes >= 3 and sink.configs >= 2
        info = sink.infos[-1]
        assert (info.video_width, info.video_height, info.frame_rate) == (320, 240, 25.0)
        assert (info.video_codec, info.audio_codec) == ("h264", "aac")


@pytest.mark.skipif(not SRT_LIVE_TRANSMIT, reason="srt-live-transmit (srt-tools) is not installed")
async def test_srt_live_transmit_bytes_arrive_unchanged(src_ts: Path, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    # srt-live-transmit sends what it reads from stdin in `-chunk` pieces and drops a short last
    # piece, so feed it whole 1316-byte messages only: then every byte must arrive.
    data = await asyncio.to_thread(src_ts.read_bytes)
    data = data[: len(data) // 1316 * 1316]
    assert SRT_LIVE_TRANSMIT is not None
    slt = [SRT_LIVE_TRANSMIT, "-q", "-a:no", "-chunk:1316", "-t:20", "file://con"]
    # The end is judged by media silence before the close (< 0.8 x idle timeout = unpublish): keep the
    # production timeout here, and stop the publishers together, so a busy machine cannot turn a
    # deliberate end into a drop.
    async with SrtServer(engine, engine, settings(idle_timeout_seconds=5.0)) as server:
        assert server.port is not None
        urls = {
            1: srt_url(server.port, "1%23tok1"),
            2: srt_url(server.port, "%23!::u=someone,r=2%23tok2,m=publish", passphrase=PASSPHRASE, pbkeylen="16"),
        }
        wrong = srt_url(server.port, "4%23tok4", passphrase="wrongpassword99", pbkeylen="16")
        # srt-live-transmit keeps its connection after stdin ends: stop it (SIGINT) once all arrived.
        async with (
            Publisher([*slt, urls[1]], stdin=True) as one,
            Publisher([*slt, urls[2]], stdin=True) as two,
            Publisher([*slt, wrong], stdin=True) as bad,
        ):
            await asyncio.gather(one.feed(data, 2.5), two.feed(data, 2.5), bad.feed(data, 0.5))
            sinks = [await engine.wait_bytes(sid, len(data)) for sid in urls]
            results = list(await asyncio.gather(one.stop(), two.stop(), bad.stop(limit_seconds=1.0)))
        async with asyncio.timeout(10):
            for sink in sinks:
                await sink.closed.wait()
    assert sorted(engine.sinks) == [1, 2] and len(engine.sinks[2]) == 1
    for sink in sinks:
        assert sink.path.read_bytes() == data
        assert sink.close_reasons == [EndReason.UNPUBLISH]
    assert framemd5(sinks[0].path) == framemd5(src_ts)
    assert "incorrect passphrase" in results[-1].output.lower(), results[-1].output


async def test_lost_link_is_a_drop_and_close_leaves_no_thread(src_ts: Path, tmp_path: Path) -> None:
    engine = engine_for(tmp_path)
    server = SrtServer(engine, engine, settings(idle_timeout_seconds=1.0))
    assert await server.start()
    try:
        assert server.port is not None
        proc = await asyncio.create_subprocess_exec(
            *ffmpeg_publish_argv(src_ts, srt_url(server.port, "1%23tok1")),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            sink = await engine.wait_sink(1)
            await asyncio.sleep(0.5)
            proc.send_signal(19)  # SIGSTOP: the encoder's SRT threads freeze, no more keepalives
            async with asyncio.timeout(10):
                await sink.closed.wait()
            assert sink.close_reasons == [EndReason.DROP]
        finally:
            proc.kill()
            await proc.wait()
    finally:
        await server.close()
        await server.close()  # idempotent
    assert not [t for t in threading.enumerate() if t.name.startswith("srt-listener")]


async def test_kick_and_stop_wake_the_idle_worker_at_once(src_ts: Path, tmp_path: Path) -> None:
    """The worker sleeps until something happens (no periodic wake-up): a kick from the loop, then the
    server's close, must still act at once, well inside the old 50 ms poll plus the loop's hand-off."""
    engine = engine_for(tmp_path)
    server = SrtServer(engine, engine, settings())
    assert await server.start()
    try:
        assert server.port is not None
        url = srt_url(server.port, "1%23tok1")
        loop = asyncio.get_running_loop()
        async with Publisher(ffmpeg_publish_argv(src_ts, url)):
            sink = await engine.wait_sink(1)
            asked = loop.time()
            engine.live[1].disconnect(EndReason.KICKED)
            async with asyncio.timeout(5):
                await sink.closed.wait()
            kicked_in = loop.time() - asked
        assert sink.close_reasons == [EndReason.KICKED]
        async with Publisher(ffmpeg_publish_argv(src_ts, url)):
            second = await engine.wait_sink(1, index=1)
            asked = loop.time()
            await server.close()
            closed_in = loop.time() - asked
            assert second.closed.is_set()
    finally:
        await server.close()
    assert kicked_in < 0.5, f"the kick took {kicked_in:.3f}s"
    assert closed_in < 0.5, f"closing the server took {closed_in:.3f}s"
    assert not [t for t in threading.enumerate() if t.name.startswith("srt-listener")]


def _worker_wakeups(seconds: float) -> float:
    """Times a second the listener's worker thread went to sleep and woke again (the kernel's count)."""
    (worker,) = [t for t in threading.enumerate() if t.name.startswith("srt-listener")]

    def switches() -> int:
        with open(f"/proc/self/task/{worker.native_id}/status") as f:
            line = next(line for line in f if line.startswith("voluntary_ctxt_switches"))
        return int(line.split()[1])

    before = switches()
    time.sleep(seconds)
    return (switches() - before) / seconds


async def test_the_worker_sleeps_while_nobody_is_connected(src_ts: Path, tmp_path: Path) -> None:
    """Idle, the worker does not wake at all (libsrt's own epoll wait re-checks 100 times a second: an
    idle relay spent ~0.24 CPU s/min there); nor once a publisher left, nor once a handshake the listen
    callback admitted failed afterwards (a wrong passphrase) and was forgotten."""
    engine = engine_for(tmp_path)
    async with SrtServer(engine, engine, settings(handshake_timeout_seconds=0.5)) as server:
        assert server.port is not None
        assert await asyncio.to_thread(_worker_wakeups, 1.0) < 5
        assert await asyncio.to_thread(_libsrt_receiver_cpu, 1.0) < 0.1  # its 10 ms poll, not a spin
        async with Publisher(ffmpeg_publish_argv(src_ts, srt_url(server.port, "1%23tok1"))):
            sink = await engine.wait_sink(1)
            assert await asyncio.to_thread(_worker_wakeups, 0.5) > 20  # serving a publisher
            engine.live[1].disconnect(EndReason.KICKED)
            async with asyncio.timeout(5):
                await sink.closed.wait()
        assert await asyncio.to_thread(_worker_wakeups, 1.0) < 5
        wrong = srt_url(server.port, "2%23tok2", passphrase="wrongpassword99", pbkeylen="16")
        refused = await run_process(ffmpeg_publish_argv(src_ts, wrong), limit_seconds=20)
        assert refused.returncode != 0
        await asyncio.sleep(2.6)  # the admitted handshake is forgotten 2 s past the handshake timeout
        assert await asyncio.to_thread(_worker_wakeups, 1.0) < 5
        # and it still wakes for the next publisher
        async with Publisher(ffmpeg_publish_argv(src_ts, srt_url(server.port, "1%23tok1"))):
            await engine.wait_sink(1, index=1)


def _libsrt_receiver_tasks() -> list[str]:
    """libsrt's receiver threads in this process (`SRT:RcvQ:w1`): one per UDP port it serves."""
    return threads_named("self", "SRT:RcvQ")


def _libsrt_receiver_cpu(seconds: float) -> float:
    """CPU seconds per second of libsrt's receiver threads in this process over `seconds`."""

    def ticks() -> int:
        total = 0
        for task in _libsrt_receiver_tasks():
            with contextlib.suppress(OSError), open(f"/proc/self/task/{task}/stat") as f:
                total += sum(map(int, f.read().rsplit(")", 1)[1].split()[11:13]))
        return total

    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds


async def _until(check: Callable[[], bool], within: float, what: str) -> None:
    async def probe() -> bool:
        return check()

    await wait_for(probe, within, what, every=0.05)


async def test_an_idle_listener_lets_libsrt_go_and_the_next_publisher_brings_it_back(
    src_ts: Path, tmp_path: Path
) -> None:
    """libsrt's receiver thread polls its socket ~100 times a second even with nobody there: idle for
    `park_after_seconds`, the listener closes libsrt's side and keeps the port; a publisher's first
    handshake opens it again on the same port, and is served as if nothing had happened."""
    engine = engine_for(tmp_path)
    async with SrtServer(engine, engine, settings(park_after_seconds=0.5)) as server:
        assert server.port is not None and not server.parked
        serving = len(_libsrt_receiver_tasks())
        await _until(lambda: server.parked, 3, "parked")
        await _until(lambda: len(_libsrt_receiver_tasks()) < serving, 5, "libsrt's receiver gone")  # its GC lets it go
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other, pytest.raises(OSError):
            other.bind(("127.0.0.1", server.port))  # the port is still ours
        for index in range(2):
            url = srt_url(server.port, "1%23tok1")
            done = await run_process(ffmpeg_publish_argv(src_ts, url), limit_seconds=30)
            assert done.returncode == 0, done.output
            sink = await engine.wait_sink(1, index=index)
            async with asyncio.timeout(10):
                await sink.closed.wait()
            assert sink.close_reasons == [EndReason.UNPUBLISH]
            assert len(framemd5(sink.path)) >= 70  # of 75, less ffmpeg's unsent tail
            await _until(lambda: server.parked, 3, "parked again")
