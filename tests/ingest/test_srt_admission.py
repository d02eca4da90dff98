"""Handshake admission seen from a real libsrt caller (through our ctypes binding): reject codes,
passphrase rules, takeover of a silent publisher, capacity, and running without libsrt."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from relay.doors import DoorRefusal
from relay.ingest.gate import EndReason, RefusalReason, Transport
from relay.ingest.srt_server import SrtServer, SrtSettings
from relay.srt.libsrt import LibSrt, SockOpt, SockStatus, SrtError, TransType
from tests.ingest.srt_gate import FakeEngine, StreamDef
from tests.support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

PASSPHRASE = "correcthorse2024"
SRT_REJ_BADSECRET = 10
SRT_REJ_UNSECURE = 11


@pytest.fixture
def lib() -> Iterator[LibSrt]:
    lib = LibSrt.load()
    lib.startup()
    try:
        yield lib
    finally:
        lib.cleanup()


def streams() -> dict[int, StreamDef]:
    return {
        1: StreamDef("tok1"),
        2: StreamDef("tok2", PASSPHRASE),
        3: StreamDef("tok3", active=False),
        5: StreamDef("tok5", latency_ms=400),
    }


@contextlib.asynccontextmanager
async def serving(
    engine: FakeEngine, on_refused: Callable[[Transport, RefusalReason], None] | None = None, **overrides: object
) -> AsyncIterator[SrtServer]:
    values: dict[str, object] = {"host": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM)}
    values.update(overrides)
    server = SrtServer(engine, engine, SrtSettings(**values), on_refused=on_refused)  # type: ignore[arg-type]
    assert await server.start()
    try:
        yield server
    finally:
        await server.close()


class Caller:
    """A minimal SRT caller on our binding (blocking calls run in a worker thread)."""

    def __init__(self, lib: LibSrt, port: int) -> None:
        self.lib = lib
        self.port = port
        self.sock: int | None = None
        self.reject: int | None = None

    def connect(self, streamid: str, passphrase: str | None = None, source: str | None = None) -> bool:
        lib = self.lib
        sock = lib.create_socket()
        lib.set_int(sock, SockOpt.TRANSTYPE, TransType.LIVE)
        lib.set_int(sock, SockOpt.CONNTIMEO, 3000)
        lib.set_str(sock, SockOpt.STREAMID, streamid)
        if passphrase:
            lib.set_str(sock, SockOpt.PASSPHRASE, passphrase)
        if source is not None:
            lib.bind(sock, source, 0)  # any 127.0.0.0/8 address: Linux routes all of it to lo
        try:
            lib.connect(sock, "127.0.0.1", self.port)
        except SrtError:
            self.reject = lib.reject_reason(sock)
            lib.close(sock)
            return False
        self.sock = sock
        return True

    def send_ts(self, count: int) -> None:
        assert self.sock is not None
        null_packet = b"\x47\x1f\xff\x10" + b"\xff" * 184
        for _ in range(count):
            self.lib.send(self.sock, null_packet * 7)

    def wait_disconnected(self, limit_seconds: float) -> bool:
        """Poll libsrt's socket state (a plain thread: libsrt has no async notification here)."""
        assert self.sock is not None
        deadline = time.monotonic() + limit_seconds
        while self.lib.state(self.sock) == SockStatus.CONNECTED:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def close(self) -> None:
        if self.sock is not None:
            self.lib.close(self.sock)
            self.sock = None


async def attempt(
    lib: LibSrt, port: int, streamid: str, passphrase: str | None = None, source: str | None = None
) -> Caller:
    caller = Caller(lib, port)
    await asyncio.to_thread(caller.connect, streamid, passphrase, source)
    return caller


@pytest.mark.parametrize(
    ("streamid", "passphrase", "code"),
    [
        ("99#tok1", None, 1404),
        ("1#nope", None, 1403),
        ("3#tok3", None, 1403),
        ("no-separator", None, 1400),
        ("#!::r=1#tok1,m=request", None, 1405),
        ("2#tok2", None, SRT_REJ_UNSECURE),
        ("2#tok2", "wrongpassword99", SRT_REJ_BADSECRET),
        ("1#tok1", PASSPHRASE, SRT_REJ_UNSECURE),
    ],
)
async def test_refusals_carry_a_reason(
    lib: LibSrt, tmp_path: Path, streamid: str, passphrase: str | None, code: int
) -> None:
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine) as server:
        assert server.port is not None
        caller = await attempt(lib, server.port, streamid, passphrase)
        assert caller.sock is None and caller.reject == code
        assert not engine.sinks
        # A streamid not of our form is refused at the door; the others by the admission or libsrt.
        door = server.door_counts().refused
        assert door[DoorRefusal.BAD_HANDSHAKE] == (1 if code in (1400, 1405) else 0) == sum(door.values())


async def test_a_passphrase_libsrt_refused_after_admission_is_counted_and_logged(
    lib: LibSrt, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The streamid and token are good, so the listen callback admits the handshake; libsrt's key exchange
    # refuses it afterwards. The relay learns of it only when the admitted handshake goes stale (the
    # handshake timeout plus 2 s), and then counts it (`relay_ingest_refusals_total{reason="passphrase"}`)
    # and logs it, naming the stream and never the token nor the passphrase.
    caplog.set_level(logging.INFO, logger="relay")
    engine = FakeEngine(streams(), tmp_path)
    refused: list[tuple[Transport, RefusalReason]] = []
    three = asyncio.Event()

    def on_refused(transport: Transport, reason: RefusalReason) -> None:
        refused.append((transport, reason))
        if len(refused) == 3:
            three.set()

    async with serving(engine, on_refused=on_refused, handshake_timeout_seconds=0.5) as server:
        assert server.port is not None
        wrong = await attempt(lib, server.port, "2#tok2", "wrongpassword99")
        missing = await attempt(lib, server.port, "2#tok2")
        publisher = await attempt(lib, server.port, "1#tok1")  # with a publisher connected as well
        try:
            assert publisher.sock is not None
            await engine.wait_sink(1)
            unexpected = await attempt(lib, server.port, "5#tok5", PASSPHRASE)
            assert [c.reject for c in (wrong, missing, unexpected)] == [
                SRT_REJ_BADSECRET,
                SRT_REJ_UNSECURE,
                SRT_REJ_UNSECURE,
            ]
            await asyncio.wait_for(three.wait(), 10)
        finally:
            publisher.close()
        await asyncio.sleep(0.5)
        assert sum(server.door_counts().refused.values()) == 0  # not refused at the door: after admission
    assert refused == [(Transport.SRT, RefusalReason.PASSPHRASE)] * 3
    lines = [r.getMessage() for r in caplog.records if "refused by libsrt after admission" in r.getMessage()]
    assert sorted(line.split(" for stream ")[1].split()[0] for line in lines) == ["2", "2", "5"], lines
    for text in (r.getMessage() for r in caplog.records):
        assert "tok2" not in text and "tok5" not in text and "wrongpassword99" not in text and PASSPHRASE not in text


async def test_the_log_names_the_stream_id_never_the_token(
    lib: LibSrt, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="relay")
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine) as server:
        assert server.port is not None
        for streamid in ("tok1-written-first#1", "1#wrong-token-xyz", "1%23wrong-token-xyz", "tok1-alone"):
            assert (await attempt(lib, server.port, streamid)).sock is None
        accepted = await attempt(lib, server.port, "#!::r=1%23tok1,m=publish")
        assert accepted.sock is not None
        await engine.wait_sink(1)
        accepted.close()
    text = caplog.text
    assert "stream 1 " in text and "stream (no id)" in text
    assert not [secret for secret in ("tok1", "wrong-token-xyz") if secret in text], text


async def test_accepts_passphrase_latency_and_access_control_forms(lib: LibSrt, tmp_path: Path) -> None:
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine) as server:
        assert server.port is not None
        callers = [
            await attempt(lib, server.port, "2%23tok2", PASSPHRASE),
            await attempt(lib, server.port, "#!::r=5#tok5,m=publish"),
        ]
        try:
            assert all(c.sock is not None for c in callers), [c.reject for c in callers]
            await engine.wait_sink(2)
            await engine.wait_sink(5)
            assert engine.live[2].encrypted and not engine.live[5].encrypted
            assert engine.live[5].latency_ms >= 400 and engine.live[2].latency_ms == 120
            assert [p.stream_id for p in server.publishers()] in (["2", "5"], ["5", "2"])
        finally:
            for c in callers:
                c.close()


async def test_second_publisher_conflicts_until_the_first_goes_silent(lib: LibSrt, tmp_path: Path) -> None:
    engine = FakeEngine(streams(), tmp_path, takeover_idle_seconds=0.6)
    async with serving(engine) as server:
        assert server.port is not None
        first = await attempt(lib, server.port, "1#tok1")
        try:
            assert first.sock is not None
            await asyncio.to_thread(first.send_ts, 20)
            old = await engine.wait_bytes(1, 20 * 1316)
            second = await attempt(lib, server.port, "1#tok1")
            assert second.reject == 1409
            await asyncio.sleep(0.8)  # the first publisher stays connected but sends nothing
            third = await attempt(lib, server.port, "1%23tok1")
            try:
                assert third.sock is not None, third.reject
                async with asyncio.timeout(5):
                    await old.closed.wait()
                assert old.close_reasons == [EndReason.KICKED]
                new = await engine.wait_sink(1, index=1)
                await asyncio.to_thread(third.send_ts, 5)
                await engine.wait_bytes(1, 5 * 1316, index=1)
                assert new.bytes_written >= 5 * 1316 and not new.close_reasons
                # the kicked caller's connection is gone on its side too
                assert await asyncio.to_thread(first.wait_disconnected, 5.0)
            finally:
                third.close()
        finally:
            first.close()


async def test_max_connections(lib: LibSrt, tmp_path: Path) -> None:
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine, max_connections=1) as server:
        assert server.port is not None
        first = await attempt(lib, server.port, "1#tok1")
        try:
            assert first.sock is not None
            second = await attempt(lib, server.port, "5#tok5")
            assert second.reject == 1402
            counts = server.door_counts()
            assert counts.transport == "srt" and counts.open_connections == 1
            assert counts.refused[DoorRefusal.MAX_CONNECTIONS] == 1 and sum(counts.refused.values()) == 1
        finally:
            first.close()


async def test_handshakes_over_an_address_rate_are_refused_before_the_store_is_read(
    lib: LibSrt, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.srt.listener")
    engine = FakeEngine(streams(), tmp_path)
    refused: list[RefusalReason] = []
    async with serving(
        engine,
        handshakes_per_second_per_address=0.1,
        handshake_burst_per_address=3,
        on_refused=lambda _transport, reason: refused.append(reason),
    ) as server:
        assert server.port is not None
        codes = [(await attempt(lib, server.port, "1#wrong", source="127.0.0.2")).reject for _ in range(25)]
        assert codes == [1403] * 3 + [1402] * 22
        assert engine.checks == 3  # the 22 over the rate never reached the admission (the store)
        # Another address has its own bucket: an encoder there is not held back by the flood.
        encoder = await attempt(lib, server.port, "1#tok1", source="127.0.0.3")
        try:
            assert encoder.sock is not None, encoder.reject
            await engine.wait_sink(1)
        finally:
            encoder.close()
        counts = server.door_counts().refused
        assert counts[DoorRefusal.RATE_LIMITED] == 22 and sum(counts.values()) == 22  # 1403: the admission's
    assert refused == [RefusalReason.RATE_LIMITED] * 22
    refusal_lines = [r for r in caplog.records if "SRT handshake from" in r.getMessage()]
    assert len(refusal_lines) == 20  # the rest held back by the throttled log (summed up when its window ends)
    assert "#wrong" not in caplog.text and "wrong" not in caplog.text


async def test_close_ends_sessions_once_and_joins_the_worker(lib: LibSrt, tmp_path: Path) -> None:
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine) as server:
        assert server.port is not None
        caller = await attempt(lib, server.port, "1#tok1")
        assert caller.sock is not None
        await asyncio.to_thread(caller.send_ts, 3)
        sink = await engine.wait_bytes(1, 3 * 1316)
    caller.close()
    assert sink.close_reasons == [EndReason.KICKED]
    assert not server.enabled
    assert not [t for t in threading.enumerate() if t.name.startswith("srt-listener")]


async def test_without_libsrt_the_server_is_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    engine = FakeEngine(streams(), tmp_path)
    server = SrtServer(
        engine, engine, SrtSettings(port=free_port(socket.SOCK_DGRAM)), library_names=["libsrt-absent.so.0"]
    )
    with caplog.at_level(logging.INFO, logger="relay.ingest.srt_server"):
        assert await server.start() is False
    assert not server.enabled and server.port is None
    assert [r.getMessage() for r in caplog.records if "SRT ingest off" in r.getMessage()]
    await server.close()


async def test_port_in_use_raises(tmp_path: Path) -> None:
    engine = FakeEngine(streams(), tmp_path)
    async with serving(engine) as first:
        second = SrtServer(engine, engine, SrtSettings(host="127.0.0.1", port=first.port or 0))
        with pytest.raises(SrtError):
            await second.start()
        await second.close()
